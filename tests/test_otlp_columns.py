"""otlp_columns: an OTLP request → the very Native bytes the per-span path (otlp + columns) writes.

Every case compares ``encode_request`` with ``columns.encode_spans(otlp._spans_of(request).spans)``
byte for byte, and says which path it expects: requests as SDKs send them must take the column
path (the per-span reader is made to fail there), the odd ones the per-span path, whole.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import pytest
from exporter_spans import decode_native, every_kind_of_span, span_batch
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from llmtel.exporter_clickhouse import columns, otlp, otlp_columns
from llmtel.exporter_clickhouse.otlp import JSON_CONTENT_TYPE, PROTOBUF_CONTENT_TYPE

BASE_NS = 1_760_000_000_000_000_000


_SPANS_OF = otlp._spans_of  # the per-span reader, also where a test makes encode_request's copy fail


def per_span_path(request: ExportTraceServiceRequest) -> tuple[bytes, int, str]:
    """What the per-span path gives: the Native block, the rejected count and message."""
    decoded = _SPANS_OF(ExportTraceServiceRequest.FromString(request.SerializeToString()))
    native = columns.encode_spans(decoded.spans).native if decoded.spans else b""
    return native, decoded.rejected, decoded.error_message


@pytest.fixture
def column_path_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The per-span reader fails inside ``encode_request``: what passes took the column path."""
    def refuse(request: Any) -> None:
        raise AssertionError("encode_request took the per-span path")

    monkeypatch.setattr(otlp_columns.otlp, "_spans_of", refuse)
    yield


def encoded(request: ExportTraceServiceRequest, body: bytes | None) -> tuple[bytes, int, str]:
    result = otlp_columns.encode_request(request, body)
    assert result.batch.rows == (len(decode_native(result.batch.native)[1]) if result.batch.rows else 0)
    return result.batch.native, result.rejected, result.error_message


