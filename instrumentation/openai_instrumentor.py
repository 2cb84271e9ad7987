"""Instrument the ``openai`` client: every LLM, embedding, audio, image and moderation call is a span.

Usage::

    # no code change: pip install 'llmtel[sdk]' and run
    opentelemetry-instrument python app.py

    # or by hand
    from llmtel.instrumentation import OpenAIInstrumentor
    OpenAIInstrumentor().instrument(tracer_provider=..., meter_provider=..., logger_provider=...)

The entry point is named ``llmtel_openai`` (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=llmtel_openai``
turns it off). Settings come from the environment; see ``environment_variables``.

Patch targets are listed once, in ``_TARGETS``. Each wrapper is thin: it starts an
:class:`~llmtel.instrumentation.invocation.Invocation`, calls the wrapped method and hands the
result (or the exception, re-raised untouched) to the invocation. Everything of ours runs
inside ``_safe_*`` helpers that log at debug level and never raise into the app.
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections.abc import Collection
from importlib import import_module
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS_KEY  # type: ignore[attr-defined]
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.metrics import get_meter
from opentelemetry.trace import get_tracer, get_tracer_provider
from wrapt import wrap_function_wrapper

from llmtel import __version__
from llmtel.instrumentation import api
from llmtel.instrumentation import openai_attributes as oa
from llmtel.instrumentation import semconv as sc
from llmtel.instrumentation.cost import PriceTable
from llmtel.instrumentation.invocation import INVOCATION_KEY, Invocation, Operation, Telemetry, current_invocation
from llmtel.instrumentation.providers import endpoint_of_client
from llmtel.instrumentation.settings import read_settings
from llmtel.instrumentation.stream_state import ChatStreamState, ResponsesStreamState, UsageEventStreamState
from llmtel.instrumentation.streams import AsyncStreamProxy, SyncStreamProxy

_logger = logging.getLogger("llmtel.instrumentation")

# suppress_instrumentation() sets both keys; the plain one is the older spelling some
# libraries still set by hand.
_SUPPRESS_KEY_PLAIN = "suppress_instrumentation"

_instruments = ("openai >= 1.66.0",)


def _chat_stream_state(invocation: Invocation) -> ChatStreamState:
    return ChatStreamState(invocation.hide_usage,
                           invocation.telemetry.settings.capture_content or invocation.schema is not None,
                           invocation.tools_requested)


def _responses_stream_state(invocation: Invocation) -> ResponsesStreamState:
    return ResponsesStreamState()


def _usage_event_stream_state(invocation: Invocation) -> UsageEventStreamState:
    return UsageEventStreamState()


CHAT = Operation(sc.OP_CHAT, oa.chat_request, oa.chat_response, _chat_stream_state, "chat")
RESPONSES = Operation(sc.OP_CHAT, oa.responses_request, oa.responses_response, _responses_stream_state, "responses")
TEXT_COMPLETION = Operation(sc.OP_TEXT_COMPLETION, oa.completion_request, oa.completion_response,
                            _chat_stream_state)
EMBEDDINGS = Operation(sc.OP_EMBEDDINGS, oa.embeddings_request, oa.embeddings_response)
TRANSCRIPTION = Operation(sc.OP_TRANSCRIPTION, oa.audio_request, oa.audio_response, _usage_event_stream_state)
TRANSLATION = Operation(sc.OP_TRANSLATION, oa.audio_request, oa.audio_response)
SPEECH = Operation(sc.OP_SPEECH, oa.speech_request, oa.speech_response)
IMAGE_GENERATION = Operation(sc.OP_IMAGE_GENERATION, oa.image_request, oa.image_response, _usage_event_stream_state)
IMAGE_EDIT = Operation(sc.OP_IMAGE_EDIT, oa.image_request, oa.image_response, _usage_event_stream_state)
MODERATION = Operation(sc.OP_MODERATION, oa.moderation_request, oa.moderation_response)

# (module, sync class, async class, method, operation). The `with_raw_response` and
# `with_streaming_response` forms call these same methods; `chat.completions.stream()` and
# `responses.stream()` call `create`.
_TARGETS: tuple[tuple[str, str, str, str, Operation], ...] = (
    ("openai.resources.chat.completions", "Completions", "AsyncCompletions", "create", CHAT),
    ("openai.resources.chat.completions", "Completions", "AsyncCompletions", "parse", CHAT),
    ("openai.resources.responses", "Responses", "AsyncResponses", "create", RESPONSES),
    ("openai.resources.responses", "Responses", "AsyncResponses", "parse", RESPONSES),
    ("openai.resources.completions", "Completions", "AsyncCompletions", "create", TEXT_COMPLETION),
    ("openai.resources.embeddings", "Embeddings", "AsyncEmbeddings", "create", EMBEDDINGS),
    ("openai.resources.audio.transcriptions", "Transcriptions", "AsyncTranscriptions", "create", TRANSCRIPTION),
    ("openai.resources.audio.translations", "Translations", "AsyncTranslations", "create", TRANSLATION),
    ("openai.resources.audio.speech", "Speech", "AsyncSpeech", "create", SPEECH),
    ("openai.resources.images", "Images", "AsyncImages", "generate", IMAGE_GENERATION),
    ("openai.resources.images", "Images", "AsyncImages", "edit", IMAGE_EDIT),
    ("openai.resources.moderations", "Moderations", "AsyncModerations", "create", MODERATION),
)

# A hook below the public methods: the client is about to retry a failed attempt.
_RETRY_HOOKS = (("openai._base_client", "SyncAPIClient._sleep_for_retry"),
                ("openai._base_client", "AsyncAPIClient._sleep_for_retry"))


class OpenAIInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instruments the ``openai`` client library (sync and async, streaming included)."""

    _telemetry: Telemetry | None = None
    _patched: list[tuple[Any, str]]

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        settings = read_settings()
        tracer = get_tracer(__name__, __version__, kwargs.get("tracer_provider"),
                            schema_url="https://opentelemetry.io/schemas/1.37.0")
        meter = get_meter(__name__, __version__, kwargs.get("meter_provider"))
        event_logger = None
        if settings.content_mode.as_event:
            from opentelemetry._logs import get_logger

            event_logger = get_logger(__name__, __version__, kwargs.get("logger_provider"))
        tracer_provider = kwargs.get("tracer_provider") or get_tracer_provider()
        try:
            from llmtel.instrumentation.processors import add_llmtel_processors

            add_llmtel_processors(tracer_provider, settings)
        except ImportError:  # the API without the SDK: no processors to add
            pass
        api_tracer = get_tracer("llmtel.instrumentation", __version__, kwargs.get("tracer_provider"))
        telemetry = Telemetry(tracer, meter, event_logger, settings, PriceTable(settings.prices_file), api_tracer)
        type(self)._telemetry = telemetry
        api.configure(api_tracer, settings, tracer_provider)
        self._patched = []
        for module_name, sync_class, async_class, method, operation in _TARGETS:
            self._wrap(module_name, f"{sync_class}.{method}", _sync_wrapper(operation))
            self._wrap(module_name, f"{async_class}.{method}", _async_wrapper(operation))
        for module_name, name in _RETRY_HOOKS:
            self._wrap(module_name, name, _retry_hook)

    def _wrap(self, module_name: str, name: str, wrapper: Any) -> None:
        """Patch one target; a target missing from this openai version is skipped, not fatal."""
        try:
            module = import_module(module_name)
            owner_name, method = name.split(".")
            owner = getattr(module, owner_name)
            getattr(owner, method)
        except (ImportError, AttributeError):
            _logger.debug("llmtel: openai has no %s.%s; not instrumented", module_name, name)
            return
        wrap_function_wrapper(module, name, wrapper)
        self._patched.append((owner, method))

    def _uninstrument(self, **kwargs: Any) -> None:
        for owner, method in getattr(self, "_patched", ()):
            unwrap(owner, method)
        self._patched = []
        type(self)._telemetry = None
        api.configure(None, None)


