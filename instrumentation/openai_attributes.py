"""Pure functions: openai request arguments and responses -> span attributes.

Nothing here touches OpenTelemetry; each function takes what the openai SDK hands us and
returns a plain ``dict``. Extraction runs on every call, so it reads fields directly and
allocates little: no JSON unless there is something to serialise (tool definitions).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from llmtel.instrumentation import semconv as sc

try:  # the sentinels openai uses for "argument not given"
    from openai._types import NotGiven, Omit

    _SENTINELS: tuple[type, ...] = (NotGiven, Omit)
except ImportError:  # pragma: no cover - openai is required to be instrumented at all
    _SENTINELS = ()


def given(value: Any) -> Any:
    """``value``, or None when it is None or one of openai's not-given sentinels."""
    if value is None or value.__class__ in _SENTINELS:
        return None
    return value


# ---------------------------------------------------------------------------------------
# Requests


def _common_sampling(kwargs: Mapping[str, Any], attrs: dict[str, Any]) -> None:
    get = kwargs.get
    value = given(get("temperature"))
    if value is not None:
        attrs[sc.GEN_AI_REQUEST_TEMPERATURE] = value
    value = given(get("top_p"))
    if value is not None:
        attrs[sc.GEN_AI_REQUEST_TOP_P] = value
    if get("stream") is True:
        attrs[sc.GEN_AI_REQUEST_STREAM] = True
    value = given(get("service_tier"))
    if value is not None:
        attrs[sc.OPENAI_REQUEST_SERVICE_TIER] = value


def tool_names_json(tools: Any, full: bool = False) -> str | None:
    """``gen_ai.tool.definitions``: type and name of each tool; the whole definition when ``full``.

    Without content capture only names are recorded: descriptions and parameter schemas can
    hold prompt text, and names are what questions like "which tools were offered" need.
    """
    if not isinstance(tools, (list, tuple)) or not tools:
        return None
    out = []
    for tool in tools:
        if not isinstance(tool, Mapping):
            continue
        kind = tool.get("type", "function")
        function = tool.get("function")
        if isinstance(function, Mapping):  # chat completions shape
            entry = {"type": kind, "name": function.get("name")}
            if full:
                for key in ("description", "parameters", "strict"):
                    if key in function:
                        entry[key] = function[key]
        else:  # Responses API shape, or a built-in tool (web_search, file_search, ...)
            entry = {"type": kind, "name": tool.get("name", kind)}
            if full:
                for key in ("description", "parameters", "strict"):
                    if key in tool:
                        entry[key] = tool[key]
        out.append(entry)
    if not out:
        return None
    try:
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return None


def _output_type_of_format(response_format: Any) -> str | None:
    if isinstance(response_format, Mapping):
        kind = response_format.get("type")
        if kind in ("json_schema", "json_object"):
            return "json"
        if kind == "text":
            return "text"
        return None
    if isinstance(response_format, type):  # parse(response_format=SomePydanticModel)
        return "json"
    return None


def chat_request(kwargs: Mapping[str, Any], attrs: dict[str, Any], full_tools: bool) -> None:
    get = kwargs.get
    _common_sampling(kwargs, attrs)
    value = given(get("max_completion_tokens"))
    if value is None:
        value = given(get("max_tokens"))
    if value is not None:
        attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] = value
    value = given(get("seed"))
    if value is not None:
        attrs[sc.GEN_AI_REQUEST_SEED] = value
    value = given(get("stop"))
    if value is not None:
        attrs[sc.GEN_AI_REQUEST_STOP_SEQUENCES] = [value] if isinstance(value, str) else list(value)
    value = given(get("frequency_penalty"))
    if value is not None:
        attrs[sc.GEN_AI_REQUEST_FREQUENCY_PENALTY] = value
    value = given(get("presence_penalty"))
    if value is not None:
        attrs[sc.GEN_AI_REQUEST_PRESENCE_PENALTY] = value
    value = given(get("n"))
    if value is not None and value != 1:
        attrs[sc.GEN_AI_REQUEST_CHOICE_COUNT] = value
    value = given(get("response_format"))
    if value is not None:
        kind = _output_type_of_format(value)
        if kind is not None:
            attrs[sc.GEN_AI_OUTPUT_TYPE] = kind
    elif get("modalities") and "audio" in get("modalities"):
        attrs[sc.GEN_AI_OUTPUT_TYPE] = "speech"
    else:
        attrs[sc.GEN_AI_OUTPUT_TYPE] = "text"
    tools = given(get("tools"))
    if tools is not None:
        names = tool_names_json(tools, full_tools)
        if names is not None:
            attrs[sc.GEN_AI_TOOL_DEFINITIONS] = names


