"""A local fake of the OpenAI HTTP API, for driving the real ``openai`` client in tests and benchmarks.

The fake is a real HTTP/1.1 server on loopback: the client under test builds its requests, retries,
parses JSON bodies and decodes server-sent events exactly as it would against the real API. The
response shapes follow the OpenAI API reference and recorded traffic (chat completions, the Responses
API, embeddings, audio, images, moderations, legacy completions, models), including the Azure OpenAI
URL form and its content-filter annotations.

Usage::

    from fake_openai import FakeOpenAI
    import openai

    with FakeOpenAI() as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="sk-test")
        fake.reply_text = "Paris."
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Capital of France?"}]
        )
        assert reply.choices[0].message.content == "Paris."
        assert reply.model == "gpt-4o-mini-2024-07-18"
        assert fake.requests[-1].json["model"] == "gpt-4o-mini"

        fake.fail_next(429)                 # the client retries; the second attempt succeeds
        fake.drop_connection_next()         # closes the socket without an answer
        fake.break_stream_after(3)          # the next streamed answer stops after 3 events

Azure: ``openai.AzureOpenAI(azure_endpoint=fake.url, api_version="2024-10-21", api_key="k")`` talks
to ``/openai/deployments/{deployment}/...``; the deployment name stands in for the model.

Everything a test can set (``reply_text``, ``stream_chunks``, ``tool_calls``, ``json_reply``,
``refusal``, ``cached_tokens``, ``reasoning_tokens``, ``model_aliases``) is a plain attribute, read
once per request; ``reset()`` puts them back to their defaults and forgets recorded requests and
queued failures. This module imports nothing from pytest so a benchmark can use it as is.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import math
import random
import re
import socket
import struct
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "DEFAULT_MODEL_SNAPSHOTS",
    "DEFAULT_REPLY_TEXT",
    "MISSING_MODELS",
    "PROMPT_OVERHEAD_TOKENS",
    "FakeOpenAI",
    "RecordedRequest",
]

DEFAULT_REPLY_TEXT = "Hello! How can I help you today?"

# Models the fake answers with 404 model_not_found, as the API does for a model that does not exist.
MISSING_MODELS = frozenset({"no-such-model"})

# What the real API reports as `model` when asked for an alias. Models not listed come back unchanged.
DEFAULT_MODEL_SNAPSHOTS: dict[str, str] = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-5": "gpt-5-2025-08-07",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
    "gpt-5-nano": "gpt-5-nano-2025-08-07",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
    "o3-mini": "o3-mini-2025-01-31",
    "o4-mini": "o4-mini-2025-04-16",
    "omni-moderation-latest": "omni-moderation-2024-09-26",
    "text-moderation-latest": "text-moderation-007",
}

# Every text-producing endpoint adds this many tokens to the words it counts in the prompt: the real
# API's chat template costs a handful of tokens per request.
PROMPT_OVERHEAD_TOKENS = 7

_SYSTEM_FINGERPRINT = "fp_f1a2b3c4d5"
_OPENAI_VERSION = "2020-10-01"
_EMBEDDING_DIMENSIONS = {"text-embedding-3-large": 3072}
_DEFAULT_EMBEDDING_DIMENSIONS = 1536

_JSON = "application/json"
_SSE = "text/event-stream; charset=utf-8"

# Headers a real 429 carries; `retry-after-ms` (which the openai client prefers over `retry-after`)
# keeps a retrying client from sleeping through its 0.5 s default backoff.
_RATE_LIMIT_HEADERS = {
    "retry-after-ms": "1",
    "retry-after": "0",
    "x-ratelimit-limit-requests": "500",
    "x-ratelimit-limit-tokens": "200000",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-remaining-tokens": "199000",
    "x-ratelimit-reset-requests": "120ms",
    "x-ratelimit-reset-tokens": "300ms",
}
_OK_RATE_LIMIT_HEADERS = {
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-limit-tokens": "30000000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-remaining-tokens": "29999990",
    "x-ratelimit-reset-requests": "6ms",
    "x-ratelimit-reset-tokens": "0s",
}

# The error bodies the real API sends for each status, used when `fail_next` is given no body.
_DEFAULT_ERRORS: dict[int, tuple[str, str, str | None, str | None]] = {
    400: (
        "This model's maximum context length is 128000 tokens. However, your messages resulted in "
        "130412 tokens. Please reduce the length of the messages.",
        "invalid_request_error",
        "messages",
        "context_length_exceeded",
    ),
    401: (
        "Incorrect API key provided: sk-test. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        None,
        "invalid_api_key",
    ),
    403: ("You are not allowed to sample from this model", "invalid_request_error", None, None),
    404: (
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        None,
        "model_not_found",
    ),
    408: ("Request timed out.", "timeout", None, None),
    409: ("The request conflicts with another request in progress.", "invalid_request_error", None, None),
    429: (
        "Rate limit reached for requests in organization org-fake on requests per min (RPM): "
        "Limit 500, Used 500, Requested 1. Please try again in 120ms.",
        "requests",
        None,
        "rate_limit_exceeded",
    ),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None, None),
    502: ("Bad gateway.", "server_error", None, None),
    503: ("The server is overloaded or not ready yet.", "server_error", None, None),
}

_SAFE = {"filtered": False, "severity": "safe"}
_AZURE_CONTENT_FILTER = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
_AZURE_PROMPT_FILTER = [
    {
        "prompt_index": 0,
        "content_filter_results": {**_AZURE_CONTENT_FILTER, "jailbreak": {"filtered": False, "detected": False}},
    }
]

# 1x1 transparent PNG: enough for a client to decode `b64_json`.
_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
_PNG_B64 = base64.b64encode(_PNG).decode()

# Deterministic bytes standing in for encoded speech; the first bytes look like an MP3 frame header.
_AUDIO_POOL = b"\xff\xfb\x90\x64" + random.Random(7).randbytes(64 * 1024)
_AUDIO_CHUNK = 1024
_AUDIO_CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


# Embedding vectors are windows into one pool of float32 values, so a request costs a slice, not
# thousands of random draws. The window's start comes from a CRC of the input: same text, same vector.
def _gaussian_pool(size: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(0.0, 1.0) for _ in range(size)]


_EMBEDDING_POOL = _gaussian_pool(4096 + 3072, seed=11)

# Token-like pieces: a word or a run of punctuation, with the whitespace before it. "Hello! How"
# becomes ["Hello", "!", " How"], the way the real API streams it.
_PIECE = re.compile(r"\s*(?:\w+|[^\w\s]+)|\s+")

_MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
_IMAGE_MODERATION_CATEGORIES = frozenset(
    {"self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "violence", "violence/graphic"}
)

_MODELS = (
    ("gpt-4o", 1715367049, "system"),
    ("gpt-4o-mini", 1721172741, "system"),
    ("gpt-4.1", 1744316542, "system"),
    ("gpt-5", 1754425777, "system"),
    ("text-embedding-3-small", 1705948997, "system"),
    ("text-embedding-3-large", 1705953180, "system"),
    ("whisper-1", 1677532384, "openai-internal"),
    ("gpt-4o-transcribe", 1742068463, "system"),
    ("tts-1", 1681940951, "openai-internal"),
    ("gpt-image-1", 1745517030, "system"),
    ("dall-e-3", 1698785189, "system"),
    ("omni-moderation-latest", 1731689265, "system"),
)


# --------------------------------------------------------------------------------------------------
# What the fake records and what it answers with
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it.

    ``path`` is the raw path (``/v1/chat/completions`` or the Azure form); ``endpoint`` is the API
    path with the prefix removed (``/chat/completions``) and ``deployment`` the Azure deployment name,
    if any. Header names are lower-cased. ``json`` is the parsed JSON body (``None`` for other bodies);
    for multipart bodies ``form`` holds the text fields (array fields, named ``name[]``, as lists) and
    ``files`` the ``(field name, file name)`` pairs.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any = None
    form: dict[str, str | list[str]] = field(default_factory=dict)
    files: list[tuple[str, str]] = field(default_factory=list)
    endpoint: str = ""
    deployment: str | None = None

    @property
    def is_azure(self) -> bool:
        return self.path.startswith("/openai/")

    @property
    def field_names(self) -> list[str]:
        """Every multipart field name, text and file, in no particular order."""
        return [*self.form, *(name for name, _ in self.files)]


@dataclass(frozen=True)
class _Settings:
    """The test's choices, read once per request so a streamed answer stays consistent."""

    reply_text: str
    stream_chunks: int | None
    tool_calls: tuple[tuple[str, str], ...]
    json_reply: str | None
    refusal: str | None
    cached_tokens: int
    reasoning_tokens: int
    model_aliases: Mapping[str, str]

    def snapshot(self, model: str) -> str:
        return self.model_aliases.get(model, model)


