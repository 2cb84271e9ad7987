"""Spans for the ClickHouse exporter's tests, and the values the Collector would store for them.

``every_kind_of_span()`` builds finished SDK spans covering what ``otel_traces`` must carry: every
span kind and status, roots and children, trace state, events and links with attributes, every
attribute value type (arrays, bytes, floats at Go's format boundaries), Unicode, quotes, very long
and empty values. ``expected_rows(spans)`` gives each span's row as plain Python values written
out by hand from pdata's rules, not from the exporter's code. ``decode_native(data)`` reads a
Native block back with clickhouse-connect's own decoder, and ``ROW_QUERY`` reads stored rows in
the same shape (nanosecond timestamps as integers), so a test compares like with like.

``span_batch(n)`` makes ``n`` LLM-shaped spans (about 20 attributes, events), for volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

LONG_VALUE = "λ" * 50_000 + "end"
RESOURCE = Resource({"service.name": "exporter-tests", "service.version": "1.2.3", "host.cores": 2})
SCOPE = InstrumentationScope("tests.scope", "0.9")

# Attribute value → the text pdata's Value.AsString() gives (pdata/pcommon/value.go).
ATTRIBUTE_CASES: dict[str, tuple[Any, str]] = {
    "str": ("plain", "plain"),
    "empty": ("", ""),
    "unicode": ("Grüße, 世界 🌍", "Grüße, 世界 🌍"),
    "quotes": ("say \"hi\" it's \\ done\t\n", "say \"hi\" it's \\ done\t\n"),
    "long": (LONG_VALUE, LONG_VALUE),
    "bool.true": (True, "true"),
    "bool.false": (False, "false"),
    "int": (42, "42"),
    "int.negative": (-7, "-7"),
    "int.big": (2**62, "4611686018427387904"),
    "float.tenth": (0.1, "0.1"),
    "float.whole": (3.0, "3"),
    "float.sum": (0.1 + 0.2, "0.30000000000000004"),
    "float.small": (1e-7, "1e-7"),
    "float.small2": (1.5e-7, "1.5e-7"),
    "float.edge": (1e-6, "0.000001"),
    "float.mid": (0.000123, "0.000123"),
    "float.e16": (1e16, "10000000000000000"),
    "float.e20": (1e20, "100000000000000000000"),
    "float.e21": (1e21, "1e+21"),
    "float.negzero": (-0.0, "-0"),
    "float.nan": (float("nan"), "json: unsupported value: NaN"),
    "float.inf": (float("inf"), "json: unsupported value: +Inf"),
    "bytes": (b"\x00\xffhi", "AP9oaQ=="),
    "array.str": (("stop", "length"), '["stop","length"]'),
    "array.html": (("<a&b>", 'q"\n'), '["\\u003ca\\u0026b\\u003e","q\\"\\n"]'),
    "array.unicode": (("é", "世"), '["é","世"]'),
    "array.int": ((1, -2, 3), "[1,-2,3]"),
    "array.bool": ((True, False), "[true,false]"),
    "array.float": ((0.5, 1.0, 1e21, 1e-7), "[0.5,1,1e+21,1e-7]"),
    "array.empty": ((), "[]"),
    "": ("empty key", "empty key"),
}
ATTRIBUTES = {key: value for key, (value, _) in ATTRIBUTE_CASES.items()}
ATTRIBUTE_TEXTS = {key: text for key, (_, text) in ATTRIBUTE_CASES.items()}

# Columns as stored, nanoseconds as integers, in the exporter's insert order.
ROW_QUERY = """
SELECT toUnixTimestamp64Nano(Timestamp), TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind,
       ServiceName, ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode,
       StatusMessage, arrayMap(t -> toUnixTimestamp64Nano(t), Events.Timestamp), Events.Name,
       Events.Attributes, Links.TraceId, Links.SpanId, Links.TraceState, Links.Attributes