def without_empty_keys(request: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    """The request without attributes named "" (the spec forbids them; the per-span path takes them)."""
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                for holder in [span, *span.events]:
                    for item in [item for item in holder.attributes if not item.key]:
                        holder.attributes.remove(item)
    return request


def test_sdk_requests_take_the_column_path_and_give_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    every_kind = sdk_encode_spans(every_kind_of_span(base_ns=BASE_NS))
    # The SDK's own encoder, with what every_kind_of_span holds: every value type, events, links,
    # trace states, Unicode, long values, an end before the start, a resource without a service name.
    requests = [without_empty_keys(every_kind), sdk_encode_spans(span_batch(300, seed=3)),
                without_empty_keys(sdk_encode_spans(every_kind_of_span(base_ns=BASE_NS)
                                                    + span_batch(50, seed=4, service="other")))]
    expected = [per_span_path(request) for request in requests]
    assert all(native and not rejected for native, rejected, _ in expected)
    monkeypatch.setattr(otlp_columns.otlp, "_spans_of", None)  # calling it would fail
    for request, want in zip(requests, expected, strict=True):
        body = request.SerializeToString()
        assert encoded(ExportTraceServiceRequest.FromString(body), body) == want
        assert encoded(request, None) == want


# --- hand-made requests covering every column case ------------------------------------------------


def any_value(value: Any) -> AnyValue:
    result = AnyValue()
    if value is None:
        return result  # an empty AnyValue
    if isinstance(value, bool):
        result.bool_value = value
    elif isinstance(value, int):
        result.int_value = value
    elif isinstance(value, float):
        result.double_value = value
    elif isinstance(value, str):
        result.string_value = value
    elif isinstance(value, bytes):
        result.bytes_value = value
    elif isinstance(value, dict):
        result.kvlist_value.SetInParent()  # set even when empty
        for key, item in value.items():
            result.kvlist_value.values.add(key=key).value.CopyFrom(any_value(item))
    else:
        result.array_value.SetInParent()
        for item in value:
            result.array_value.values.add().CopyFrom(any_value(item))
    return result


def add_attributes(target: Any, attributes: dict[str, Any] | list[tuple[str, Any]]) -> None:
    for key, value in (attributes.items() if isinstance(attributes, dict) else attributes):
        target.add(key=key).value.CopyFrom(any_value(value))


VALUES: dict[str, Any] = {
    "str": "plain", "empty.str": "", "unicode": "Grüße, 世界 🌍 \u2028", "quotes": 'say "hi"\t\n\\',
    "long": "λ" * 5000, "true": True, "false": False, "int": 42, "int.zero": 0, "int.negative": -7,
    "int.min": -(2**63), "int.max": 2**63 - 1, "float": 0.7, "float.whole": 3.0, "float.zero": 0.0,
    "float.negzero": -0.0, "float.tiny": 1e-7, "float.e21": 1e21, "float.e16": 1e16, "float.nan": math.nan,
    "float.inf": -math.inf, "bytes": b"\x00\xffhi", "bytes.empty": b"", "array": ["stop", "length"],
    "array.mixed": [1, "a", 2.5, True, None, b"\x01", ["nested"], {"k": "v"}], "array.empty": [],
    "array.html": ["<a&b>"], "array.nan": [math.nan], "kvlist": {"z": 1, "a": {"deep": [True]}, "m": None},
    "kvlist.empty": {},
}


def rich_request() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for resource_number in range(3):
        resource_spans = request.resource_spans.add()
        if resource_number == 0:
            add_attributes(resource_spans.resource.attributes, {"service.name": "svc", "host.cores": 2})
        elif resource_number == 1:
            add_attributes(resource_spans.resource.attributes, {"service.name": 5, "dup": "a", "dup ": "b"})
        for scope_number in range(2):
            scope_spans = resource_spans.scope_spans.add()
            if scope_number:
                scope_spans.scope.name, scope_spans.scope.version = "scope.ü", "1.0"
            for kind in [0, 1, 2, 3, 4, 5, 9, -1]:
                number = resource_number * 100 + scope_number * 10 + kind + 2
                span = scope_spans.spans.add(
                    trace_id=bytes([resource_number + 1]) * 16, span_id=number.to_bytes(8, "big"),
                    parent_span_id=(b"" if kind == 0 else b"\x00" * 8 if kind == 1
                                    else (number + 1).to_bytes(8, "big")),
                    name=["", "chat gpt-4o", "日本 span"][number % 3], kind=kind,
                    trace_state="vendor=value,other=x:y" if kind == 2 else "",
                    start_time_unix_nano=BASE_NS + number, end_time_unix_nano=BASE_NS + number * (1000 if kind else 0),
                )
                add_attributes(span.attributes, VALUES if kind == 3 else {"n": number, "k": f"v{kind}"})
                span.status.code = [0, 1, 2, 7][number % 4]
                span.status.message = "it broke: \"badly\"" if number % 4 == 2 else ""
                if kind == 4:
                    for event_number in range(3):
                        event = span.events.add(time_unix_nano=BASE_NS + event_number, name=f"event {event_number}")
                        add_attributes(event.attributes, {"e": event_number, "arr": ["a"]} if event_number else {})
                if kind == 5:
                    link = span.links.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, trace_state="a=b")
                    add_attributes(link.attributes, [("kind", "follows"), ("n", 2.5), ("kind", "again")])
                    span.links.add(trace_id=b"\x05" * 3, span_id=b"")
    return request


def test_every_column_case_gives_the_same_bytes_on_the_column_path(column_path_only: None) -> None:
    request = rich_request()
    expected = per_span_path(request)
    body = request.SerializeToString()
    assert encoded(ExportTraceServiceRequest.FromString(body), body) == expected
    names, rows = decode_native(expected[0])
    assert len(rows) == 48
    kinds = {row[names.index("SpanKind")] for row in rows}
    assert kinds == {"Unspecified", "Internal", "Server", "Client", "Producer", "Consumer"}
    maps = [row[names.index("SpanAttributes")] for row in rows]
    attributes = next(attributes for attributes in maps if "array.mixed" in attributes)
    assert attributes["float.e21"] == "1e+21"
    assert attributes["array.mixed"] == '[1,"a",2.5,true,null,"AQ==",["nested"],{"k":"v"}]'


