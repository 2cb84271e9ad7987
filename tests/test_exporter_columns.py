"""columns: spans → one Native block with the values the Collector writes (decoded by clickhouse-connect)."""

from __future__ import annotations

import math

import pytest
from exporter_spans import ATTRIBUTE_CASES, decode_native, every_kind_of_span, expected_rows, span_batch
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from llmtel.exporter_clickhouse.columns import (
    INSERT_COLUMN_NAMES,
    as_string,
    encode_spans,
    format_double,
)


@pytest.mark.parametrize(("key", "case"), sorted(ATTRIBUTE_CASES.items()))
def test_attribute_values_are_text_as_pdata_as_string_writes_them(key: str, case: tuple) -> None:
    value, text = case
    assert as_string(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.1, "0.1"), (1.0, "1"), (100.0, "100"), (2.5, "2.5"), (-2.5, "-2.5"), (12345678.9, "12345678.9"),
        (1e-7, "1e-7"), (-1e-7, "-1e-7"), (1.5e-7, "1.5e-7"), (1e-10, "1e-10"), (1e-100, "1e-100"),
        (5e-324, "5e-324"), (1e-6, "0.000001"), (1.5e-5, "0.000015"), (0.0001, "0.0001"),
        (1e15, "1000000000000000"), (1e16, "10000000000000000"), (1.2345678901234568e20, "123456789012345680000"),
        (1e21, "1e+21"), (1.2345e21, "1.2345e+21"), (1.7976931348623157e308, "1.7976931348623157e+308"),
        (0.0, "0"), (-0.0, "-0"), (math.inf, "json: unsupported value: +Inf"),
        (-math.inf, "json: unsupported value: -Inf"), (math.nan, "json: unsupported value: NaN"),
    ],
)
def test_doubles_match_gos_float64_as_string(value: float, text: str) -> None:
    assert format_double(value) == text


def test_sequences_with_nan_cannot_be_marshalled_and_become_empty_like_in_go() -> None:
    assert as_string((1.0, math.nan)) == ""
    assert as_string([1, 2]) == "[1,2]"
    assert as_string(("a", None)) == '["a",null]'
    assert as_string({"b": 1, "a": [True]}) == '{"a":[true],"b":1}'


def test_every_kind_of_span_decodes_to_the_collectors_values() -> None:
    spans = every_kind_of_span()
    batch = encode_spans(spans)
    names, rows = decode_native(batch.native)
    assert batch.rows == len(spans)
    assert names == INSERT_COLUMN_NAMES
    assert sorted(rows, key=lambda row: row[2]) == expected_rows(spans)


def test_kinds_and_status_names_are_pdatas() -> None:
    rows = {row[5]: row for row in decode_native(encode_spans(every_kind_of_span()).native)[1]}
    assert rows["root"][6:7] == ("Server",) and rows["root"][13] == "Ok"
    assert {row[6] for row in rows.values()} == {"Internal", "Server", "Client", "Producer", "Consumer"}
    assert rows["child server 日本"][13:15] == ("Unset", "")
    assert rows["child client 日本"][13:15] == ("Error", 'it broke: "badly"')


def test_sdk_spans_from_a_tracer_encode_like_their_attributes_say() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "tracer-app"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("scope.name", "7.0")
    with tracer.start_as_current_span("parent", kind=SpanKind.CLIENT) as parent:
        parent.set_attribute("list", ["x", "y"])  # the SDK stores sequences as tuples
        parent.add_event("evt", {"f": 0.25})
        with tracer.start_as_current_span("child") as child:
            child.set_status(Status(StatusCode.ERROR, "no"))
    spans = exporter.get_finished_spans()
    rows = {row[5]: row for row in decode_native(encode_spans(spans).native)[1]}
    assert rows["parent"][11] == {"list": '["x","y"]'} and rows["parent"][17] == [{"f": "0.25"}]
    assert rows["child"][3] == rows["parent"][2] and rows["parent"][3] == ""
    assert rows["child"][7] == "tracer-app" and rows["child"][9:11] == ("scope.name", "7.0")
    assert rows["child"][13:15] == ("Error", "no")
    assert rows["child"][12] == spans[0].end_time - spans[0].start_time


def test_many_distinct_keys_use_wider_low_cardinality_indexes() -> None:
    # 70,000 distinct keys: the dictionary index needs 32 bits (UInt8 < 256 <= UInt16 < 65,536 <= UInt32).
    context = SpanContext(1, 1, is_remote=False)
    resource = Resource({"service.name": "wide"})  # without one, each span runs resource detection
    spans = [
        ReadableSpan(name=f"name {n % 300}", context=SpanContext(1, n + 1, is_remote=False), parent=context,
                     resource=resource,
                     attributes={f"key.{n}": n, "shared": "x"}, start_time=n, end_time=n + 1)
        for n in range(70_000)
    ]
    names, rows = decode_native(encode_spans(spans).native)
    assert len(rows) == 70_000
    assert rows[69_999][11] == {"key.69999": "69999", "shared": "x"}
    assert rows[299][5] == "name 299" and rows[300][5] == "name 0"


def test_an_empty_batch_and_spans_without_events_or_links_still_decode() -> None:
    assert decode_native(encode_spans([]).native)[1] == []
    spans = [ReadableSpan(name="bare", context=SpanContext(5, 6, is_remote=False), start_time=1, end_time=2)]
    (row,) = decode_native(encode_spans(spans).native)[1]
    assert row[15:] == ([], [], [], [], [], [], [])
    assert row[11] == {} and row[8]["telemetry.sdk.language"] == "python"


def test_lone_surrogates_are_replaced_not_fatal() -> None:
    spans = [ReadableSpan(name="bad \ud800 name", context=SpanContext(5, 6, is_remote=False),
                          attributes={"k": "v\udfff"}, start_time=1, end_time=2)]
    (row,) = decode_native(encode_spans(spans).native)[1]
    assert row[5] == "bad \ufffd name" and row[11] == {"k": "v\ufffd"}


def test_a_volume_batch_keeps_every_value() -> None:
    spans = span_batch(3000)
    rows = decode_native(encode_spans(spans).native)[1]
    assert [row[11]["batch.number"] for row in rows] == [str(n) for n in range(3000)]
    assert all(row[11]["gen_ai.response.finish_reasons"] == '["stop"]' for row in rows)
    assert sum(len(row[16]) for row in rows) == sum(len(span.events) for span in spans)


class _PublicView:
    """A span object that is not the SDK's ReadableSpan: only its public properties show."""

    def __init__(self, span: ReadableSpan) -> None:
        self._span = span

    def __getattr__(self, name: str) -> object:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._span, name)


def test_other_span_objects_are_read_through_their_public_properties_with_the_same_result() -> None:
    # The SDK's own spans are read through their internal fields (faster); any other object
    # through the properties ReadableSpan documents. Both ways must give the same block.
    spans = every_kind_of_span() + span_batch(30)
    assert encode_spans([_PublicView(span) for span in spans]) == encode_spans(spans)  # type: ignore[misc]
    mixed = [_PublicView(span) if number % 2 else span for number, span in enumerate(spans)]
    assert encode_spans(mixed) == encode_spans(spans)  # type: ignore[arg-type]
