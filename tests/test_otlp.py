"""OTLP span kinds land as the Collector names them, Unspecified included."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmtel.exporter_clickhouse.columns import encode_spans
from llmtel.exporter_clickhouse.otlp import PROTOBUF_CONTENT_TYPE, decode_request


def test_every_otlp_span_kind_gets_the_collectors_name() -> None:
    from exporter_spans import decode_native

    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    kinds = [0, 1, 2, 3, 4, 5, 9]  # 9: a value the spec does not define
    for number, kind in enumerate(kinds, start=1):
        spans.add(trace_id=bytes(15) + bytes([number]), span_id=bytes(7) + bytes([number]), name=f"k{kind}",
                  kind=kind, start_time_unix_nano=1_750_000_000_000_000_000,
                  end_time_unix_nano=1_750_000_000_000_001_000)
    decoded = decode_request(request.SerializeToString(), PROTOBUF_CONTENT_TYPE)
    assert decoded.rejected == 0
    names, rows = decode_native(encode_spans(decoded.spans).native)
    kind = names.index("SpanKind")
    assert [row[kind] for row in rows] == [
        "Unspecified", "Internal", "Server", "Client", "Producer", "Consumer", "Unspecified"]
