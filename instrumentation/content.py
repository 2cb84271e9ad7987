"""Message content, opt-in: openai request and response data turned into GenAI semconv JSON.

The instrumentation calls these functions only when the user turned content capture on
(``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``). Each one returns the JSON string
for one attribute, or ``None`` when there is nothing to record::

    system, messages = chat_input(kwargs.get("messages"), settings.content_max_length)
    output = chat_output(completion.choices, settings.content_max_length)
    tools = tool_definitions(kwargs.get("tools"))

The shapes follow the JSON schemas of open-telemetry/semantic-conventions-genai,
``model/gen-ai/gen-ai-{input-messages,output-messages,system-instructions,tool-definitions}.json``:
messages are ``{"role", "parts", ["name"], ["finish_reason"]}``, system instructions a bare
list of parts, tool definitions ``{"type", "name", ["description"], ["parameters"]}``.

Three rules hold for everything this module produces:

- A text longer than ``max_length`` characters (0: no limit) is cut to that length and ends
  with :data:`TRUNCATION_MARKER`. Tool-call arguments and tool results are JSON strings in the
  openai API; one that fits is recorded parsed, one that does not is cut like text.
- Base64 payloads are never copied. Data URLs, ``input_audio.data``, inline file data and
  generated images become :data:`BASE64_MARKER`, with the decoded size computed from the
  length of the base64 text, so nothing is decoded or copied.
- Only message data is read, and nothing is copied wholesale: an MCP tool's ``headers`` or a
  shell call's ``env`` never reach telemetry. Request options such as ``extra_headers`` are
  never passed in.

None of these functions consumes an iterator: ``messages``, ``input``, ``tools``, ``content``
and ``tool_calls`` are read only when they are lists or tuples. An iterator the caller passed
to openai would reach the SDK empty if we read it first.
"""

from __future__ import annotations

import json
import logging
import mimetypes
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, TypeVar

_logger = logging.getLogger(__name__)

TRUNCATION_MARKER = "…[truncated {removed} chars]"
"""Appended to a text cut to ``max_length``; ``removed`` is the number of characters cut off."""

BASE64_MARKER = "<{media} base64, {size} bytes>"
"""Recorded instead of a base64 payload: its MIME type (or modality) and decoded size."""

DATA_URL_MARKER = "<{media} data URL, {size} chars>"
"""Recorded instead of the payload of a ``data:`` URL that is not base64-encoded."""

_Part = dict[str, Any]
_Message = dict[str, Any]
_F = TypeVar("_F", bound=Callable[..., Any])

_SEQUENCES = (list, tuple)
_SYSTEM_ROLES = frozenset(("system", "developer"))
_TEXT_TYPES = frozenset(("text", "input_text", "output_text"))
_IMAGE_TYPES = frozenset(("input_image", "computer_screenshot"))
# Roles whose consecutive Responses API items are one turn: a replayed response is a run of
# reasoning, message and function_call items, and its tool results a run of *_output items.
_MERGED_ROLES = frozenset(("assistant", "tool"))
# openai finish reasons onto the semconv FinishReason enum (stop, length, content_filter,
# tool_call, error); the others are the same word in both.
_FINISH_REASONS = {"tool_calls": "tool_call", "function_call": "tool_call"}
# `incomplete_details.reason` of a Responses API response, as a finish reason.
_INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}
# input_audio `format` values; "audio/mp3" is not a registered media type.
_AUDIO_MIME_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg"}
# A data URL's header ends at the first comma; a longer header is not a data URL we know.
_MAX_DATA_URL_HEADER = 256


def _never_raise(fallback: Any) -> Callable[[_F], _F]:
    """Return ``fallback`` and log at debug instead of raising: odd input never breaks a call."""

    def decorate(function: _F) -> _F:
        @wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except Exception:
                _logger.debug("llmtel: could not capture openai content (%s)", function.__name__, exc_info=True)
                return fallback

        return guarded  # type: ignore[return-value]

    return decorate


# Public API


@_never_raise((None, None))
def chat_input(messages: Any, max_length: int) -> tuple[str | None, str | None]:
    """``(gen_ai.system_instructions, gen_ai.input.messages)`` JSON from chat.completions ``messages``.

    ``messages`` is what the user passed: dicts or pydantic messages with roles system,
    developer, user, assistant, tool or function. System and developer messages go to the
    system instructions, everything else to the input messages.
    """
    if not isinstance(messages, _SEQUENCES):
        return None, None
    system: list[_Part] = []
    converted: list[_Message] = []
    for message in messages:
        role = _get(message, "role")
        if role in _SYSTEM_ROLES:
            system.extend(_content_parts(_get(message, "content"), max_length))
            continue
        chat_message = _chat_message(message, role, max_length)
        if chat_message is not None:
            converted.append(chat_message)
    return _dumps_nonempty(system), _dumps_nonempty(converted)


