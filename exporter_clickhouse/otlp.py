"""OTLP/HTTP trace requests → spans the column encoder takes, and the answers OTLP expects.

``parse_request(body, content_type)`` reads an ``ExportTraceServiceRequest`` in either OTLP/HTTP
encoding (binary protobuf, or OTLP/JSON with hex ids and enums as numbers);
``decode_request(body, content_type)`` returns its valid spans plus how many were rejected and
why. The spans are small read-only objects with exactly the attributes ``columns.encode_spans``
reads from an SDK ``ReadableSpan`` (``context``, ``parent``, ``kind``, ``status``, ``resource``,
``_attributes``, ``_events``, ``_links``, ...), so received spans go through the exporter's one
encoder, spool and store unchanged, and their rows match what the Collector writes for the same
OTLP. (``llmtel serve`` encodes parsed requests with ``otlp_columns``, which writes the same
bytes without making these objects, and uses them for what only they express exactly.)

Attribute values become the Python values whose ``columns.as_string`` text is pdata's
``Value.AsString()``: strings, bools, ints, floats and bytes as themselves, arrays as tuples
and key-value lists as dicts (both then JSON), an empty value as ``None``.

OTLP's ``SPAN_KIND_UNSPECIFIED`` (0), and any kind value the spec does not define, is stored as
``Unspecified``, as the Collector writes it.

Spec: https://opentelemetry.io/docs/specs/otlp/#otlphttp (partial success, JSON encoding).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, NamedTuple

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from llmtel.exporter_clickhouse.columns import SPAN_KIND_UNSPECIFIED

__all__ = [
    "JSON_CONTENT_TYPE",
    "PROTOBUF_CONTENT_TYPE",
    "DecodedRequest",
    "OtlpDecodeError",
    "ReceivedSpan",
    "decode_request",
    "encode_response",
    "encode_status",
    "media_type",
    "parse_request",
]

PROTOBUF_CONTENT_TYPE = "application/x-protobuf"
JSON_CONTENT_TYPE = "application/json"


class OtlpDecodeError(ValueError):
    """The body is not an OTLP trace request in the encoding it claims (HTTP 400)."""


class _EnumValue:
    """Stands for an SDK enum member: the encoder reads ``_value_`` only."""

    __slots__ = ("_value_",)

    def __init__(self, value: int) -> None:
        self._value_ = value


# OTLP SpanKind 1..5 (INTERNAL..CONSUMER) → the Python SDK's SpanKind values 0..4; 0
# (UNSPECIFIED) and unknown values → the encoder's extra "Unspecified" index.
_KINDS = (_EnumValue(SPAN_KIND_UNSPECIFIED),) + tuple(_EnumValue(otlp_kind - 1) for otlp_kind in range(1, 6))
# OTLP StatusCode (UNSET, OK, ERROR) has the SDK's numbering.
_STATUS_CODES = tuple(_EnumValue(code) for code in range(3))


class _TraceState(str):
    """A W3C tracestate header as received; the encoder calls ``to_header()`` when it is not empty."""

    __slots__ = ()

    def to_header(self) -> str:
        return str(self)


_NO_TRACE_STATE = _TraceState("")


class _SpanContext:
    __slots__ = ("span_id", "trace_id", "trace_state")

    def __init__(self, trace_id: int, span_id: int, trace_state: _TraceState) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.trace_state = trace_state


class _Parent:
    __slots__ = ("span_id",)

    def __init__(self, span_id: int) -> None:
        self.span_id = span_id


class _Status:
    __slots__ = ("description", "status_code")

    def __init__(self, code: int, description: str) -> None:
        self.status_code = _STATUS_CODES[code] if 0 <= code < 3 else _STATUS_CODES[0]
        self.description = description


class _Resource:
    __slots__ = ("attributes",)

    def __init__(self, attributes: dict[str, Any]) -> None:
        self.attributes = attributes


class _Scope:
    __slots__ = ("name", "version")

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version


class _Event:
    __slots__ = ("attributes", "name", "timestamp")

    def __init__(self, timestamp: int, name: str, attributes: dict[str, Any]) -> None:
        self.timestamp = timestamp
        self.name = name
        self.attributes = attributes


class _Link:
    __slots__ = ("attributes", "context")

    def __init__(self, context: _SpanContext, attributes: dict[str, Any]) -> None:
        self.context = context
        self.attributes = attributes


class ReceivedSpan:
    """One received span, shaped like the parts of an SDK ``ReadableSpan`` the encoder reads."""

    __slots__ = (
        "_attributes", "_events", "_links", "context", "end_time", "instrumentation_scope", "kind", "name",
        "parent", "resource", "start_time", "status",
    )

    def __init__(
        self, context: _SpanContext, parent: _Parent | None, name: str, kind: _EnumValue, start_time: int,
        end_time: int, resource: _Resource, instrumentation_scope: _Scope, attributes: dict[str, Any],
        status: _Status, events: list[_Event], links: list[_Link],
    ) -> None:
        self.context = context
        self.parent = parent
        self.name = name
        self.kind = kind
        self.start_time = start_time
        self.end_time = end_time
        self.resource = resource
        self.instrumentation_scope = instrumentation_scope
        self._attributes = attributes
        self.status = status
        self._events = events
        self._links = links


class DecodedRequest(NamedTuple):
    spans: list[ReceivedSpan]
    rejected: int
    error_message: str  # why spans were rejected ("" when none were)


def media_type(content_type: str) -> str:
    """``application/json; charset=utf-8`` → ``application/json``."""
    return content_type.split(";", 1)[0].strip().lower()


def decode_request(body: bytes, content_type: str) -> DecodedRequest:
    """The spans of one OTLP/HTTP trace request; ``OtlpDecodeError`` when the body is malformed."""
    return _spans_of(parse_request(body, content_type))


def parse_request(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """One OTLP/HTTP trace request as its protobuf message; ``OtlpDecodeError`` when the body is malformed.

    ``otlp_columns.encode_request`` turns it into a Native block; ``decode_request`` into spans.
    """
    kind = media_type(content_type)
    request = ExportTraceServiceRequest()
    if kind == PROTOBUF_CONTENT_TYPE:
        try:
            request.ParseFromString(body)
        except (DecodeError, RuntimeError, ValueError) as error:
            # upb also refuses invalid UTF-8 in string fields here, as proto3 requires.
            raise OtlpDecodeError(f"the body is not a valid OTLP protobuf ExportTraceServiceRequest: {error}") from None
    elif kind == JSON_CONTENT_TYPE:
        _parse_json(body, request)
    else:
        raise OtlpDecodeError(
            f"unsupported Content-Type {content_type or '(none)'!r}: "
            f"send {PROTOBUF_CONTENT_TYPE} or {JSON_CONTENT_TYPE}"
        )
    return request


def encode_response(rejected: int, error_message: str, content_type: str) -> bytes:
    """An ``ExportTraceServiceResponse`` in the request's encoding, with partial success when spans were rejected."""
    response = ExportTraceServiceResponse()
    if rejected or error_message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = error_message
    if media_type(content_type) == JSON_CONTENT_TYPE:
        return json_format.MessageToJson(response, indent=None).encode()
    return response.SerializeToString()