def _telemetry_if_active() -> Telemetry | None:
    """The telemetry to use, or None to pass the call straight through.

    None when uninstrumented (the SDK caches bound `with_raw_response` methods, which keep
    calling our wrapper after `uninstrument()`), when instrumentation is suppressed, and
    inside another llmtel invocation (a helper that calls a patched method).
    """
    telemetry = OpenAIInstrumentor._telemetry
    if telemetry is None:
        return None
    current = otel_context.get_current()
    if current.get(INVOCATION_KEY) is not None or current.get(_SUPPRESS_KEY) or current.get(_SUPPRESS_KEY_PLAIN):
        return None
    return telemetry


def _safe_start(telemetry: Telemetry, operation: Operation, instance: Any,
                kwargs: dict[str, Any]) -> tuple[Invocation | None, dict[str, Any]]:
    try:
        endpoint = endpoint_of_client(instance._client)
        invocation = Invocation(telemetry, operation, endpoint, kwargs)
        if (operation is CHAT and kwargs.get("stream") is True and endpoint.stream_usage
                and telemetry.settings.stream_usage):
            kwargs = _with_stream_usage(kwargs, invocation)
        return invocation, kwargs
    except Exception:  # noqa: BLE001
        _logger.debug("llmtel: could not start the openai span", exc_info=True)
        return None, kwargs