@_never_raise(None)
def chat_output(choices: Any, max_length: int) -> str | None:
    """``gen_ai.output.messages`` JSON, one message per choice.

    ``choices`` is ``ChatCompletion.choices`` (pydantic) or the dicts a stream accumulates:
    ``{"index", "role", "content", "tool_calls": [{"id", "name", "arguments"}], "finish_reason"}``.
    A choice without a finish reason (a stream the caller stopped reading) records ``null``.
    """
    if not isinstance(choices, _SEQUENCES):
        return None
    messages: list[_Message] = []
    for choice in choices:
        # A ChatCompletion choice nests the message; a stream accumulator is flat.
        message = _get(choice, "message")
        if message is None:
            message = choice
        role = _get(message, "role")
        finish_reason = _get(choice, "finish_reason")
        messages.append(
            {
                "role": role if isinstance(role, str) else "assistant",
                "parts": _assistant_parts(message, max_length),
                "finish_reason": _FINISH_REASONS.get(finish_reason, finish_reason),
            }
        )
    return _dumps_nonempty(messages)


@_never_raise((None, None))
def responses_input(input: Any, instructions: Any, max_length: int) -> tuple[str | None, str | None]:
    """``(gen_ai.system_instructions, gen_ai.input.messages)`` JSON for ``responses.create``.

    ``instructions`` (a string) and any system or developer message in ``input`` become the
    system instructions. ``input`` is a string (one user message) or a list of input items:
    messages with input_text / input_image / input_file / input_audio parts, and the items of
    earlier responses (reasoning, function_call, function_call_output, ...). Consecutive
    assistant items are one assistant message, consecutive tool outputs one tool message.
    """
    system: list[_Part] = []
    if isinstance(instructions, str):
        system.append(_text_part(instructions, max_length))
    elif isinstance(instructions, _SEQUENCES):
        # A fetched Response carries `instructions` as input items, not as a string.
        for item in instructions:
            system.extend(_content_parts(_get(item, "content"), max_length))

    messages: list[_Message] = []
    if isinstance(input, str):
        messages.append({"role": "user", "parts": [_text_part(input, max_length)]})
    elif isinstance(input, _SEQUENCES):
        for item in input:
            role = _get(item, "role")
            if role in _SYSTEM_ROLES and _get(item, "type") in (None, "message"):
                system.extend(_content_parts(_get(item, "content"), max_length))
                continue
            role, parts = _input_item(item, role, max_length)
            if not parts:
                continue
            if messages and role in _MERGED_ROLES and messages[-1]["role"] == role:
                messages[-1]["parts"].extend(parts)
            else:
                messages.append({"role": role, "parts": parts})
    return _dumps_nonempty(system), _dumps_nonempty(messages)


@_never_raise(None)
def responses_output(output: Any, max_length: int) -> str | None:
    """``gen_ai.output.messages`` JSON from ``Response.output``: one assistant message.

    A response is one candidate, so its output items (reasoning, message text and refusals,
    function calls, server-side tool calls) become the parts of a single message. Pass the
    ``Response`` itself instead of its ``output`` to get the finish reason from its status.
    """
    status = incomplete_reason = None
    if not isinstance(output, _SEQUENCES):
        items = _get(output, "output")
        if not isinstance(items, _SEQUENCES):
            return None
        status = _get(output, "status")
        incomplete_reason = _get(_get(output, "incomplete_details"), "reason")
        output = items

    parts: list[_Part] = []
    calls_tool = False
    for item in output:
        item_type = _get(item, "type")
        if item_type == "message":
            parts.extend(_content_parts(_get(item, "content"), max_length))
            status = status or _get(item, "status")
        elif item_type in ("function_call", "custom_tool_call"):
            parts.append(_responses_tool_call(item, item_type, max_length))
            calls_tool = True
        else:
            parts.extend(_item_parts(item, item_type, max_length))
    if not parts:
        return None
    if calls_tool:
        finish_reason = "tool_call"
    elif status == "completed":
        finish_reason = "stop"
    elif status in ("failed", "cancelled"):
        finish_reason = "error"
    elif status == "incomplete":
        finish_reason = _INCOMPLETE_REASONS.get(incomplete_reason, incomplete_reason or status)
    else:
        finish_reason = None
    return _dumps([{"role": "assistant", "parts": parts, "finish_reason": finish_reason}])