def responses_request(kwargs: Mapping[str, Any], attrs: dict[str, Any], full_tools: bool) -> None:
    get = kwargs.get
    _common_sampling(kwargs, attrs)
    value = given(get("max_output_tokens"))
    if value is not None:
        attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] = value
    text = given(get("text"))
    output_type = "text"
    if isinstance(text, Mapping):
        output_type = _output_type_of_format(text.get("format")) or "text"
    elif given(get("text_format")) is not None:  # responses.parse(text_format=Model)
        output_type = "json"
    attrs[sc.GEN_AI_OUTPUT_TYPE] = output_type
    conversation = given(get("conversation"))
    if isinstance(conversation, Mapping):
        conversation = conversation.get("id")
    if isinstance(conversation, str):
        attrs[sc.GEN_AI_CONVERSATION_ID] = conversation
    tools = given(get("tools"))
    if tools is not None:
        names = tool_names_json(tools, full_tools)
        if names is not None:
            attrs[sc.GEN_AI_TOOL_DEFINITIONS] = names


def embeddings_request(kwargs: Mapping[str, Any], attrs: dict[str, Any], full_tools: bool) -> None:
    value = given(kwargs.get("dimensions"))
    if value is not None:
        attrs[sc.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = value
    value = given(kwargs.get("encoding_format"))
    attrs[sc.GEN_AI_REQUEST_ENCODING_FORMATS] = [value or "float"]


def audio_request(kwargs: Mapping[str, Any], attrs: dict[str, Any], full_tools: bool) -> None:
    if kwargs.get("stream") is True:
        attrs[sc.GEN_AI_REQUEST_STREAM] = True
    value = given(kwargs.get("temperature"))
    if value is not None:
        attrs[sc.GEN_AI_REQUEST_TEMPERATURE] = value
    attrs[sc.GEN_AI_OUTPUT_TYPE] = "text"


def speech_request(kwargs: Mapping[str, Any], attrs: dict[str, Any], full_tools: bool) -> None:
    attrs[sc.GEN_AI_OUTPUT_TYPE] = "speech"


def image_request(kwargs: Mapping[str, Any], attrs: dict[str, Any], full_tools: bool) -> None:
    value = given(kwargs.get("n"))
    if value is not None and value != 1:
        attrs[sc.GEN_AI_REQUEST_CHOICE_COUNT] = value
    if kwargs.get("stream") is True:
        attrs[sc.GEN_AI_REQUEST_STREAM] = True
    attrs[sc.GEN_AI_OUTPUT_TYPE] = "image"


def moderation_request(kwargs: Mapping[str, Any], attrs: dict[str, Any], full_tools: bool) -> None:
    return None


def completion_request(kwargs: Mapping[str, Any], attrs: dict[str, Any], full_tools: bool) -> None:
    chat_request(kwargs, attrs, full_tools)


# ---------------------------------------------------------------------------------------
# Responses


def _usage_chat(usage: Any, attrs: dict[str, Any]) -> None:
    """Chat-style usage: prompt_tokens / completion_tokens with their details."""
    value = getattr(usage, "prompt_tokens", None)
    if value is not None:
        attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = value
    value = getattr(usage, "completion_tokens", None)
    if value is not None:
        attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = value
    details = getattr(usage, "prompt_tokens_details", None)
    if details is not None:
        value = details.cached_tokens
        if value:
            attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = value
        # Some OpenAI-compatible providers (OpenRouter, for one) report cache writes here.
        value = getattr(details, "cache_write_tokens", None)
        if value:
            attrs[sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = value
    details = getattr(usage, "completion_tokens_details", None)
    if details is not None:
        value = details.reasoning_tokens
        if value:
            attrs[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = value


def _usage_responses(usage: Any, attrs: dict[str, Any]) -> None:
    """Responses-style usage: input_tokens / output_tokens with their details."""
    value = getattr(usage, "input_tokens", None)
    if value is not None:
        attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = value
    value = getattr(usage, "output_tokens", None)
    if value is not None:
        attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = value
    details = getattr(usage, "input_tokens_details", None)
    if details is not None:
        value = getattr(details, "cached_tokens", None)
        if value:
            attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = value
    details = getattr(usage, "output_tokens_details", None)
    if details is not None:
        value = getattr(details, "reasoning_tokens", None)
        if value:
            attrs[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = value


def chat_response(result: Any, attrs: dict[str, Any]) -> None:
    value = getattr(result, "id", None)
    if value:
        attrs[sc.GEN_AI_RESPONSE_ID] = value
    value = getattr(result, "model", None)
    if value:
        attrs[sc.GEN_AI_RESPONSE_MODEL] = value
    choices = getattr(result, "choices", None)
    if choices:
        attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = [c.finish_reason or "" for c in choices]
    usage = getattr(result, "usage", None)
    if usage is not None:
        _usage_chat(usage, attrs)
    value = getattr(result, "service_tier", None)
    if value:
        attrs[sc.OPENAI_RESPONSE_SERVICE_TIER] = value
    value = getattr(result, "system_fingerprint", None)
    if value:
        attrs[sc.OPENAI_RESPONSE_SYSTEM_FINGERPRINT] = value


completion_response = chat_response


def responses_finish_reason(result: Any) -> str:
    """A chat-style finish reason for a Responses API response, which has only a status."""
    status = getattr(result, "status", None)
    if status == "completed":
        for item in getattr(result, "output", None) or ():
            if getattr(item, "type", None) == "function_call":
                return "tool_calls"
        return "stop"
    if status == "incomplete":
        reason = getattr(getattr(result, "incomplete_details", None), "reason", None)
        return "length" if reason == "max_output_tokens" else (reason or "incomplete")
    if status == "failed":
        return "error"
    return status or ""


def responses_response(result: Any, attrs: dict[str, Any]) -> None:
    value = getattr(result, "id", None)
    if value:
        attrs[sc.GEN_AI_RESPONSE_ID] = value
    value = getattr(result, "model", None)
    if value:
        attrs[sc.GEN_AI_RESPONSE_MODEL] = value
    attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = [responses_finish_reason(result)]
    usage = getattr(result, "usage", None)
    if usage is not None:
        _usage_responses(usage, attrs)
    value = getattr(result, "service_tier", None)
    if value:
        attrs[sc.OPENAI_RESPONSE_SERVICE_TIER] = value
    conversation = getattr(result, "conversation", None)
    value = getattr(conversation, "id", None)
    if value:
        attrs[sc.GEN_AI_CONVERSATION_ID] = value


def embeddings_response(result: Any, attrs: dict[str, Any]) -> None:
    value = getattr(result, "model", None)
    if value:
        attrs[sc.GEN_AI_RESPONSE_MODEL] = value
    usage = getattr(result, "usage", None)
    if usage is not None:
        value = getattr(usage, "prompt_tokens", None)
        if value is not None:
            attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = value
    data = getattr(result, "data", None)
    if data and sc.GEN_AI_EMBEDDINGS_DIMENSION_COUNT not in attrs:
        vector = getattr(data[0], "embedding", None)
        if isinstance(vector, list):
            attrs[sc.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = len(vector)
        elif isinstance(vector, str):  # base64 of little-endian float32
            attrs[sc.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = (len(vector) * 3 // 4 - vector.count("=")) // 4


def audio_response(result: Any, attrs: dict[str, Any]) -> None:
    """Transcriptions and translations: json, verbose_json, or plain text (a str)."""
    duration = getattr(result, "duration", None)
    usage = getattr(result, "usage", None)
    if usage is not None:
        kind = getattr(usage, "type", None)
        if kind == "duration" and duration is None:  # billed seconds; `duration` is exact
            duration = getattr(usage, "seconds", None)
        elif kind == "tokens":
            _usage_responses(usage, attrs)
    if duration is not None:
        attrs[sc.LLMTEL_AUDIO_DURATION] = float(duration)


def speech_response(result: Any, attrs: dict[str, Any]) -> None:
    return None


def image_response(result: Any, attrs: dict[str, Any]) -> None:
    data = getattr(result, "data", None)
    if data is not None:
        attrs[sc.LLMTEL_IMAGES_COUNT] = len(data)
    usage = getattr(result, "usage", None)
    if usage is not None:
        _usage_responses(usage, attrs)


def moderation_response(result: Any, attrs: dict[str, Any]) -> None:
    value = getattr(result, "id", None)
    if value:
        attrs[sc.GEN_AI_RESPONSE_ID] = value
    value = getattr(result, "model", None)
    if value:
        attrs[sc.GEN_AI_RESPONSE_MODEL] = value