FROM {table} ORDER BY SpanId
"""

_KIND_NAMES = {
    SpanKind.INTERNAL: "Internal", SpanKind.SERVER: "Server", SpanKind.CLIENT: "Client",
    SpanKind.PRODUCER: "Producer", SpanKind.CONSUMER: "Consumer",
}
_STATUS_NAMES = {StatusCode.UNSET: "Unset", StatusCode.OK: "Ok", StatusCode.ERROR: "Error"}


def _context(trace_id: int, span_id: int, state: TraceState | None = None) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1), trace_state=state)


def every_kind_of_span(base_ns: int = 1_750_000_000_123_456_789) -> list[ReadableSpan]:
    """Finished spans with every column case; span ids sort in list order."""
    trace_id = 0x0AF7651916CD43DD8448EB211C80319C
    root = _context(trace_id, 0x00F067AA0BA902B7, TraceState([("vendor", "value"), ("other", "x:y")]))
    spans = [
        ReadableSpan(
            name="root", context=root, parent=None, resource=RESOURCE, attributes=ATTRIBUTES,
            kind=SpanKind.SERVER, status=Status(StatusCode.OK), start_time=base_ns, end_time=base_ns + 1_500_000_001,
            instrumentation_scope=SCOPE,
            events=[
                Event("first", {"k": "v", "n": 1, "arr": ("a",)}, timestamp=base_ns + 10),
                Event("empty", {}, timestamp=base_ns + 20),
                Event("ünïcode \"quoted\"", {"long": LONG_VALUE, "": ""}, timestamp=base_ns + 30),
            ],
            links=[
                Link(_context(0x1, 0x2, TraceState([("a", "b")])), {"link.kind": "follows", "n": 2.5}),
                Link(_context(0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF), {}),
            ],
        )
    ]
    for number, kind in enumerate(SpanKind, start=1):
        status = (Status(StatusCode.ERROR, "it broke: \"badly\"") if number % 2 else Status(StatusCode.UNSET))
        spans.append(
            ReadableSpan(
                name=f"child {kind.name.lower()} 日本", context=_context(trace_id, 0x0100000000000000 + number),
                parent=root, resource=RESOURCE, attributes={"n": number, "empty": ""}, kind=kind, status=status,
                start_time=base_ns + number, end_time=base_ns + number * 1000, instrumentation_scope=SCOPE,
            )
        )
    # No scope, no attributes, no resource service.name; an end before the start.
    spans.append(
        ReadableSpan(
            name="", context=_context(trace_id + 1, 0x0F00000000000000), parent=None,
            resource=Resource({"service.name": 5}), attributes=None, kind=SpanKind.INTERNAL,
            start_time=base_ns + 5, end_time=base_ns, instrumentation_scope=None,
        )
    )
    return spans


def expected_rows(spans: Sequence[ReadableSpan]) -> list[tuple]:
    """The rows the Collector writes for ``spans``, from pdata's rules, ordered by SpanId."""
    rows = []
    for span in spans:
        context = span.context
        attributes = span._attributes  # the very mapping given, so ATTRIBUTES is recognised
        resource_service = span.resource.attributes.get("service.name")
        rows.append((
            span.start_time,
            f"{context.trace_id:032x}",
            f"{context.span_id:016x}",
            f"{span.parent.span_id:016x}" if span.parent else "",
            ",".join(f"{key}={value}" for key, value in context.trace_state.items()),
            span.name,
            _KIND_NAMES[span.kind],
            resource_service if isinstance(resource_service, str) else "",
            _texts(span.resource.attributes),
            span.instrumentation_scope.name if span.instrumentation_scope else "",
            (span.instrumentation_scope.version or "") if span.instrumentation_scope else "",
            _texts(attributes),
            max(0, span.end_time - span.start_time),
            _STATUS_NAMES[span.status.status_code],
            span.status.description or "",
            [event.timestamp for event in span.events],
            [event.name for event in span.events],
            [_texts(event.attributes) for event in span.events],
            [f"{link.context.trace_id:032x}" for link in span.links],
            [f"{link.context.span_id:016x}" for link in span.links],
            [",".join(f"{k}={v}" for k, v in link.context.trace_state.items()) for link in span.links],
            [_texts(link.attributes) for link in span.links],
        ))
    return sorted(rows, key=lambda row: row[2])