@_never_raise(None)
def tool_definitions(tools: Any) -> str | None:
    """``gen_ai.tool.definitions`` JSON, with descriptions and parameter schemas (opt-in content).

    ``tools`` is the chat.completions form (``{"type": "function", "function": {...}}``,
    ``{"type": "custom", "custom": {...}}``) or the flat Responses API form, where built-in tools
    (web_search, file_search, mcp, ...) are named by their type or MCP server label. Only
    names, descriptions and parameter schemas are copied: a tool's headers never are.
    """
    if not isinstance(tools, _SEQUENCES):
        return None
    definitions: list[dict[str, Any]] = []
    for tool in tools:
        tool_type = _get(tool, "type")
        if not isinstance(tool_type, str):
            continue
        # Chat nests a tool under its type ("function" / "custom"); Responses tools are flat.
        spec = _get(tool, tool_type) if tool_type in ("function", "custom") else None
        if spec is None:
            spec = tool
        name = _get(spec, "name")
        if not isinstance(name, str):
            label = _get(tool, "server_label")
            name = label if isinstance(label, str) else tool_type
        definition: dict[str, Any] = {"type": tool_type, "name": name}
        description = _get(spec, "description")
        if isinstance(description, str):
            definition["description"] = description
        parameters = _get(spec, "parameters")
        if parameters is not None:
            definition["parameters"] = parameters
        definitions.append(definition)
    return _dumps_nonempty(definitions)


def truncate(text: str, max_length: int) -> str:
    """``text`` cut to ``max_length`` characters plus :data:`TRUNCATION_MARKER` (0: no limit)."""
    if max_length <= 0 or len(text) <= max_length:
        return text
    return text[:max_length] + TRUNCATION_MARKER.format(removed=len(text) - max_length)


