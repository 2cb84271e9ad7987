"""Environment variables read by llmtel's instrumentation.

Registered under the ``opentelemetry_environment_variables`` entry point so tooling can list
them. They are read once, by :func:`llmtel.instrumentation.settings.read_settings`.
"""

OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""
.. envvar:: OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT

Capture prompts, completions, system instructions and tool arguments. ``true`` or
``span_only`` puts them on the span as ``gen_ai.input.messages`` / ``gen_ai.output.messages``
/ ``gen_ai.system_instructions``; ``event_only`` emits them in a
``gen_ai.client.inference.operation.details`` event instead; ``span_and_event`` does both.
Anything else (the default) captures no content.
"""

OTEL_INSTRUMENTATION_LLMTEL_CONTENT_MAX_LENGTH = "OTEL_INSTRUMENTATION_LLMTEL_CONTENT_MAX_LENGTH"
"""
.. envvar:: OTEL_INSTRUMENTATION_LLMTEL_CONTENT_MAX_LENGTH

Longest captured text part, in characters; longer parts are cut and end with a marker.
Default 8192. ``0`` means no limit.
"""

OTEL_INSTRUMENTATION_LLMTEL_PRICES_FILE = "OTEL_INSTRUMENTATION_LLMTEL_PRICES_FILE"
"""
.. envvar:: OTEL_INSTRUMENTATION_LLMTEL_PRICES_FILE

Path of a JSON or YAML price file whose entries override and extend the bundled
``genai-prices`` table. See the README for its format.
"""

OTEL_INSTRUMENTATION_LLMTEL_STREAM_USAGE = "OTEL_INSTRUMENTATION_LLMTEL_STREAM_USAGE"
"""
.. envvar:: OTEL_INSTRUMENTATION_LLMTEL_STREAM_USAGE

``true`` (default): on streamed chat completions to providers known to honour it, ask for
``stream_options.include_usage`` when the caller did not, and hide the extra usage-only
chunk from the caller, so every stream gets exact token counts. ``false`` leaves requests
untouched.
"""

OTEL_INSTRUMENTATION_LLMTEL_HASH_USER_ID = "OTEL_INSTRUMENTATION_LLMTEL_HASH_USER_ID"
"""
.. envvar:: OTEL_INSTRUMENTATION_LLMTEL_HASH_USER_ID

``true``: ``context(user_id=...)`` stores ``user.id`` as the salted SHA-256 of the id, for
deployments that must not store raw user ids. Default ``false``.
"""

OTEL_INSTRUMENTATION_LLMTEL_USER_ID_SALT = "OTEL_INSTRUMENTATION_LLMTEL_USER_ID_SALT"
"""
.. envvar:: OTEL_INSTRUMENTATION_LLMTEL_USER_ID_SALT

The salt for hashed user ids. Set it (and keep it secret): without a salt, short ids can be
recovered by hashing guesses.
"""

OTEL_INSTRUMENTATION_LLMTEL_CONSOLE_SUMMARY = "OTEL_INSTRUMENTATION_LLMTEL_CONSOLE_SUMMARY"
"""
.. envvar:: OTEL_INSTRUMENTATION_LLMTEL_CONSOLE_SUMMARY

``true``: when a root span ends, print one compact block to stderr with the request's tokens,
cost, duration, agents and tools used, and errors. Default ``false``.
"""