@dataclass
class _Call:
    """A parsed request as the endpoint builders see it."""

    endpoint: str
    body: dict[str, Any]
    form: dict[str, str | list[str]]
    file_sizes: dict[str, int]
    deployment: str | None
    azure: bool
    settings: _Settings
    ids: _Ids
    root_url: str

    @property
    def model(self) -> str:
        """The requested model; on Azure deployment URLs, the deployment stands in for it."""
        if self.deployment:
            return self.deployment
        value = self.body.get("model", self.form.get("model", ""))
        return value if isinstance(value, str) else ""


@dataclass
class _Reply:
    """What to send back: a whole body, or an iterator of pieces sent with chunked encoding."""

    body: bytes = b""
    content_type: str = _JSON
    stream: Iterator[bytes] | None = None


class _ApiError(Exception):
    """Raised by a builder to answer with the API's error body instead."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = _error_body(message, type_, param, code)


class _Ids:
    """Unique, readable ids (``chatcmpl-…``, ``resp_…``) from one counter per server."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def __call__(self, prefix: str, width: int = 24) -> str:
        return f"{prefix}{next(self._counter):0{width}x}"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _json_reply(value: Any) -> _Reply:
    return _Reply(body=_dumps(value).encode())


def _error_body(message: str, type_: str, param: str | None, code: str | None) -> bytes:
    return _dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


def _sse(data: str, event: str | None = None) -> bytes:
    """One server-sent event, framed as the API frames it."""
    if event is None:
        return f"data: {data}\n\n".encode()
    return f"event: {event}\ndata: {data}\n\n".encode()


_SSE_DONE = b"data: [DONE]\n\n"


# --------------------------------------------------------------------------------------------------
# Text, token counts, JSON samples
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _split_pieces(text: str) -> tuple[str, ...]:
    return tuple(_PIECE.findall(text))


@functools.lru_cache(maxsize=256)
def _reply_pieces(text: str, count: int | None) -> tuple[str, ...]:
    """The answer as token-like pieces; with ``count``, exactly that many (the text cycled or cut)."""
    pieces = _split_pieces(text)
    if count is None or not pieces:
        return pieces
    out: list[str] = []
    while len(out) < count:
        for i, piece in enumerate(pieces):
            if len(out) == count:
                break
            # Joining the cycles keeps words apart: "...today? Hello! How..."
            out.append(" " + piece if out and i == 0 and not piece[:1].isspace() else piece)
    return tuple(out)


@functools.lru_cache(maxsize=1024)
def _encoded(piece: str) -> str:
    return _dumps(piece)


def _text_of(value: Any) -> str:
    """The human text in a prompt: message contents, content parts, tool outputs; not roles or ids."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(_text_of(item) for item in value)
    if isinstance(value, dict):
        for key in ("content", "text", "output", "arguments"):
            if key in value:
                return _text_of(value[key])
    return ""


def _word_count(value: Any) -> int:
    return len(_text_of(value).split())


def _token_limit(body: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        limit = body.get(name)
        if isinstance(limit, int) and not isinstance(limit, bool):
            return limit
    return None


def _tool_calls_for(call: _Call) -> tuple[tuple[str, str], ...]:
    """The scripted tool calls, when the request offers tools and doesn't forbid calling them."""
    if not call.settings.tool_calls or not call.body.get("tools") or call.body.get("tool_choice") == "none":
        return ()
    return call.settings.tool_calls