def test_json_requests_take_the_column_path(column_path_only: None) -> None:
    body = (b'{"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "j"}}]},'
            b' "scopeSpans": [{"spans": [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",'
            b' "name": "json", "kind": 3, "startTimeUnixNano": "1750000000000000000",'
            b' "endTimeUnixNano": 1750000000000001000,'
            b' "attributes": [{"key": "d", "value": {"doubleValue": 1e21}}, {"key": "i", "value": {"intValue": "42"}}],'
            b' "links": [{"traceId": "00000000000000000000000000000001", "spanId": "0000000000000002",'
            b' "traceState": "a=b"}]}]}]}]}')
    request = otlp.parse_request(body, JSON_CONTENT_TYPE)
    assert encoded(request, None) == per_span_path(request)


# --- what only the per-span path writes exactly --------------------------------------------------


def simple_request(count: int = 3) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    for number in range(1, count + 1):
        span = scope_spans.spans.add(trace_id=b"\x0a" * 16, span_id=number.to_bytes(8, "big"), name="s", kind=1,
                                     start_time_unix_nano=BASE_NS, end_time_unix_nano=BASE_NS + 5)
        add_attributes(span.attributes, {"a": number, "b": "x"})
        add_attributes(span.events.add(time_unix_nano=BASE_NS, name="e").attributes, {"c": 1})
    return request


def broken(change: str) -> ExportTraceServiceRequest:
    request = simple_request()
    spans = request.resource_spans[0].scope_spans[0].spans
    if change == "short span id":
        spans[1].span_id = b"\x01\x02"
    elif change == "zero trace id":
        spans[0].trace_id = bytes(16)
    elif change == "long parent id":
        spans[2].parent_span_id = b"\x01" * 9
    elif change == "end past 2262":
        spans[1].end_time_unix_nano = (1 << 64) - 1
    elif change == "event past 2262":
        spans[2].events[0].time_unix_nano = 1 << 63
    elif change == "repeated span key":
        add_attributes(spans[1].attributes, [("a", "again")])
    elif change == "repeated event key":
        add_attributes(spans[0].events[0].attributes, [("c", "again")])
    elif change == "empty key":
        add_attributes(spans[0].attributes, [("", "no key")])
    elif change == "attribute without value":
        spans[1].attributes.append(KeyValue(key="novalue"))
    elif change == "empty value":
        add_attributes(spans[2].attributes, [("empty", None)])
    return request