def encode_status(code: int, message: str, content_type: str) -> bytes:
    """A ``google.rpc.Status``: OTLP's body for 4xx and 5xx answers, in the request's encoding."""
    status = status_pb2.Status(code=code, message=message)
    if media_type(content_type) == JSON_CONTENT_TYPE:
        return json_format.MessageToJson(status, indent=None).encode()
    return status.SerializeToString()


# --- OTLP/JSON -----------------------------------------------------------------------------


def _parse_json(body: bytes, request: ExportTraceServiceRequest) -> None:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise OtlpDecodeError(f"the body is not valid UTF-8 JSON: {error}") from None
    if not isinstance(document, dict):
        raise OtlpDecodeError("the body is not an OTLP/JSON ExportTraceServiceRequest object")
    try:
        for resource_spans in _items(document, "resourceSpans", "resource_spans"):
            for scope_spans in _items(resource_spans, "scopeSpans", "scope_spans"):
                for span in _items(scope_spans, "spans"):
                    _hex_ids_to_base64(span)
                    for link in _items(span, "links"):
                        _hex_ids_to_base64(link)
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, AttributeError, ValueError) as error:
        raise OtlpDecodeError(f"the body is not an OTLP/JSON ExportTraceServiceRequest: {error}") from None


def _items(container: Any, *names: str) -> list[Any]:
    if not isinstance(container, dict):
        return []
    for name in names:
        value = container.get(name)
        if isinstance(value, list):
            return value
    return []


_ID_FIELDS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")


def _hex_ids_to_base64(item: Any) -> None:
    # OTLP/JSON writes ids as hex (a deviation from protobuf's JSON mapping, which uses base64).
    # An id that is not hex becomes empty, so that span is rejected on its own.
    if not isinstance(item, dict):
        return
    for name in _ID_FIELDS:
        value = item.get(name)
        if isinstance(value, str):
            try:
                raw = binascii.unhexlify(value)
            except (binascii.Error, ValueError):
                raw = b""
            item[name] = base64.b64encode(raw).decode("ascii")


# --- request → spans -----------------------------------------------------------------------