def _with_stream_usage(kwargs: dict[str, Any], invocation: Invocation) -> dict[str, Any]:
    """Ask for the usage chunk the caller did not ask for; the stream proxy hides it again."""
    options = oa.given(kwargs.get("stream_options"))
    if isinstance(options, dict) and options.get("include_usage"):
        return kwargs
    invocation.hide_usage = True
    return {**kwargs, "stream_options": {**(options or {}), "include_usage": True}}


def _safe_fail(invocation: Invocation, error: BaseException) -> None:
    try:
        invocation.fail(error)
    except Exception:  # noqa: BLE001
        _logger.debug("llmtel: could not record the openai failure", exc_info=True)


def _safe_result(invocation: Invocation, result: Any) -> Any:
    """Hand the result to the invocation; returns what the caller gets (the result, or a stream proxy)."""
    try:
        return _route_result(invocation, result)
    except Exception:  # noqa: BLE001
        _logger.debug("llmtel: could not record the openai response", exc_info=True)
        if not invocation.finished:
            try:
                invocation.complete(None)
            except Exception:  # noqa: BLE001
                _logger.debug("llmtel: could not end the openai span", exc_info=True)
        return result


class _Types:
    """The openai classes results are told apart by, imported once (openai imports lazily)."""

    stream: type
    async_stream: type
    legacy_response: type
    async_response: type
    raw_responses: tuple[type, ...]

    @classmethod
    def load(cls) -> type[_Types]:
        if not hasattr(cls, "stream"):
            from openai import AsyncStream, Stream
            from openai._legacy_response import LegacyAPIResponse
            from openai._response import AsyncAPIResponse, BaseAPIResponse

            cls.stream, cls.async_stream = Stream, AsyncStream
            cls.legacy_response, cls.async_response = LegacyAPIResponse, AsyncAPIResponse
            cls.raw_responses = (LegacyAPIResponse, BaseAPIResponse)
        return cls


def _route_result(invocation: Invocation, result: Any) -> Any:
    types = _Types.load()
    if isinstance(result, types.stream):
        return _proxy_stream(invocation, result, SyncStreamProxy)
    if isinstance(result, types.async_stream):
        return _proxy_stream(invocation, result, AsyncStreamProxy)
    if isinstance(result, types.raw_responses):
        _watch_raw_response(invocation, result, types)
        if isinstance(result, types.legacy_response) and not result._stream:
            result.parse()  # the body is already read; the SDK caches this for the caller
        return result
    invocation.complete(result)
    return result