@pytest.mark.parametrize("change", [
    "short span id", "zero trace id", "long parent id", "end past 2262", "event past 2262", "repeated span key",
    "repeated event key", "empty key", "attribute without value", "empty value",
])
def test_odd_requests_take_the_per_span_path_and_get_its_answer(change: str) -> None:
    request = broken(change)
    expected = per_span_path(request)
    body = request.SerializeToString()
    assert encoded(ExportTraceServiceRequest.FromString(body), body) == expected
    if change.endswith(("id", "2262")):
        assert expected[1] == 1 and expected[2].startswith("1 span(s) rejected: ")
        assert len(decode_native(expected[0])[1]) == 2


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, written by hand."""
    def varint(value: int) -> bytes:
        out = bytearray()
        while value >= 0x80:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
        return bytes(out)

    return varint(number << 3 | 2) + varint(len(payload)) + payload


def request_body(span: bytes) -> bytes:
    # ExportTraceServiceRequest.resource_spans (1) → ResourceSpans.scope_spans (2) → ScopeSpans.spans (2)
    return field(1, field(2, field(2, span)))


@pytest.mark.parametrize("case", ["fields out of order", "a value with two fields", "a value with an unknown field"])
def test_a_body_the_columns_cannot_line_up_takes_the_per_span_path(case: str) -> None:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    ids = Span(trace_id=b"\x0b" * 16, span_id=b"\x0c" * 8, start_time_unix_nano=BASE_NS).SerializeToString()
    if case == "fields out of order":
        span = Span(name="late name").SerializeToString() + ids
    elif case == "a value with two fields":
        # Both fields of the oneof are sent; protobuf keeps the last one.
        value = AnyValue(string_value="first").SerializeToString() + AnyValue(int_value=7).SerializeToString()
        span = ids + field(9, field(1, b"k") + field(2, value))
    else:
        # A field this OTLP version does not know (number 15), after the string: it re-serializes
        # to itself, yet the value's bytes are no longer only the string's.
        value = AnyValue(string_value="7").SerializeToString() + b"\x78\x01"
        span = ids + field(9, field(1, b"k") + field(2, value))
    body = request_body(span)
    request = otlp.parse_request(body, PROTOBUF_CONTENT_TYPE)
    assert (request.SerializeToString() == body) is (case == "a value with an unknown field")
    expected = per_span_path(request)
    assert encoded(request, body) == expected
    names, rows = decode_native(expected[0])
    if case != "fields out of order":
        assert rows[0][names.index("SpanAttributes")] == {"k": "7"}
    else:
        assert rows[0][names.index("SpanName")] == "late name"


def test_an_empty_request_holds_no_rows() -> None:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add()
    result = otlp_columns.encode_request(request, request.SerializeToString())
    assert (result.batch.rows, result.rejected, result.error_message) == (0, 0, "")


# --- many random requests ---------------------------------------------------------------------------


def random_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(10 if depth < 2 else 7)
    if choice == 0:
        return rng.choice(["", "a", "chat", "ü€𝄞", "x" * rng.randrange(300)])
    if choice == 1:
        return rng.random() < 0.5
    if choice == 2:
        return rng.randint(-(2**63), 2**63 - 1) if rng.random() < 0.3 else rng.randrange(5000)
    if choice == 3:
        return rng.choice([rng.random(), rng.uniform(-1e25, 1e25), float(rng.randrange(100)), 1e-9, 0.1 + 0.2])
    if choice == 4:
        return rng.randbytes(rng.randrange(20))
    if choice == 5:
        return f"id-{rng.getrandbits(64):x}"
    if choice == 6:
        return rng.choice([0.5, 1.0, 1e16, 123.0])
    if choice in (7, 8):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {f"k{n}": random_value(rng, depth + 1) for n in range(rng.randrange(3))}


def random_request(rng: random.Random) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    keys = [f"gen_ai.key.{n}" for n in range(30)]
    for _ in range(rng.randrange(1, 3)):
        resource_spans = request.resource_spans.add()
        add_attributes(resource_spans.resource.attributes, {"service.name": rng.choice(["a", "b"])})
        for _ in range(rng.randrange(1, 3)):
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = rng.choice(["", "s"])
            for _ in range(rng.randrange(1, 40)):
                span = scope_spans.spans.add(
                    trace_id=rng.randbytes(15) + b"\x01", span_id=rng.randbytes(7) + b"\x01",
                    parent_span_id=rng.choice([b"", rng.randbytes(8)]), name=rng.choice(["chat", "tool", ""]),
                    kind=rng.randrange(7), start_time_unix_nano=BASE_NS + rng.randrange(10**12),
                    end_time_unix_nano=BASE_NS + rng.randrange(10**12), trace_state=rng.choice(["", "a=b"]),
                )
                add_attributes(span.attributes, {key: random_value(rng) for key in rng.sample(keys, rng.randrange(20))})
                span.status.code = rng.randrange(4)
                span.status.message = rng.choice(["", "", "boom"])
                for _ in range(rng.randrange(3)):
                    event = span.events.add(time_unix_nano=BASE_NS + rng.randrange(10**9), name=rng.choice(["e", "ü"]))
                    chosen = rng.sample(keys, rng.randrange(3))
                    add_attributes(event.attributes, {key: random_value(rng) for key in chosen})
                if rng.random() < 0.1:
                    link = span.links.add(trace_id=rng.randbytes(16), span_id=rng.randbytes(8))
                    add_attributes(link.attributes, {"l": random_value(rng)})
    return request


def test_random_requests_give_the_same_bytes_on_the_column_path(column_path_only: None) -> None:
    rng = random.Random(20261122)
    for _ in range(60):
        request = random_request(rng)
        expected = per_span_path(request)
        body = request.SerializeToString()
        assert encoded(ExportTraceServiceRequest.FromString(body), body) == expected