def _sample_json(schema: Mapping[str, Any], root: Mapping[str, Any], depth: int = 0) -> Any:
    """A value that satisfies a (simple) JSON schema, as the structured-output helpers send them."""
    if depth > 8:
        return None
    if "$ref" in schema:
        target: Any = root
        for part in str(schema["$ref"]).lstrip("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return _sample_json(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [s for s in schema.get(key, []) if s.get("type") != "null"]
        if options:
            return _sample_json(options[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {name: _sample_json(sub, root, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [_sample_json(schema.get("items", {}), root, depth + 1)] * max(1, schema.get("minItems", 1))
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return {
        "date-time": "2024-01-01T00:00:00Z",
        "date": "2024-01-01",
        "time": "00:00:00",
        "email": "user@example.com",
        "uri": "https://example.com",
        "uuid": "00000000-0000-4000-8000-000000000000",
    }.get(schema.get("format", ""), "example")


def _structured_reply(call: _Call, schema_holder: Mapping[str, Any] | None) -> str | None:
    """The JSON text to answer a structured-output request with, or None for a plain text request."""
    if not schema_holder:
        return None
    kind = schema_holder.get("type")
    if kind == "json_schema":
        if call.settings.json_reply is not None:
            return call.settings.json_reply
        # chat nests the schema under `json_schema`; the Responses API puts it beside `type`.
        schema = schema_holder.get("json_schema", schema_holder).get("schema", {})
        return _dumps(_sample_json(schema, schema))
    if kind == "json_object":
        return call.settings.json_reply or _dumps({"reply": call.settings.reply_text})
    return None


# --------------------------------------------------------------------------------------------------
# POST /chat/completions
# --------------------------------------------------------------------------------------------------


@dataclass
class _Answer:
    """One answer to a chat or Responses request, before it is shaped into either API's objects."""

    pieces: tuple[str, ...]
    finish_reason: str
    tool_calls: tuple[tuple[str, str, str], ...]  # (call id, name, arguments)
    refusal: str | None
    prompt_tokens: int
    completion_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def _answer(call: _Call, prompt: Any, limit: int | None, schema_holder: Mapping[str, Any] | None) -> _Answer:
    s = call.settings
    prompt_tokens = _word_count(prompt) + PROMPT_OVERHEAD_TOKENS + s.cached_tokens
    tool_calls = tuple((call.ids("call_"), name, args) for name, args in _tool_calls_for(call))
    if tool_calls:
        tokens = sum(len(_split_pieces(args)) + 3 for _, _, args in tool_calls)
        return _Answer((), "tool_calls", tool_calls, None, prompt_tokens, tokens + s.reasoning_tokens)
    if s.refusal is not None:
        tokens = len(_split_pieces(s.refusal))
        return _Answer((), "stop", (), s.refusal, prompt_tokens, tokens + s.reasoning_tokens)
    structured = _structured_reply(call, schema_holder)
    pieces = _split_pieces(structured) if structured is not None else _reply_pieces(s.reply_text, s.stream_chunks)
    finish = "stop"
    if limit is not None and limit < len(pieces):
        pieces, finish = pieces[: max(limit, 0)], "length"
    return _Answer(pieces, finish, (), None, prompt_tokens, len(pieces) + s.reasoning_tokens)


def _chat_usage(call: _Call, answer: _Answer, n: int) -> dict[str, Any]:
    """Usage of ``n`` choices: each choice costs its completion (reasoning included), the prompt once."""
    completion_tokens = answer.completion_tokens * n
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": answer.prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": call.settings.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": call.settings.reasoning_tokens * n,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _chat_message(answer: _Answer, azure: bool) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if answer.tool_calls or answer.refusal is not None else answer.text,
    }
    if answer.tool_calls:
        message["tool_calls"] = [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            for call_id, name, args in answer.tool_calls
        ]
    message["refusal"] = answer.refusal
    message["annotations"] = []
    if azure:  # Azure sorts its keys.
        message = dict(sorted(message.items()))
    return message


def chat_completions(call: _Call) -> _Reply:
    """POST /chat/completions: a ``chat.completion`` object, or a stream of ``chat.completion.chunk``."""
    body = call.body
    _require(call, "model", "messages")
    n = body.get("n") or 1
    answer = _answer(
        call,
        body["messages"],
        _token_limit(body, "max_completion_tokens", "max_tokens"),
        body.get("response_format"),
    )
    model = call.settings.snapshot(call.model)
    service_tier = body.get("service_tier") if body.get("service_tier") not in (None, "auto") else "default"
    completion_id, created = call.ids("chatcmpl-", 29), int(time.time())
    usage = _chat_usage(call, answer, n)
    if body.get("stream"):
        stream_options = body.get("stream_options") or {}
        final_usage = usage if stream_options.get("include_usage") else None
        if call.azure:
            chunks = _azure_chat_chunks(completion_id, created, model, n, answer, final_usage)
        else:
            obfuscate = stream_options.get("include_obfuscation", True)
            chunks = _chat_chunks(completion_id, created, model, service_tier, n, answer, final_usage, obfuscate)
        return _Reply(content_type=_SSE, stream=chunks)
    if call.azure:
        return _json_reply(
            {
                "choices": [
                    {
                        "content_filter_results": _AZURE_CONTENT_FILTER,
                        "finish_reason": answer.finish_reason,
                        "index": i,
                        "logprobs": None,
                        "message": _chat_message(answer, azure=True),
                    }
                    for i in range(n)
                ],
                "created": created,
                "id": completion_id,
                "model": model,
                "object": "chat.completion",
                "prompt_filter_results": _AZURE_PROMPT_FILTER,
                "system_fingerprint": _SYSTEM_FINGERPRINT,
                "usage": usage,
            }
        )
    return _json_reply(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": i,
                    "message": _chat_message(answer, azure=False),
                    "logprobs": None,
                    "finish_reason": answer.finish_reason,
                }
                for i in range(n)
            ],
            "usage": usage,
            "service_tier": service_tier,
            "system_fingerprint": _SYSTEM_FINGERPRINT,
        }
    )


def _chat_deltas(n: int, answer: _Answer) -> Iterator[tuple[int, str, str]]:
    """``(choice index, delta JSON, finish_reason JSON)`` of each chunk, in the real API's order."""
    first = '{"role":"assistant","content":%s,"refusal":null}' % ("null" if answer.tool_calls else '""')
    for i in range(n):
        yield i, first, "null"
    for piece in answer.pieces:
        delta = f'{{"content":{_encoded(piece)}}}'
        for i in range(n):
            yield i, delta, "null"
    if answer.refusal is not None:
        for piece in _split_pieces(answer.refusal):
            for i in range(n):
                yield i, f'{{"refusal":{_encoded(piece)}}}', "null"
    for position, (call_id, name, args) in enumerate(answer.tool_calls):
        # The first delta of a call names it; the arguments follow in pieces under the same index.
        opening = _dumps(
            {"index": position, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        )
        for i in range(n):
            yield i, f'{{"tool_calls":[{opening}]}}', "null"
            for piece in _split_pieces(args):
                arguments = f'{{"index":{position},"function":{{"arguments":{_encoded(piece)}}}}}'
                yield i, f'{{"tool_calls":[{arguments}]}}', "null"
    for i in range(n):
        yield i, "{}", f'"{answer.finish_reason}"'


def _chat_chunks(
    completion_id: str,
    created: int,
    model: str,
    service_tier: str,
    n: int,
    answer: _Answer,
    usage: dict[str, Any] | None,
    obfuscate: bool,
) -> Iterator[bytes]:
    # The envelope is the same for every chunk: render it once and splice each choice in. The real API
    # pads every chunk with a random `obfuscation` string (hiding token lengths from anyone measuring
    # packet sizes) unless `stream_options.include_obfuscation` is false; a fixed one will do here.
    head = (
        f'{{"id":"{completion_id}","object":"chat.completion.chunk","created":{created},'
        f'"model":{_encoded(model)},"service_tier":"{service_tier}",'
        f'"system_fingerprint":"{_SYSTEM_FINGERPRINT}","choices":'
    )
    tail = (',"usage":null' if usage is not None else "") + (',"obfuscation":"x8Fq2"}' if obfuscate else "}")
    for index, delta, finish in _chat_deltas(n, answer):
        choice = f'[{{"index":{index},"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]'
        yield _sse(head + choice + tail)
    if usage is not None:
        yield _sse(head + '[],"usage":' + _dumps(usage) + (',"obfuscation":"Qz"}' if obfuscate else "}"))
    yield _SSE_DONE


def _azure_chat_chunks(
    completion_id: str, created: int, model: str, n: int, answer: _Answer, usage: dict[str, Any] | None
) -> Iterator[bytes]:
    # Azure opens with a chunk that has no choices, only the prompt's filter results, annotates every
    # content chunk with the completion's filter results (empty on the role and final chunks), and
    # sorts its keys.
    yield _sse(
        _dumps(
            {
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": _AZURE_PROMPT_FILTER,
            }
        )
    )
    filters = _dumps(_AZURE_CONTENT_FILTER)
    tail = (
        f',"created":{created},"id":"{completion_id}","model":{_encoded(model)},'
        f'"object":"chat.completion.chunk","system_fingerprint":"{_SYSTEM_FINGERPRINT}"'
        + (',"usage":null}' if usage is not None else "}")
    )
    for position, (index, delta, finish) in enumerate(_chat_deltas(n, answer)):
        empty = position < n or finish != "null"  # the first n chunks carry the role
        choice = (
            f'[{{"content_filter_results":{"{}" if empty else filters},"delta":{delta},'
            f'"finish_reason":{finish},"index":{index},"logprobs":null}}]'
        )
        yield _sse('{"choices":' + choice + tail)
    if usage is not None:
        yield _sse(
            f'{{"choices":[],"created":{created},"id":"{completion_id}","model":{_encoded(model)},'
            f'"object":"chat.completion.chunk","system_fingerprint":"{_SYSTEM_FINGERPRINT}",'
            f'"usage":{_dumps(usage)}}}'
        )
    yield _SSE_DONE


# --------------------------------------------------------------------------------------------------
# POST /responses
# --------------------------------------------------------------------------------------------------


def _responses_usage(call: _Call, answer: _Answer) -> dict[str, Any]:
    return {
        "input_tokens": answer.prompt_tokens,
        "input_tokens_details": {"cached_tokens": call.settings.cached_tokens},
        "output_tokens": answer.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": call.settings.reasoning_tokens},
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


def _response_object(
    call: _Call,
    response_id: str,
    created: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    body = call.body
    text = dict(body.get("text") or {})
    text.setdefault("format", {"type": "text"})
    text.setdefault("verbosity", "medium")
    tools = [
        {**tool, "strict": tool.get("strict", True)} if tool.get("type") == "function" else tool
        for tool in body.get("tools") or []
    ]
    reasoning = body.get("reasoning") or {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": bool(body.get("background", False)),
        "completed_at": created if status == "completed" else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": body.get("service_tier") if body.get("service_tier") not in (None, "auto") else "default",
        "store": body.get("store", True),
        "temperature": float(body.get("temperature", 1.0)),
        "text": text,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": tools,
        "top_logprobs": body.get("top_logprobs", 0),
        "top_p": float(body.get("top_p", 1.0)),
        "truncation": body.get("truncation", "disabled"),
        "usage": usage,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def _output_items(call: _Call, answer: _Answer, status: str) -> list[dict[str, Any]]:
    """The ``output`` list: a reasoning item when reasoning tokens are scripted, then calls or a message."""
    items: list[dict[str, Any]] = []
    if call.settings.reasoning_tokens:
        items.append({"id": call.ids("rs_", 48), "type": "reasoning", "summary": []})
    for call_id, name, args in answer.tool_calls:
        items.append(
            {
                "id": call.ids("fc_", 48),
                "type": "function_call",
                "status": "completed",
                "arguments": args,
                "call_id": call_id,
                "name": name,
            }
        )
    if not answer.tool_calls:
        content = (
            {"type": "refusal", "refusal": answer.refusal}
            if answer.refusal is not None
            else {"type": "output_text", "annotations": [], "logprobs": [], "text": answer.text}
        )
        items.append(
            {"id": call.ids("msg_", 48), "type": "message", "status": status, "content": [content], "role": "assistant"}
        )
    return items


def responses(call: _Call) -> _Reply:
    """POST /responses: a ``response`` object, or its stream of typed events."""
    body = call.body
    _require(call, "model")
    prompt = [body.get("instructions") or "", body.get("input") or ""]
    answer = _answer(call, prompt, _token_limit(body, "max_output_tokens"), (body.get("text") or {}).get("format"))
    status = "incomplete" if answer.finish_reason == "length" else "completed"
    response_id, created = call.ids("resp_", 48), int(time.time())
    model = call.settings.snapshot(call.model)
    output = _output_items(call, answer, status)
    usage = _responses_usage(call, answer)
    if body.get("stream"):
        return _Reply(
            content_type=_SSE, stream=_response_events(call, response_id, created, model, status, output, usage, answer)
        )
    return _json_reply(_response_object(call, response_id, created, model, status, output, usage))


def _response_events(
    call: _Call,
    response_id: str,
    created: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any],
    answer: _Answer,
) -> Iterator[bytes]:
    sequence = itertools.count()

    def event(kind: str, **fields: Any) -> bytes:
        return _sse(_dumps({"type": kind, "sequence_number": next(sequence), **fields}), event=kind)

    in_progress = _response_object(call, response_id, created, model, "in_progress", [], None)
    yield event("response.created", response=in_progress)
    yield event("response.in_progress", response=in_progress)
    for index, item in enumerate(output):
        opening = {**item, "status": "in_progress"} if "status" in item else item
        if item["type"] == "function_call":
            opening = {**opening, "arguments": ""}
        elif item["type"] == "message":
            opening = {**opening, "content": []}
        yield event("response.output_item.added", output_index=index, item=opening)
        if item["type"] == "function_call":
            for piece in _split_pieces(item["arguments"]):
                yield event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=piece,
                    obfuscation="k3",
                )
            yield event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            )
        elif item["type"] == "message":
            part = item["content"][0]
            ids = {"item_id": item["id"], "output_index": index, "content_index": 0}
            if part["type"] == "refusal":
                yield event("response.content_part.added", **ids, part={"type": "refusal", "refusal": ""})
                for piece in _split_pieces(part["refusal"]):
                    yield event("response.refusal.delta", **ids, delta=piece)
                yield event("response.refusal.done", **ids, refusal=part["refusal"])
            else:
                yield event("response.content_part.added", **ids, part={**part, "text": ""})
                for piece in answer.pieces:
                    yield event("response.output_text.delta", **ids, delta=piece, logprobs=[], obfuscation="k3")
                yield event("response.output_text.done", **ids, text=part["text"], logprobs=[])
            yield event("response.content_part.done", **ids, part=part)
        yield event("response.output_item.done", output_index=index, item=item)
    final = "response.completed" if status == "completed" else "response.incomplete"
    yield event(final, response=_response_object(call, response_id, created, model, status, output, usage))


# --------------------------------------------------------------------------------------------------
# POST /completions (legacy)
# --------------------------------------------------------------------------------------------------


def completions(call: _Call) -> _Reply:
    """POST /completions: a ``text_completion``; the legacy API stops at 16 tokens unless told otherwise."""
    body = call.body
    _require(call, "model", "prompt")
    s = call.settings
    prompts = (
        body["prompt"]
        if isinstance(body["prompt"], list) and body["prompt"] and isinstance(body["prompt"][0], str)
        else [body["prompt"]]
    )
    n = body.get("n") or 1
    pieces = _reply_pieces(s.reply_text, s.stream_chunks)
    limit = _token_limit(body, "max_tokens")
    limit = 16 if limit is None else limit
    finish = "stop"
    if limit < len(pieces):
        pieces, finish = pieces[:limit], "length"
    prompt_tokens = sum(_word_count(p) if isinstance(p, str) else len(p) for p in prompts)
    completion_tokens = len(pieces) * n * len(prompts)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    completion_id, created, model = call.ids("cmpl-", 29), int(time.time()), s.snapshot(call.model)
    indexes = range(n * len(prompts))
    echo = [(p if isinstance(p, str) else "") if body.get("echo") else "" for p in prompts]
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return _Reply(
            content_type=_SSE,
            stream=_completion_chunks(
                completion_id, created, model, indexes, pieces, finish, usage if include_usage else None
            ),
        )
    text = "".join(pieces)
    return _json_reply(
        {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [
                {"text": echo[i // n] + text, "index": i, "logprobs": None, "finish_reason": finish} for i in indexes
            ],
            "usage": usage,
        }
    )


def _completion_chunks(
    completion_id: str,
    created: int,
    model: str,
    indexes: range,
    pieces: Sequence[str],
    finish: str,
    usage: dict[str, Any] | None,
) -> Iterator[bytes]:
    head = f'{{"id":"{completion_id}","object":"text_completion","created":{created},"choices":'
    tail = f',"model":{_encoded(model)}' + (',"usage":null}' if usage is not None else "}")
    for piece in pieces:
        for i in indexes:
            yield _sse(head + f'[{{"text":{_encoded(piece)},"index":{i},"logprobs":null,"finish_reason":null}}]' + tail)
    for i in indexes:
        yield _sse(head + f'[{{"text":"","index":{i},"logprobs":null,"finish_reason":"{finish}"}}]' + tail)
    if usage is not None:
        yield _sse(head + f'[],"model":{_encoded(model)},"usage":{_dumps(usage)}}}')
    yield _SSE_DONE


# --------------------------------------------------------------------------------------------------
# POST /embeddings
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _embedding(offset: int, dimensions: int) -> tuple[list[float], str]:
    """A unit vector as float32 values, and the same bytes as the base64 the API sends."""
    window = _EMBEDDING_POOL[offset : offset + dimensions]
    norm = math.sqrt(sum(x * x for x in window)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(x / norm for x in window))
    return list(struct.unpack(f"<{dimensions}f", packed)), base64.b64encode(packed).decode()


def embeddings(call: _Call) -> _Reply:
    """POST /embeddings: one vector per input, as floats or base64 of little-endian float32."""
    body = call.body
    _require(call, "model", "input")
    raw = body["input"]
    # A string, a list of strings, a list of token ids, or a list of token-id lists.
    if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
        inputs: list[Any] = [raw]
    else:
        inputs = list(raw)
    if not inputs:
        raise _ApiError(400, "'$.input' is invalid. Please check the API reference.", param="input")
    model = call.model
    dimensions = body.get("dimensions") or _EMBEDDING_DIMENSIONS.get(model, _DEFAULT_EMBEDDING_DIMENSIONS)
    as_base64 = body.get("encoding_format") == "base64"
    data, tokens = [], 0
    for index, item in enumerate(inputs):
        text = item if isinstance(item, str) else " ".join(map(str, item))
        tokens += len(text.split()) if isinstance(item, str) else len(item)
        floats, encoded = _embedding(zlib.crc32(text.encode()) % 4096, dimensions)
        data.append({"object": "embedding", "index": index, "embedding": encoded if as_base64 else floats})
    return _json_reply(
        {
            "object": "list",
            "data": data,
            "model": call.settings.snapshot(model),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


# --------------------------------------------------------------------------------------------------
# POST /audio/transcriptions, /audio/translations, /audio/speech
# --------------------------------------------------------------------------------------------------


def _audio_seconds(call: _Call) -> float:
    # 16 kHz, 16-bit mono: 32 000 bytes a second, at least a tenth of one.
    return max(0.1, round(call.file_sizes.get("file", 0) / 32000, 2))


def _audio_usage(call: _Call, seconds: float, output_tokens: int) -> dict[str, Any]:
    """whisper-1 is billed by duration; the gpt-4o transcribe models by tokens."""
    if call.model.startswith("whisper"):
        return {"type": "duration", "seconds": math.ceil(seconds)}
    audio_tokens = math.ceil(seconds * 10)
    text_tokens = _word_count(call.form.get("prompt", ""))
    return {
        "type": "tokens",
        "input_tokens": audio_tokens + text_tokens,
        "input_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
        "output_tokens": output_tokens,
        "total_tokens": audio_tokens + text_tokens + output_tokens,
    }


def _subtitles(text: str, seconds: float, kind: str) -> str:
    end = time.strftime("%H:%M:%S", time.gmtime(seconds)) + f"{seconds % 1:.3f}"[1:]
    if kind == "vtt":
        return f"WEBVTT\n\n00:00:00.000 --> {end}\n{text}\n\n"
    return f"1\n00:00:00,000 --> {end.replace('.', ',')}\n{text}\n\n"


def _audio_text(call: _Call, task: str) -> _Reply:
    _require(call, "file", "model")
    s = call.settings
    pieces = _reply_pieces(s.reply_text, s.stream_chunks)
    text = "".join(pieces).strip()
    seconds = _audio_seconds(call)
    response_format = call.form.get("response_format", "json")
    if task == "transcribe" and call.form.get("stream") == "true":
        if call.model.startswith("whisper"):
            raise _ApiError(400, "Streaming is not supported for whisper-1.", param="stream", code="unsupported_value")
        # Transcription streams are `data:`-only events with the type inside, ending on the done event.
        usage = _audio_usage(call, seconds, len(pieces))
        events = [_sse(_dumps({"type": "transcript.text.delta", "delta": p})) for p in pieces]
        events.append(_sse(_dumps({"type": "transcript.text.done", "text": text, "usage": usage})))
        return _Reply(content_type=_SSE, stream=iter(events))
    if response_format == "text":
        return _Reply(body=(text + "\n").encode(), content_type="text/plain; charset=utf-8")
    if response_format in ("srt", "vtt"):
        return _Reply(
            body=_subtitles(text, seconds, response_format).encode(), content_type="text/plain; charset=utf-8"
        )
    if response_format == "verbose_json":
        words = text.split()
        verbose: dict[str, Any] = {
            "task": task,
            "language": "english",
            "duration": seconds,
            "text": text,
            "segments": [
                {
                    "id": 0,
                    "seek": 0,
                    "start": 0.0,
                    "end": seconds,
                    "text": " " + text,
                    "tokens": list(range(50364, 50364 + len(pieces))),
                    "temperature": 0.0,
                    "avg_logprob": -0.25,
                    "compression_ratio": 0.9,
                    "no_speech_prob": 0.01,
                }
            ],
        }
        granularities = call.form.get("timestamp_granularities[]", [])
        if "word" in granularities:
            step = seconds / max(len(words), 1)
            verbose["words"] = [
                {"word": w.strip(".,!?"), "start": round(i * step, 2), "end": round((i + 1) * step, 2)}
                for i, w in enumerate(words)
            ]
        if task == "transcribe":
            verbose["usage"] = {"type": "duration", "seconds": math.ceil(seconds)}
        return _json_reply(verbose)
    if task == "translate":
        return _json_reply({"text": text})
    return _json_reply({"text": text, "usage": _audio_usage(call, seconds, len(pieces))})


def audio_transcriptions(call: _Call) -> _Reply:
    """POST /audio/transcriptions (multipart): json, verbose_json, text, srt, vtt, or an event stream."""
    return _audio_text(call, "transcribe")


def audio_translations(call: _Call) -> _Reply:
    """POST /audio/translations (multipart): the same shapes, always English, no usage."""
    return _audio_text(call, "translate")


def audio_speech(call: _Call) -> _Reply:
    """POST /audio/speech: deterministic audio bytes sent in chunks, or ``speech.audio.*`` events."""
    body = call.body
    _require(call, "model", "input", "voice")
    size = 2048 + 96 * _word_count(body["input"])
    audio = _AUDIO_POOL[: min(size, len(_AUDIO_POOL))]
    chunks = (audio[i : i + _AUDIO_CHUNK] for i in range(0, len(audio), _AUDIO_CHUNK))
    if body.get("stream_format") == "sse":
        input_tokens = _word_count(body["input"]) + PROMPT_OVERHEAD_TOKENS
        output_tokens = len(audio) // 64
        events = [_sse(_dumps({"type": "speech.audio.delta", "audio": base64.b64encode(c).decode()})) for c in chunks]
        events.append(
            _sse(
                _dumps(
                    {
                        "type": "speech.audio.done",
                        "usage": {
                            "input_tokens": input_tokens,
                            "output_tokens": output_tokens,
                            "total_tokens": input_tokens + output_tokens,
                        },
                    }
                )
            )
        )
        return _Reply(content_type=_SSE, stream=iter(events))
    content_type = _AUDIO_CONTENT_TYPES.get(body.get("response_format", "mp3"), "audio/mpeg")
    return _Reply(content_type=content_type, stream=chunks)


# --------------------------------------------------------------------------------------------------
# POST /images/generations, /images/edits, /images/variations
# --------------------------------------------------------------------------------------------------


def _images(call: _Call, params: Mapping[str, Any], input_images: int) -> _Reply:
    prompt = params.get("prompt", "")
    model = str(params.get("model") or call.deployment or "dall-e-2")
    n = int(params.get("n") or 1)
    gpt_image = model.startswith("gpt-image")
    as_b64 = gpt_image or params.get("response_format") == "b64_json"
    data = []
    for _ in range(n):
        image: dict[str, Any] = (
            {"b64_json": _PNG_B64} if as_b64 else {"url": f"{call.root_url}/fake-images/{call.ids('img-')}.png"}
        )
        if model == "dall-e-3":
            image["revised_prompt"] = f"A detailed image of {prompt}".strip()
        data.append(image)
    reply: dict[str, Any] = {"created": int(time.time()), "data": data}
    if gpt_image:
        quality = params.get("quality") if params.get("quality") in ("low", "medium", "high") else "medium"
        text_tokens = _word_count(prompt) + PROMPT_OVERHEAD_TOKENS
        image_tokens = 323 * input_images
        output_tokens = {"low": 272, "medium": 1056, "high": 4160}[quality] * n
        reply.update(
            background=params.get("background") if params.get("background") in ("transparent", "opaque") else "opaque",
            output_format=params.get("output_format", "png"),
            quality=quality,
            size=params.get("size") if params.get("size") not in (None, "auto") else "1024x1024",
            usage={
                "input_tokens": text_tokens + image_tokens,
                "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
                "output_tokens": output_tokens,
                "total_tokens": text_tokens + image_tokens + output_tokens,
            },
        )
    return _json_reply(reply)


def images_generations(call: _Call) -> _Reply:
    """POST /images/generations: ``url`` (DALL·E default) or ``b64_json`` images; gpt-image-* adds usage."""
    _require(call, "prompt")
    return _images(call, call.body, input_images=0)


def images_edits(call: _Call) -> _Reply:
    """POST /images/edits (multipart): like generations, with the input images counted in usage."""
    _require(call, "prompt")
    count = sum(1 for name in call.file_sizes if name.split("#")[0] in ("image", "image[]"))
    if not count:
        raise _ApiError(400, "Missing required parameter: 'image'.", param="image", code="missing_required_parameter")
    return _images(call, call.form, input_images=count)


def images_variations(call: _Call) -> _Reply:
    """POST /images/variations (multipart, DALL·E 2 only)."""
    return _images(call, call.form, input_images=1)


# --------------------------------------------------------------------------------------------------
# POST /moderations, GET /models
# --------------------------------------------------------------------------------------------------


def moderations(call: _Call) -> _Reply:
    """POST /moderations: one unflagged result per input (a multimodal list counts as one input)."""
    body = call.body
    _require(call, "input")
    raw = body["input"]
    multimodal = isinstance(raw, list) and bool(raw) and isinstance(raw[0], dict)
    inputs = [raw] if isinstance(raw, str) or multimodal else list(raw)
    has_image = multimodal and any(part.get("type") == "image_url" for part in raw)
    results = []
    for item in inputs:
        seed = zlib.crc32(_text_of(item).encode())
        results.append(
            {
                "flagged": False,
                "categories": dict.fromkeys(_MODERATION_CATEGORIES, False),
                "category_scores": {
                    name: round(1e-6 * (1 + (seed >> i) % 97), 9) for i, name in enumerate(_MODERATION_CATEGORIES)
                },
                "category_applied_input_types": {
                    name: ["text", "image"] if has_image and name in _IMAGE_MODERATION_CATEGORIES else ["text"]
                    for name in _MODERATION_CATEGORIES
                },
            }
        )
    model = call.settings.snapshot(body.get("model") or "omni-moderation-latest")
    return _json_reply({"id": call.ids("modr-", 29), "model": model, "results": results})


def _model_object(model_id: str, created: int, owned_by: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}


def models(call: _Call) -> _Reply:
    """GET /models and GET /models/{model}."""
    if call.endpoint == "/models":
        return _json_reply({"object": "list", "data": [_model_object(*m) for m in _MODELS]})
    wanted = call.endpoint.removeprefix("/models/")
    for model in _MODELS:
        if model[0] == wanted:
            return _json_reply(_model_object(*model))
    raise _ApiError(404, f"The model '{wanted}' does not exist", param="model", code="model_not_found")


def _require(call: _Call, *names: str) -> None:
    """Answer 400 as the API does when a required JSON or form field is missing.

    On an Azure deployment URL the deployment stands in for ``model``.
    """
    for name in names:
        present = (
            bool(call.model) if name == "model" else (name in call.body or name in call.form or name in call.file_sizes)
        )
        if not present:
            raise _ApiError(
                400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
            )


_ENDPOINTS: dict[tuple[str, str], Callable[[_Call], _Reply]] = {
    ("POST", "/chat/completions"): chat_completions,
    ("POST", "/responses"): responses,
    ("POST", "/completions"): completions,
    ("POST", "/embeddings"): embeddings,
    ("POST", "/audio/transcriptions"): audio_transcriptions,
    ("POST", "/audio/translations"): audio_translations,
    ("POST", "/audio/speech"): audio_speech,
    ("POST", "/images/generations"): images_generations,
    ("POST", "/images/edits"): images_edits,
    ("POST", "/images/variations"): images_variations,
    ("POST", "/moderations"): moderations,
    ("GET", "/models"): models,
}


# --------------------------------------------------------------------------------------------------
# Parsing requests
# --------------------------------------------------------------------------------------------------


def _split_api_path(path: str) -> tuple[str, str | None] | None:
    """``(endpoint, deployment)`` for the OpenAI and Azure URL forms, or None for any other path.

    /v1/chat/completions                              -> ("/chat/completions", None)
    /openai/deployments/{deployment}/chat/completions -> ("/chat/completions", deployment)
    /openai/v1/responses, /openai/responses           -> ("/responses", None)
    """
    if path.startswith("/v1/"):
        return path[3:], None
    if path.startswith("/openai/deployments/"):
        deployment, _, rest = path[len("/openai/deployments/") :].partition("/")
        return ("/" + rest, deployment) if deployment and rest else None
    if path.startswith("/openai/v1/"):
        return path[len("/openai/v1") :], None
    if path.startswith("/openai/"):
        return path[len("/openai") :], None
    return None


def _parse_multipart(
    body: bytes, content_type: str
) -> tuple[dict[str, str | list[str]], list[tuple[str, str]], dict[str, int]]:
    """Text fields, ``(field, filename)`` pairs and file sizes from a multipart/form-data body."""
    boundary = content_type.partition("boundary=")[2].split(";")[0].strip().strip('"')
    form: dict[str, str | list[str]] = {}
    files: list[tuple[str, str]] = []
    sizes: dict[str, int] = {}
    if not boundary:
        return form, files, sizes
    for part in body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.strip(b"\r\n").partition(b"\r\n\r\n")
        disposition = next(
            (
                line
                for line in head.decode("utf-8", "replace").split("\r\n")
                if line.lower().startswith("content-disposition")
            ),
            "",
        )
        params = dict(re.findall(r'(\w+)="([^"]*)"', disposition))
        name = params.get("name", "")
        if "filename" in params:
            files.append((name, params["filename"]))
            # Several files may share a field name (`image[]`): keep each size under its own key.
            key = name if name not in sizes else f"{name}#{len(files)}"
            sizes[key] = len(content)
        elif name.endswith("[]"):
            values = form.setdefault(name, [])
            assert isinstance(values, list)
            values.append(content.decode())
        else:
            form[name] = content.decode()
    return form, files, sizes


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


def _read_request(handler: BaseHTTPRequestHandler) -> tuple[RecordedRequest, dict[str, int], bool]:
    """The request as recorded, the sizes of its uploaded files, and whether its JSON failed to parse."""
    raw = _read_body(handler)
    url = urlsplit(handler.path)
    headers = {name.lower(): value for name, value in handler.headers.items()}
    content_type = headers.get("content-type", "")
    endpoint, deployment = _split_api_path(url.path) or ("", None)
    parsed: Any = None
    form: dict[str, str | list[str]] = {}
    files: list[tuple[str, str]] = []
    sizes: dict[str, int] = {}
    json_error = False
    if content_type.startswith("multipart/form-data"):
        form, files, sizes = _parse_multipart(raw, content_type)
    elif raw:
        try:
            parsed = json.loads(raw)
        except ValueError:
            json_error = True
    record = RecordedRequest(
        method=handler.command,
        path=url.path,
        query=dict(parse_qsl(url.query)),
        headers=headers,
        body=raw,
        json=parsed,
        form=form,
        files=files,
        endpoint=endpoint,
        deployment=deployment,
    )
    return record, sizes, json_error


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0], 16)
            if size == 0:
                handler.rfile.readline()
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("content-length") or 0)
    return handler.rfile.read(length) if length else b""


@dataclass(frozen=True)
class _Failure:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    drop_connection: bool = False  # read the request, then close the socket without answering


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    # Streams are many small writes; without this, Nagle's algorithm and delayed ACKs add 40 ms stalls.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    do_GET = do_DELETE = do_PUT = do_PATCH = do_POST

    def send_head(self, status: int, content_type: str, headers: Mapping[str, str], length: int | None) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        for name, value in headers.items():
            self.send_header(name, value)
        if length is None:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("content-length", str(length))
        self.end_headers()

    def abort(self) -> None:
        """End the connection now. What was written arrives first (FIN, not RST), then the client
        sees the body cut short."""
        self.close_connection = True
        self.wfile.flush()
        try:
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that drops a pooled keep-alive connection, or stops reading a stream, resets the
        # socket under an idle handler: routine, not worth a traceback on stderr.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class FakeOpenAI:
    """The OpenAI API on ``127.0.0.1``, a random free port, served from a daemon thread.

    Attributes a test may set (``reset()`` restores them):

    - ``reply_text``: the answer of every text endpoint (chat, responses, completions, audio text).
    - ``stream_chunks``: None (one content chunk per token-like piece of ``reply_text``) or N (exactly
      N content pieces: ``reply_text`` cut short or repeated), for streamed and plain answers alike.
    - ``tool_calls``: ``[(name, arguments_json), ...]`` to call when the request offers ``tools``.
    - ``json_reply``: the JSON text for ``json_schema`` requests (default: built from the schema).
    - ``refusal``: answer with a refusal instead of content.
    - ``cached_tokens`` / ``reasoning_tokens``: reported in usage details and added on top of the
      counted prompt / completion tokens, so totals stay consistent.
    - ``model_aliases``: requested model -> the dated snapshot reported back.

    Usage counts: prompt tokens are the words in the prompt plus ``PROMPT_OVERHEAD_TOKENS``;
    completion tokens are the content pieces (per choice) — the number of content chunks a stream sends.

    Read-only: ``url`` (``http://127.0.0.1:PORT``, the Azure endpoint), ``base_url`` (``url + "/v1"``,
    for ``openai.OpenAI(base_url=...)``), ``port``, ``requests`` and ``last_request``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._failures: deque[_Failure] = deque()
        self._break_after: int | None = None
        self._ids = _Ids()
        self.reset()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.url}/v1"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()

    # -- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop serving and release the port. Safe to call twice."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def reset(self) -> None:
        """Default settings, no recorded requests, no queued failures."""
        self.reply_text: str = DEFAULT_REPLY_TEXT
        self.stream_chunks: int | None = None
        self.tool_calls: list[tuple[str, str | Mapping[str, Any]]] = []
        self.json_reply: str | None = None
        self.refusal: str | None = None
        self.cached_tokens: int = 0
        self.reasoning_tokens: int = 0
        self.model_aliases: dict[str, str] = dict(DEFAULT_MODEL_SNAPSHOTS)
        with self._lock:
            self._requests.clear()
            self._failures.clear()
            self._break_after = None

    # -- what happened -----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received since the last ``reset()``, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        """The most recent request; LookupError if there was none."""
        with self._lock:
            if not self._requests:
                raise LookupError("the fake OpenAI server has received no request")
            return self._requests[-1]

    # -- failures ----------------------------------------------------------------------------------

    def fail_next(
        self, status: int, *, times: int = 1, headers: Mapping[str, str] | None = None, body: Any = None
    ) -> None:
        """Answer the next ``times`` requests with ``status`` before answering normally again.

        ``body`` is a JSON-able value or str/bytes sent as is; by default the API's error body for that
        status. ``headers`` replace the defaults (for 429 the rate-limit headers with
        ``retry-after-ms: 1``; for other retryable statuses ``retry-after-ms: 1``, so a retrying client
        doesn't sleep through its backoff). Pass ``headers={}`` for a bare response.
        """
        if headers is None:
            if status == 429:
                headers = _RATE_LIMIT_HEADERS
            elif status in (408, 409) or status >= 500:
                headers = {"retry-after-ms": "1"}
            else:
                headers = {}
        if body is None:
            message, type_, param, code = _DEFAULT_ERRORS.get(
                status,
                (
                    f"Request failed with status {status}.",
                    "server_error" if status >= 500 else "invalid_request_error",
                    None,
                    None,
                ),
            )
            payload = _error_body(message, type_, param, code)
        elif isinstance(body, bytes):
            payload = body
        elif isinstance(body, str):
            payload = body.encode()
        else:
            payload = _dumps(body).encode()
        failure = _Failure(status, dict(headers), payload)
        with self._lock:
            self._failures.extend([failure] * times)

    def drop_connection_next(self, times: int = 1) -> None:
        """Read the next ``times`` requests, then close the connection without a response."""
        with self._lock:
            self._failures.extend([_Failure(drop_connection=True)] * times)

    def break_stream_after(self, n_chunks: int) -> None:
        """Cut the next streamed response (SSE events or audio chunks) after ``n_chunks`` pieces."""
        with self._lock:
            self._break_after = n_chunks

    # -- serving -----------------------------------------------------------------------------------

    def _settings(self) -> _Settings:
        calls = tuple((name, args if isinstance(args, str) else _dumps(args)) for name, args in self.tool_calls)
        return _Settings(
            self.reply_text,
            self.stream_chunks,
            calls,
            self.json_reply,
            self.refusal,
            self.cached_tokens,
            self.reasoning_tokens,
            self.model_aliases,
        )

    def _handle(self, handler: _Handler) -> None:
        started = time.perf_counter()
        record, file_sizes, json_error = _read_request(handler)
        with self._lock:
            self._requests.append(record)
            failure = self._failures.popleft() if self._failures else None
        headers = {
            "x-request-id": self._ids("req_", 32),
            "openai-version": _OPENAI_VERSION,
            "openai-organization": "user-fake",
            "openai-project": "proj_fake",
        }
        if failure is not None and failure.drop_connection:
            handler.close_connection = True  # nothing sent: the client sees the connection drop
            return
        if failure is not None:
            self._send(handler, failure.status, failure.body, _JSON, {**headers, **failure.headers})
            return
        if record.method == "GET" and record.path.startswith("/fake-images/"):
            self._send(handler, 200, _PNG, "image/png", headers)
            return
        try:
            reply = self._reply_to(record, file_sizes, json_error)
        except _ApiError as error:
            self._send(handler, error.status, error.body, _JSON, headers)
            return
        headers["openai-processing-ms"] = str(max(1, int((time.perf_counter() - started) * 1000)))
        headers.update(_OK_RATE_LIMIT_HEADERS)
        if reply.stream is None:
            self._send(handler, 200, reply.body, reply.content_type, headers)
        else:
            self._send_stream(handler, reply.stream, reply.content_type, headers)

    def _reply_to(self, record: RecordedRequest, file_sizes: dict[str, int], json_error: bool) -> _Reply:
        builder = _ENDPOINTS.get((record.method, record.endpoint))
        if builder is None and record.method == "GET" and record.endpoint.startswith("/models/"):
            builder = models
        if builder is None or (not record.endpoint):
            raise _ApiError(404, f"Invalid URL ({record.method} {record.path})")
        if json_error:
            raise _ApiError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
                "sent was not valid JSON.)",
            )
        if record.deployment is not None and "api-version" not in record.query:
            raise _ApiError(404, "Resource not found", code="404", type_="not_found")  # Azure's answer
        requested = record.json.get("model") if isinstance(record.json, dict) else record.form.get("model")
        if isinstance(requested, str) and requested in MISSING_MODELS:
            raise _ApiError(
                404,
                f"The model `{requested}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
        call = _Call(
            endpoint=record.endpoint,
            body=record.json if isinstance(record.json, dict) else {},
            form=record.form,
            file_sizes=file_sizes,
            deployment=record.deployment,
            azure=record.is_azure,
            settings=self._settings(),
            ids=self._ids,
            root_url=self.url,
        )
        return builder(call)

    @staticmethod
    def _send(handler: _Handler, status: int, body: bytes, content_type: str, headers: Mapping[str, str]) -> None:
        handler.send_head(status, content_type, headers, len(body))
        handler.wfile.write(body)

    def _send_stream(
        self, handler: _Handler, stream: Iterator[bytes], content_type: str, headers: Mapping[str, str]
    ) -> None:
        with self._lock:
            break_after, self._break_after = self._break_after, None
        handler.send_head(200, content_type, headers, None)
        write = handler.wfile.write
        try:
            for sent, piece in enumerate(stream):
                if sent == break_after:
                    handler.abort()
                    return
                write(b"%x\r\n%s\r\n" % (len(piece), piece))
            write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            # The client stopped reading (closed a stream early): nothing left to send it.
            handler.close_connection = True