def base64_size(data: str | bytes, start: int = 0) -> int:
    """Decoded size in bytes of the base64 text ``data[start:]``, without decoding or slicing it."""
    length = len(data) - start
    pad = "=" if isinstance(data, str) else b"="
    padding = 2 if data.endswith(pad * 2) else 1 if data.endswith(pad) else 0  # type: ignore[arg-type]
    return max(length * 3 // 4 - padding, 0)


def base64_marker(data: str | bytes, media: str, start: int = 0) -> str:
    """:data:`BASE64_MARKER` for the base64 payload ``data[start:]`` of type ``media``."""
    return BASE64_MARKER.format(media=media, size=base64_size(data, start))


# Chat completions


def _chat_message(message: Any, role: Any, max_length: int) -> _Message | None:
    content = _get(message, "content")
    if role in ("tool", "function"):
        # A legacy `function` message names the function instead of carrying a call id.
        parts = [
            {
                "type": "tool_call_response",
                "id": _get(message, "tool_call_id"),
                "response": _tool_response(content, max_length),
            }
        ]
    elif role == "assistant":
        parts = _assistant_parts(message, max_length)
    else:
        parts = _content_parts(content, max_length)
    if not parts:
        return None
    converted: _Message = {"role": role if isinstance(role, str) else "unknown", "parts": parts}
    name = _get(message, "name")
    if isinstance(name, str):
        converted["name"] = name
    return converted


def _assistant_parts(message: Any, max_length: int) -> list[_Part]:
    parts: list[_Part] = []
    # Not in the openai types: DeepSeek, vLLM and other compatible servers return the model's
    # reasoning as an extra `reasoning_content` field on the message.
    reasoning = _get(message, "reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        parts.append({"type": "reasoning", "content": truncate(reasoning, max_length)})
    parts.extend(_content_parts(_get(message, "content"), max_length))
    # A refused completion has content None and the text in `refusal`.
    refusal = _get(message, "refusal")
    if isinstance(refusal, str):
        parts.append(_text_part(refusal, max_length))
    audio = _get(message, "audio")
    if audio is not None:
        part = _audio_output_part(audio, max_length)
        if part is not None:
            parts.append(part)
    tool_calls = _get(message, "tool_calls")
    if isinstance(tool_calls, _SEQUENCES):
        parts.extend(_chat_tool_call(call, max_length) for call in tool_calls)
    function_call = _get(message, "function_call")
    if function_call is not None:
        parts.append(_tool_call_part(None, _get(function_call, "name"), _get(function_call, "arguments"), max_length))
    return parts


def _chat_tool_call(call: Any, max_length: int) -> _Part:
    function = _get(call, "function")
    if function is not None:
        return _tool_call_part(_get(call, "id"), _get(function, "name"), _get(function, "arguments"), max_length)
    custom = _get(call, "custom")
    if custom is not None:
        return _tool_call_part(_get(call, "id"), _get(custom, "name"), _get(custom, "input"), max_length)
    # The flat form a stream accumulator builds.
    return _tool_call_part(_get(call, "id"), _get(call, "name"), _get(call, "arguments"), max_length)


def _audio_output_part(audio: Any, max_length: int) -> _Part | None:
    data = _get(audio, "data")
    transcript = _get(audio, "transcript")
    if not isinstance(data, (str, bytes)) and not isinstance(transcript, str):
        return None  # an `{"id": ...}` reference to an earlier audio response
    part: _Part = {
        "type": "blob",
        "modality": "audio",
        "mime_type": None,
        "content": base64_marker(data, "audio") if isinstance(data, (str, bytes)) else "",
    }
    if isinstance(transcript, str):
        part["transcript"] = truncate(transcript, max_length)
    return part


# Responses API


def _input_item(item: Any, role: Any, max_length: int) -> tuple[str, list[_Part]]:
    """``(role, parts)`` of one Responses API input item."""
    if isinstance(item, str):
        return "user", [_text_part(item, max_length)]
    item_type = _get(item, "type")
    if item_type in (None, "message"):
        return (role if isinstance(role, str) else "user"), _content_parts(_get(item, "content"), max_length)
    if item_type in ("function_call", "custom_tool_call"):
        return "assistant", [_responses_tool_call(item, item_type, max_length)]
    if isinstance(item_type, str) and item_type.endswith("_output"):
        # function_call_output, custom_tool_call_output, computer_call_output, shell_call_output, ...
        response = {
            "type": "tool_call_response",
            "id": _get(item, "call_id") or _get(item, "id"),
            "response": _tool_response(_get(item, "output"), max_length),
        }
        return "tool", [response]
    return (role if isinstance(role, str) else "assistant"), _item_parts(item, item_type, max_length)


def _item_parts(item: Any, item_type: Any, max_length: int) -> list[_Part]:
    """Parts of a Responses API item that is neither a message nor a function call."""
    if item_type == "reasoning":
        # Summaries and, from open-weight models, the reasoning text; never encrypted_content.
        reasoning: list[_Part] = []
        for field in ("summary", "content"):
            blocks = _get(item, field)
            if isinstance(blocks, _SEQUENCES):
                for block in blocks:
                    text = _get(block, "text")
                    if isinstance(text, str) and text:
                        reasoning.append({"type": "reasoning", "content": truncate(text, max_length)})
        return reasoning
    if not isinstance(item_type, str):
        return [{"type": "unknown"}]
    if item_type.endswith("_call"):
        # Server-side tools (web_search_call, code_interpreter_call, mcp_call, ...): their type
        # and name only. Their other fields are not content we know to be safe (a shell call
        # carries its environment).
        name = _get(item, "name")
        parts: list[_Part] = [
            {
                "type": "server_tool_call",
                "id": _get(item, "id"),
                "name": name if isinstance(name, str) else item_type,
                "server_tool_call": {"type": item_type},
            }
        ]
        result = _get(item, "result") if item_type == "image_generation_call" else None
        if isinstance(result, str) and result:
            media = f"image/{_get(item, 'output_format') or 'png'}"
            parts.append(_blob("image", media, base64_marker(result, media)))
        return parts
    part: _Part = {"type": item_type}
    item_id = _get(item, "id")
    if isinstance(item_id, str):
        part["id"] = item_id
    return [part]


def _responses_tool_call(item: Any, item_type: str, max_length: int) -> _Part:
    arguments = _get(item, "arguments") if item_type == "function_call" else _get(item, "input")
    return _tool_call_part(_get(item, "call_id") or _get(item, "id"), _get(item, "name"), arguments, max_length)


# Parts shared by both APIs


def _content_parts(content: Any, max_length: int) -> list[_Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [_text_part(content, max_length)]
    if not isinstance(content, _SEQUENCES):
        return []
    return [_content_part(item, max_length) for item in content]


def _content_part(item: Any, max_length: int) -> _Part:
    if isinstance(item, str):
        return _text_part(item, max_length)
    part_type = _get(item, "type")
    if part_type in _TEXT_TYPES or part_type is None:
        text = _get(item, "text")
        if isinstance(text, str):
            return _text_part(text, max_length)
    elif part_type == "refusal":
        refusal = _get(item, "refusal")
        if isinstance(refusal, str):
            return _text_part(refusal, max_length)
    elif part_type == "image_url":
        image = _get(item, "image_url")
        url = image if isinstance(image, str) else _get(image, "url")
        if isinstance(url, str):
            return _media_url_part(url, "image")
    elif part_type in _IMAGE_TYPES:
        url = _get(item, "image_url")
        if isinstance(url, str):
            return _media_url_part(url, "image")
        file_id = _get(item, "file_id")
        if isinstance(file_id, str):
            return {"type": "file", "modality": "image", "mime_type": None, "file_id": file_id}
    elif part_type == "input_audio":
        audio = _get(item, "input_audio")
        data = _get(audio, "data")
        if isinstance(data, (str, bytes)):
            audio_format = _get(audio, "format")
            mime_type = _AUDIO_MIME_TYPES.get(audio_format) if isinstance(audio_format, str) else None
            return _blob("audio", mime_type, base64_marker(data, mime_type or "audio"))
    elif part_type == "file":
        # Chat nests the file under "file"; Responses' input_file carries the same fields flat.
        return _file_part(_get(item, "file"))
    elif part_type == "input_file":
        return _file_part(item)
    return {"type": part_type if isinstance(part_type, str) else "unknown"}


def _file_part(file: Any) -> _Part:
    file_id = _get(file, "file_id")
    if isinstance(file_id, str) and file_id:
        return {"type": "file", "modality": "document", "mime_type": None, "file_id": file_id}
    data = _get(file, "file_data")
    if isinstance(data, str) and data:
        if data.startswith("data:"):
            return _data_url_part(data, "document")
        filename = _get(file, "filename")
        mime_type = mimetypes.guess_type(filename)[0] if isinstance(filename, str) else None
        return _blob("document", mime_type, base64_marker(data, mime_type or "document"))
    url = _get(file, "file_url")
    if isinstance(url, str) and url:
        return _media_url_part(url, "document")
    return {"type": "file"}


def _media_url_part(url: str, modality: str) -> _Part:
    if url.startswith("data:"):
        return _data_url_part(url, modality)
    if "://" not in url[:16]:
        # No scheme: raw base64 where a URL belongs, which some compatible servers accept.
        return _blob(modality, None, base64_marker(url, modality))
    return {"type": "uri", "modality": modality, "mime_type": None, "uri": url}


def _data_url_part(url: str, modality: str) -> _Part:
    """A blob part for ``data:<mime>[;base64],<payload>``; the payload is measured, never copied."""
    comma = url.find(",", 5, _MAX_DATA_URL_HEADER)
    header = url[5:comma] if comma != -1 else ""
    mime_type = header.partition(";")[0] or None
    media = mime_type or modality
    start = comma + 1 if comma != -1 else len(url)
    if header.endswith(";base64"):
        marker = base64_marker(url, media, start)
    else:
        marker = DATA_URL_MARKER.format(media=media, size=len(url) - start)
    return _blob(modality, mime_type, marker)


def _blob(modality: str, mime_type: str | None, marker: str) -> _Part:
    # The semconv `content` holds the payload as base64; we record the size marker instead.
    return {"type": "blob", "modality": modality, "mime_type": mime_type, "content": marker}


def _text_part(text: str, max_length: int) -> _Part:
    return {"type": "text", "content": truncate(text, max_length)}


def _tool_call_part(call_id: Any, name: Any, arguments: Any, max_length: int) -> _Part:
    return {
        "type": "tool_call",
        "id": call_id if isinstance(call_id, str) else None,
        "name": name if isinstance(name, str) else "",
        "arguments": _json_value(arguments, max_length),
    }


def _tool_response(output: Any, max_length: int) -> Any:
    """A tool result: a string (JSON or text) or a list of content parts."""
    if isinstance(output, _SEQUENCES):
        return _content_parts(output, max_length)
    if isinstance(output, str):
        return _json_value(output, max_length)
    if output is None:
        return None
    # e.g. a computer_call_output's screenshot: one content part.
    return _content_part(output, max_length)


def _json_value(value: Any, max_length: int) -> Any:
    """A JSON object or array string parsed when it fits ``max_length``; else the (cut) string."""
    if not isinstance(value, str):
        return value if value is None or isinstance(value, (dict, list, int, float)) else None
    if 0 < max_length < len(value):
        return truncate(value, max_length)
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, (dict, list)) else value


# Helpers


def _get(obj: Any, key: str) -> Any:
    """``obj[key]`` for a mapping, ``obj.key`` for a pydantic model or any other object."""
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _dumps_nonempty(value: list[Any]) -> str | None:
    return _dumps(value) if value else None


def _json_default(value: Any) -> Any:
    # Tool parameter schemas are user data: a pydantic model or a set can turn up in them.
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return f"<{type(value).__name__}>"