def _texts(attributes: Any) -> dict[str, str]:
    """Expected texts of an attribute mapping: ``ATTRIBUTES`` by its table, the few plain values used elsewhere."""
    if attributes is ATTRIBUTES:
        return dict(ATTRIBUTE_TEXTS)
    plain = {("a",): '["a"]', 2.5: "2.5"}
    texts = {}
    for key, value in (attributes or {}).items():
        if isinstance(value, bool):
            texts[key] = "true" if value else "false"
        elif isinstance(value, (str, int)):
            texts[key] = str(value)
        else:
            texts[key] = plain[value]
    return texts


def decode_native(data: bytes) -> tuple[tuple[str, ...], list[tuple]]:
    """(column names, rows) of a Native block, read by clickhouse-connect's decoder."""
    from clickhouse_connect.driver.ctypes import RespBuffCls
    from clickhouse_connect.driver.query import QueryContext
    from clickhouse_connect.driver.transform import NativeTransform

    class _Source:
        gen = property(lambda self: iter([data]))

        def close(self) -> None:
            pass

    context = QueryContext(query_formats={"DateTime64": "int", "Array(DateTime64)": "int"})
    result = NativeTransform.parse_response(RespBuffCls(_Source()), context)
    return tuple(result.column_names), list(result.result_rows)


def span_batch(count: int, *, seed: int = 7, service: str = "batch-app") -> list[ReadableSpan]:
    """``count`` finished LLM-like spans (chat calls with usage, cost, events); random ids, so batches
    made with different seeds do not share span ids."""
    import random

    rng = random.Random(seed)
    resource = Resource({"service.name": service, "deployment.environment": "test"})
    scope = InstrumentationScope("llmtel.instrumentation.openai", "0.1.0")
    models = ("gpt-4o-mini", "gpt-4o", "o3-mini")
    spans = []
    base = 1_750_000_000_000_000_000
    for number in range(count):
        model = models[number % len(models)]
        start = base + number * 1_000_000
        trace_id = rng.getrandbits(128) or 1
        attributes = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
            "gen_ai.response.model": f"{model}-2024-07-18", "server.address": "api.openai.com", "server.port": 443,
            "gen_ai.request.temperature": 0.7, "gen_ai.request.max_tokens": 512,
            "gen_ai.usage.input_tokens": rng.randint(10, 5000), "gen_ai.usage.output_tokens": rng.randint(1, 900),
            "gen_ai.usage.cost": round(rng.random() / 100, 9), "gen_ai.response.finish_reasons": ("stop",),
            "gen_ai.response.id": f"chatcmpl-{rng.getrandbits(64):016x}", "gen_ai.request.stream": bool(number % 2),
            "gen_ai.conversation.id": f"conv-{number // 10}", "user.id": f"user-{number % 97}",
            "session.id": f"session-{number % 13}", "llmtel.tags": '["batch"]',
            "gen_ai.response.time_to_first_chunk": 0.123, "batch.number": number,
        }
        events = [Event("gen_ai.choice", {"index": 0, "finish_reason": "stop"}, timestamp=start + 500)]
        if number % 3 == 0:
            events.append(Event("exception", {"exception.type": "RateLimitError"}, timestamp=start + 600))
        spans.append(
            ReadableSpan(
                name=f"chat {model}", context=_context(trace_id, rng.getrandbits(64) or 1), parent=None,
                resource=resource,
                attributes=attributes, kind=SpanKind.CLIENT, status=Status(StatusCode.UNSET),
                start_time=start, end_time=start + rng.randint(1_000_000, 2_000_000_000),
                instrumentation_scope=scope, events=events,
            )
        )
    return spans