def _watch_raw_response(invocation: Invocation, response: Any, types: type[_Types]) -> None:
    """`with_raw_response` / `with_streaming_response`: the body is parsed when (if) the caller asks.

    The response's own ``_parse`` and ``close`` are shadowed on this instance only, so plain
    calls pay nothing for this and nothing is left patched after ``uninstrument()``.
    """
    parse = response._parse

    def parse_and_record(*args: Any, **kwargs: Any) -> Any:
        if invocation.finished:
            return parse(*args, **kwargs)
        try:
            parsed = parse(*args, **kwargs)
        except BaseException as error:
            _safe_fail(invocation, error)
            raise
        if kwargs.get("to") is not None:  # parsed into a type of the caller's choosing
            return parsed
        return _safe_result(invocation, parsed)

    response._parse = parse_and_record
    close = getattr(response, "close", None)
    if close is not None and not isinstance(response, types.legacy_response):
        if isinstance(response, types.async_response):

            async def close_and_finish() -> None:
                try:
                    await close()
                finally:
                    _finish_abandoned(invocation)

            response.close = close_and_finish
        else:

            def close_and_finish_sync() -> None:
                try:
                    close()
                finally:
                    _finish_abandoned(invocation)

            response.close = close_and_finish_sync
    weakref.finalize(response, _finish_abandoned, invocation)


def _proxy_stream(invocation: Invocation, stream: Any, proxy_class: type) -> Any:
    new_state = invocation.operation.new_stream_state
    if new_state is None:
        from llmtel.instrumentation.stream_state import UsageEventStreamState

        invocation.stream_state = UsageEventStreamState()
    else:
        invocation.stream_state = new_state(invocation)
    return proxy_class(stream, invocation)


def _finish_abandoned(invocation: Invocation) -> None:
    if invocation.finished:
        return
    try:
        if invocation.stream_state is not None:
            invocation.complete_stream()
        else:
            invocation.complete(None)
    except Exception:  # noqa: BLE001
        _logger.debug("llmtel: could not end an abandoned openai span", exc_info=True)


def _sync_wrapper(operation: Operation) -> Any:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        telemetry = _telemetry_if_active()
        if telemetry is None:
            return wrapped(*args, **kwargs)
        invocation, kwargs = _safe_start(telemetry, operation, instance, kwargs)
        if invocation is None:
            return wrapped(*args, **kwargs)
        token = otel_context.attach(invocation.context)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as error:
            otel_context.detach(token)
            _safe_fail(invocation, error)
            raise
        otel_context.detach(token)
        return _safe_result(invocation, result)

    return wrapper


def _async_wrapper(operation: Operation) -> Any:
    async def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        telemetry = _telemetry_if_active()
        if telemetry is None:
            return await wrapped(*args, **kwargs)
        invocation, kwargs = _safe_start(telemetry, operation, instance, kwargs)
        if invocation is None:
            return await wrapped(*args, **kwargs)
        token = otel_context.attach(invocation.context)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as error:
            otel_context.detach(token)
            _safe_fail(invocation, error)
            raise
        otel_context.detach(token)
        return _safe_result(invocation, result)

    return wrapper


def _retry_hook(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # Called by the client inside its `except` block, just before it sleeps and retries:
    # the failed attempt's response (status code) or exception (sys.exc_info) is at hand.
    invocation = current_invocation()
    if invocation is not None:
        try:
            response = kwargs.get("response")
            status = getattr(response, "status_code", None) if response is not None else None
            invocation.record_retry(status, sys.exc_info()[1] if status is None else None)
        except Exception:  # noqa: BLE001
            _logger.debug("llmtel: could not record the openai retry", exc_info=True)
    return wrapped(*args, **kwargs)