def _value(any_value: Any) -> Any:
    """An OTLP AnyValue as the Python value whose ``as_string`` is pdata's AsString()."""
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_value(item) for item in any_value.array_value.values)
    if kind == "kvlist_value":
        return {item.key: _value(item.value) for item in any_value.kvlist_value.values}
    return getattr(any_value, kind)


class _KnownAttributes(dict):
    """Serialized KeyValue → (key, value): attributes repeat across spans (operation, model, system).

    Reading a key and a value through the protobuf accessors costs several calls per attribute;
    serializing the KeyValue is one C call, and a hit skips the rest. Bounded: ids and counts
    make most values unique, and those must not grow it forever.
    """

    def remember(self, raw: bytes, item: Any) -> tuple[str, Any]:
        value = item.value
        kind = value.WhichOneof("value")
        pair = (item.key, value.string_value if kind == "string_value" else _value(value))
        if len(raw) <= 256:
            if len(self) >= 16384:
                self.clear()
            self[raw] = pair
        return pair


_KNOWN_ATTRIBUTES = _KnownAttributes()


def _attributes(key_values: Any) -> dict[str, Any]:
    known = _KNOWN_ATTRIBUTES
    attributes: dict[str, Any] = {}
    for item in key_values:
        raw = item.SerializeToString()
        pair = known.get(raw)
        if pair is None:
            pair = known.remember(raw, item)
        attributes[pair[0]] = pair[1]
    return attributes


def _trace_state(text: str, states: dict[str, _TraceState]) -> _TraceState:
    if not text:
        return _NO_TRACE_STATE
    state = states.get(text)
    if state is None:
        state = states[text] = _TraceState(text)
    return state


# Timestamps are stored as DateTime64(9) (signed 64-bit nanoseconds); OTLP's fixed64 can hold more.
_MAX_TIME = (1 << 63) - 1


def _problem(trace_id: bytes, span_id: bytes, parent_span_id: bytes) -> str:
    """Why a span with these ids cannot be stored, or ``""``."""
    if len(trace_id) != 16 or not any(trace_id):
        return "trace_id must be 16 bytes and not all zero"
    if len(span_id) != 8 or not any(span_id):
        return "span_id must be 8 bytes and not all zero"
    if len(parent_span_id) not in (0, 8):
        return "parent_span_id must be empty or 8 bytes"
    return ""


def _spans_of(request: ExportTraceServiceRequest) -> DecodedRequest:
    spans: list[ReceivedSpan] = []
    append = spans.append
    rejected = 0
    first_problem = ""
    states: dict[str, _TraceState] = {}
    statuses: dict[tuple[int, str], _Status] = {}
    from_bytes = int.from_bytes
    attributes_of = _attributes
    kinds = _KINDS
    for resource_spans in request.resource_spans:
        resource = _Resource(attributes_of(resource_spans.resource.attributes))
        for scope_spans in resource_spans.scope_spans:
            scope = _Scope(scope_spans.scope.name, scope_spans.scope.version)
            for span in scope_spans.spans:
                trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
                if len(trace_id) != 16 or len(span_id) != 8 or len(parent) not in (0, 8) or not (
                    any(trace_id) and any(span_id)
                ):
                    rejected += 1
                    if not first_problem:
                        first_problem = f"{_problem(trace_id, span_id, parent)} (span {span.name!r})"
                    continue
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                events = span.events
                if start > _MAX_TIME or end > _MAX_TIME or (events and any(
                        event.time_unix_nano > _MAX_TIME for event in events)):
                    rejected += 1
                    if not first_problem:
                        first_problem = f"a time is past the year 2262 (span {span.name!r})"
                    continue
                status = span.status
                status_key = (status.code, status.message)
                received_status = statuses.get(status_key)
                if received_status is None:
                    received_status = statuses[status_key] = _Status(*status_key)
                kind = span.kind
                links = span.links
                append(ReceivedSpan(
                    _SpanContext(from_bytes(trace_id, "big"), from_bytes(span_id, "big"),
                                 _trace_state(span.trace_state, states)),
                    _Parent(from_bytes(parent, "big")) if parent else None,
                    span.name,
                    kinds[kind] if 0 <= kind < 6 else kinds[0],
                    start,
                    end,
                    resource,
                    scope,
                    attributes_of(span.attributes),
                    received_status,
                    [_Event(event.time_unix_nano, event.name, attributes_of(event.attributes)) for event in events]
                    if events else [],
                    [_link(link, states) for link in links] if links else [],
                ))
    message = f"{rejected} span(s) rejected: {first_problem}" if rejected else ""
    return DecodedRequest(spans, rejected, message)


def _link(link: Any, states: dict[str, _TraceState]) -> _Link:
    context = _SpanContext(int.from_bytes(link.trace_id, "big"), int.from_bytes(link.span_id, "big"),
                           _trace_state(link.trace_state, states))
    return _Link(context, _attributes(link.attributes))
