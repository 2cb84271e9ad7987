"""serve: ``llmtel serve`` receives OTLP/HTTP from many processes and answers ClickHouse HTTP queries.

One ``serve`` subprocess (with a token) owns a fresh store for the whole module; the test process
never opens chDB itself, so nothing needs closing here. Tests that must not disturb it (backpressure,
settings) run the server class in-process with a stand-in exporter, or start a second store.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from exporter_spans import ROW_QUERY, every_kind_of_span, expected_rows, span_batch
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export import SpanExportResult

from llmtel.exporter_clickhouse import serve
from llmtel.exporter_clickhouse.columns import EncodedBatch
from llmtel.exporter_clickhouse.config import ExporterConfig

TOKEN = "s3cret-token"
MAX_BODY = 4 << 20


class ServeProcess:
    """``python -m llmtel.exporter_clickhouse.serve`` on a store, for tests."""

    def __init__(self, store: Path, data_dir: Path, *arguments: str, token: str = TOKEN) -> None:
        self.store = store
        self.data_dir = data_dir
        self.arguments = arguments
        self.token = token
        self.url = ""
        self.process: subprocess.Popen[str] | None = None
        self.output: deque[str] = deque(maxlen=200)

    def start(self, timeout: float = 60) -> None:
        environment = {**os.environ, "XDG_DATA_HOME": str(self.data_dir), "PYTHONUNBUFFERED": "1"}
        environment.pop("OTEL_EXPORTER_CLICKHOUSE_ENDPOINT", None)
        if self.token:
            environment[serve.SERVE_TOKEN_VARIABLE] = self.token
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llmtel.exporter_clickhouse.serve", "--store", str(self.store), "--port", "0",
             *self.arguments],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment,
        )
        ready = threading.Event()

        def read(process: subprocess.Popen[str]) -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.output.append(line.rstrip("\n"))
                if line.startswith(serve.READY_PREFIX):
                    self.url = line[len(serve.READY_PREFIX):].split()[0]
                    ready.set()
            ready.set()

        threading.Thread(target=read, args=(self.process,), daemon=True).start()
        ready.wait(timeout)
        if not self.url or self.process.poll() is not None:
            self.stop()
            raise RuntimeError("llmtel serve did not start:\n" + "\n".join(self.output))

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signum)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.process = None
        self.url = ""
        return process.returncode

    def client(self, **settings: Any) -> Any:
        host, port = self.url.rsplit("//", 1)[1].split(":")
        return clickhouse_connect.get_client(host=host, port=int(port), password=self.token, **settings)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    root = tmp_path_factory.mktemp("serve")
    process = ServeProcess(root / "store", root / "data", "--max-body-bytes", str(MAX_BODY))
    process.start()
    yield process
    process.stop()


def post(url: str, body: bytes, headers: dict[str, str] | None = None, method: str = "POST") -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def otlp_headers(content_type: str = "application/x-protobuf", **extra: str) -> dict[str, str]:
    return {"Content-Type": content_type, "Authorization": f"Bearer {TOKEN}", **extra}


def wait_written(server: ServeProcess) -> None:
    """Until the server's queue and its exporter's spool are empty: it acknowledges spans once
    queued, and its exporter inserts them from the spool right after."""
    while True:
        health = json.loads(post(server.url + "/healthz", b"", method="GET")[2])
        if not health["queue"]["queued_spans"] and not health["store"]["spooled_batches"]:
            return
        time.sleep(0.05)


def count(server: ServeProcess, where: str = "1") -> int:
    wait_written(server)
    query = f"SELECT count() FROM otel_traces WHERE {where}".encode()
    status, _, body = post(server.url + "/?password=" + TOKEN, query)
    assert status == 200, body
    return int(body)


def protobuf_request(trace_id: bytes, span_ids: list[bytes], **span_fields: Any) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    attribute = resource_spans.resource.attributes.add()
    attribute.key, attribute.value.string_value = "service.name", "raw-tests"
    scope_spans = resource_spans.scope_spans.add()
    for span_id in span_ids:
        span = scope_spans.spans.add(trace_id=trace_id, span_id=span_id, name="raw", kind=3,
                                     start_time_unix_nano=1_750_000_000_000_000_000,
                                     end_time_unix_nano=1_750_000_000_000_000_500)
        for key, value in span_fields.items():
            item = span.attributes.add()
            item.key = key
            item.value.string_value = value
    return request.SerializeToString()


def llmtel(*arguments: str) -> subprocess.CompletedProcess[str]:
    """The ``llmtel`` command, run as the console script runs it."""
    script = "import sys; from llmtel.exporter_clickhouse.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", script, *arguments], capture_output=True, text=True, timeout=120)


# --- many processes exporting, readers reading --------------------------------------------

EXPORTER_APP = """
import sys
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

url, service, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
provider = TracerProvider(resource=Resource.create({"service.name": service}))
exporter = OTLPSpanExporter(endpoint=url + "/v1/traces")
provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=200))
tracer = provider.get_tracer("serve-tests", "1.0")
ids = []
for number in range(count):
    with tracer.start_as_current_span("chat gpt-4o", attributes={"gen_ai.operation.name": "chat", "n": number}) as span:
        ids.append(format(span.get_span_context().span_id, "016x"))
provider.shutdown()
print(" ".join(ids))
"""


def test_four_processes_export_at_once_and_every_span_is_stored_once_while_clients_read(
    server: ServeProcess,
) -> None:
    per_process = 1500
    services = [f"worker-{number}" for number in range(4)]
    environment = {**os.environ, "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{TOKEN}"}
    children = [
        subprocess.Popen([sys.executable, "-c", EXPORTER_APP, server.url, service, str(per_process)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
        for service in services
    ]
    where = f"ServiceName IN ({', '.join(repr(service) for service in services)})"
    reader = server.client()
    seen = []
    endpoint = serve.find_serve_endpoint(str(server.store))
    assert endpoint is not None
    # Started with the exporters: it reads while they write (maybe before the first row is in).
    cli_while_writing = llmtel("stats", "--endpoint", endpoint, "--format", "json", "--by", "service")
    while any(child.poll() is None for child in children):
        seen.append(reader.command(f"SELECT count() FROM otel_traces WHERE {where}"))
    outputs = [child.communicate(timeout=120) for child in children]
    wait_written(server)
    assert [child.returncode for child in children] == [0, 0, 0, 0], [error for _, error in outputs]
    sent = {span_id for out, _ in outputs for span_id in out.split()}
    assert len(sent) == 4 * per_process
    assert seen == sorted(seen)  # reads went on while the exporters wrote, and never saw rows vanish
    stored = reader.query(f"SELECT SpanId, count() FROM otel_traces WHERE {where} GROUP BY SpanId").result_rows
    assert {span_id for span_id, _ in stored} == sent
    assert all(copies == 1 for _, copies in stored)
    by_service = f"SELECT ServiceName, count() FROM otel_traces WHERE {where} GROUP BY 1"
    per_service = dict(reader.query(by_service).result_rows)
    assert per_service == dict.fromkeys(services, per_process)
    # The LLM layer is fed by the same views as for the in-process exporter.
    assert reader.command(f"SELECT count() FROM llm_calls WHERE {where}") == 4 * per_process
    reader.close()
    # The llmtel command reads through the server too, during the writes and after them.
    assert cli_while_writing.returncode == 0 or cli_while_writing.stderr == "llmtel: no calls match\n", (
        cli_while_writing.stderr)
    after = llmtel("stats", "--endpoint", endpoint, "--format", "json", "--by", "service")
    assert after.returncode == 0, after.stderr
    calls = {row["service"]: row["calls"] for row in json.loads(after.stdout)}
    assert {service: calls.get(service) for service in services} == dict.fromkeys(services, per_process)


def test_rows_from_otlp_are_the_rows_the_in_process_exporter_writes(server: ServeProcess) -> None:
    spans = every_kind_of_span(base_ns=1_760_000_000_000_000_000)
    exporter = OTLPSpanExporter(endpoint=server.url + "/v1/traces", headers={"Authorization": f"Bearer {TOKEN}"})
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    wait_written(server)
    trace_ids = ", ".join(f"'{span.context.trace_id:032x}'" for span in spans)
    table = f"(SELECT * FROM otel_traces WHERE TraceId IN ({trace_ids}) AND Timestamp >= '2025-10-01')"
    client = server.client()
    rows = [tuple(row) for row in client.query(ROW_QUERY.format(table=table)).result_rows]
    client.close()
    # The Python SDK's OTLP encoder sends no tracestate for links (trace_encoder._encode_links): the
    # one column that cannot match here; the JSON test covers a link's tracestate.
    expected = [(*row[:20], [""] * len(row[20]), *row[21:]) for row in expected_rows(spans)]
    assert rows == expected


def test_the_column_path_stores_what_the_per_span_path_stores(server: ServeProcess) -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    spans = span_batch(60, seed=11, service="column-path")
    request = encode_spans(spans)

    def with_trace_ids_from(first_byte: bytes) -> ExportTraceServiceRequest:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    span.trace_id = first_byte + span.trace_id[1:]
        return request

    column_body = with_trace_ids_from(b"\xaa").SerializeToString()
    # The same spans under other trace ids, in a body that is not canonical protobuf (an unknown
    # field first), which the receiver reads span by span.
    per_span_body = b"\x78\x00" + with_trace_ids_from(b"\xbb").SerializeToString()
    for body in (column_body, per_span_body):
        status, _, answer = post(server.url + "/v1/traces", body, otlp_headers())
        assert status == 200 and ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans == 0
    wait_written(server)
    client = server.client()
    stored = {}
    for path, prefix in (("column", "aa"), ("per span", "bb")):
        table = f"(SELECT * FROM otel_traces WHERE ServiceName = 'column-path' AND startsWith(TraceId, '{prefix}'))"
        stored[path] = [row[:1] + row[2:] for row in client.query(ROW_QUERY.format(table=table)).result_rows]
    client.close()
    assert len(stored["column"]) == 60
    assert stored["column"] == stored["per span"]


# --- OTLP encodings and partial success ------------------------------------------------------


def test_otlp_json_with_hex_ids_and_enums_as_numbers_is_stored(server: ServeProcess) -> None:
    document = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-app"}}]},
        "scopeSpans": [{"scope": {"name": "json.scope", "version": "2"}, "spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
            "parentSpanId": "eee19b7ec3c1b173", "name": "json span", "kind": 3,
            "startTimeUnixNano": "1750000000000000000", "endTimeUnixNano": 1750000000000001000,
            "attributes": [
                {"key": "i", "value": {"intValue": "42"}}, {"key": "d", "value": {"doubleValue": 1e21}},
                {"key": "b", "value": {"boolValue": True}}, {"key": "bytes", "value": {"bytesValue": "AP9oaQ=="}},
                {"key": "a", "value": {"arrayValue": {"values": [{"stringValue": "x"}, {"intValue": 1}]}}},
                {"key": "m", "value": {"kvlistValue": {"values": [{"key": "z", "value": {"stringValue": "1"}},
                                                                  {"key": "y", "value": {"boolValue": False}}]}}},
            ],
            "status": {"code": 2, "message": "boom"},
            "links": [{"traceId": "00000000000000000000000000000001", "spanId": "0000000000000002",
                       "traceState": "a=b"}],
        }]}],
    }]}
    status, headers, body = post(server.url + "/v1/traces", json.dumps(document).encode(),
                                 otlp_headers("application/json"))
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {}
    wait_written(server)
    client = server.client()
    row = client.query(
        "SELECT TraceId, ParentSpanId, SpanKind, StatusCode, StatusMessage, ScopeVersion, SpanAttributes, "
        "Duration, Links.SpanId, Links.TraceState FROM otel_traces WHERE SpanId = 'eee19b7ec3c1b174'"
    ).result_rows
    client.close()
    assert row == [(
        "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b173", "Client", "Error", "boom", "2",
        {"i": "42", "d": "1e+21", "b": "true", "bytes": "AP9oaQ==", "a": '["x",1]', "m": '{"y":false,"z":"1"}'},
        1000, ["0000000000000002"], ["a=b"],
    )]


def test_invalid_spans_are_rejected_one_by_one_with_partial_success(server: ServeProcess) -> None:
    trace_id = bytes.fromhex("7a000000000000000000000000000001")
    good = [bytes.fromhex("7a00000000000001"), bytes.fromhex("7a00000000000002")]
    body = protobuf_request(trace_id, [*good, b"\x01\x02", b"\x00" * 8])
    status, headers, answer = post(server.url + "/v1/traces", body, otlp_headers())
    assert status == 200
    assert headers["Content-Type"] == "application/x-protobuf"
    response = ExportTraceServiceResponse.FromString(answer)
    assert response.partial_success.rejected_spans == 2
    assert "span_id must be 8 bytes" in response.partial_success.error_message
    assert count(server, f"TraceId = '{trace_id.hex()}'") == 2

    bad_trace = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "not hex", "spanId": "0000000000000001"}]}]}]}
    status, _, answer = post(server.url + "/v1/traces", json.dumps(bad_trace).encode(),
                             otlp_headers("application/json"))
    assert status == 200
    assert json.loads(answer)["partialSuccess"]["rejectedSpans"] == "1"


# --- malformed and oversized bodies ----------------------------------------------------------


def test_malformed_and_oversized_bodies_get_their_status_and_the_server_keeps_its_data(
    server: ServeProcess,
) -> None:
    trace_id = bytes.fromhex("7b000000000000000000000000000001")
    body = protobuf_request(trace_id, [bytes.fromhex(f"7b0000000000000{n}") for n in range(1, 4)])
    assert post(server.url + "/v1/traces", body, otlp_headers())[0] == 200
    before = count(server)
    huge_value = "x" * (2 << 20)
    bomb = gzip.compress(b"\x00" * (MAX_BODY * 4))
    invalid_utf8 = body.replace(b"raw-tests", b"raw-\xff\xfests")
    cases = [
        ("truncated protobuf", body[: len(body) // 2], otlp_headers(), 400),
        ("random bytes", os.urandom(5000), otlp_headers(), 400),
        ("wrong content type", body, otlp_headers("text/plain"), 415),
        ("no content type", body, {"Authorization": f"Bearer {TOKEN}"}, 415),
        ("bad gzip", b"\x1f\x8b\x08\x00garbage", otlp_headers(**{"Content-Encoding": "gzip"}), 400),
        ("truncated gzip", gzip.compress(body)[:-12], otlp_headers(**{"Content-Encoding": "gzip"}), 400),
        ("gzip bomb", bomb, otlp_headers(**{"Content-Encoding": "gzip"}), 413),
        ("unknown encoding", body, otlp_headers(**{"Content-Encoding": "br"}), 415),
        ("10 MB body", b"\x0a" * (10 << 20), otlp_headers(), 413),
        ("invalid UTF-8 in protobuf", invalid_utf8, otlp_headers(), 400),
        ("invalid UTF-8 in JSON", b'{"resourceSpans": "\xff\xfe"}', otlp_headers("application/json"), 400),
        ("JSON of the wrong shape", b'{"resourceSpans": {"a": 1}}', otlp_headers("application/json"), 400),
        ("JSON array", b"[1, 2]", otlp_headers("application/json"), 400),
    ]
    for name, payload, headers, expected in cases:
        status, answer_headers, answer = post(server.url + "/v1/traces", payload, headers)
        assert status == expected, (name, answer[:300])
        assert answer, name  # a google.rpc.Status saying why
    # A huge attribute value within the limit is stored whole.
    big = protobuf_request(bytes.fromhex("7c000000000000000000000000000001"), [bytes.fromhex("7c00000000000001")],
                           big=huge_value)
    status, _, answer = post(server.url + "/v1/traces", gzip.compress(big),
                             otlp_headers(**{"Content-Encoding": "gzip"}))
    assert status == 200, answer
    assert count(server, f"length(SpanAttributes['big']) = {len(huge_value)}") == 1
    assert count(server) == before + 1
    status, _, health = post(server.url + "/healthz", b"", method="GET")
    assert status == 200 and json.loads(health)["status"] == "ok"


def test_fuzzed_protobuf_bodies_never_break_the_server(server: ServeProcess) -> None:
    import random

    rng = random.Random(20261122)
    trace_id = bytes.fromhex("7d000000000000000000000000000001")
    valid = protobuf_request(trace_id, [bytes.fromhex(f"7d0000000000000{n}") for n in range(1, 6)], k="value")
    assert post(server.url + "/v1/traces", valid, otlp_headers())[0] == 200
    before = count(server)
    statuses = set()
    for _ in range(150):
        body = bytearray(valid)
        for _ in range(rng.randint(1, 8)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        if rng.random() < 0.3:
            body = body[: rng.randrange(len(body))]
        status, _, answer = post(server.url + "/v1/traces", bytes(body), otlp_headers())
        assert status in (200, 400), answer[:200]
        statuses.add(status)
    assert statuses == {200, 400}
    # Whatever was accepted was stored (at most the 5 spans of each body), and nothing earlier was lost.
    assert count(server) >= before
    status, _, health = post(server.url + "/healthz", b"", method="GET")
    assert json.loads(health)["queue"]["failed_spans"] == 0


def test_spans_beyond_what_the_table_can_hold_are_rejected_not_the_request(server: ServeProcess) -> None:
    request = ExportTraceServiceRequest.FromString(
        protobuf_request(bytes.fromhex("7e000000000000000000000000000001"),
                         [bytes.fromhex("7e00000000000001"), bytes.fromhex("7e00000000000002")]))
    request.resource_spans[0].scope_spans[0].spans[1].end_time_unix_nano = (1 << 64) - 1
    status, _, answer = post(server.url + "/v1/traces", request.SerializeToString(), otlp_headers())
    assert status == 200
    assert ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans == 1
    assert count(server, "TraceId = '7e000000000000000000000000000001'") == 1


def test_a_request_whose_spans_cannot_be_written_does_not_sink_the_requests_merged_with_it() -> None:
    written: list[EncodedBatch] = []

    class PickyExporter:
        def export_encoded(self, batch: EncodedBatch) -> SpanExportResult:
            if b"poison" in batch.native:
                return SpanExportResult.FAILURE
            written.append(batch)
            return SpanExportResult.SUCCESS

    writer = serve.SpanWriter(PickyExporter(), max_queue_spans=100)
    # Queued within the writer's linger time, so it merges them into one insert first.
    pendings = [writer.submit(EncodedBatch(native, rows))
                for native, rows in ((b"[a,b]", 2), (b"[poison]", 1), (b"[c]", 1))]
    writer.close()
    assert [pending.stored for pending in pendings] == [True, False, True]
    # Tried together first (refused), then each alone, in order.
    assert written == [EncodedBatch(b"[a,b]", 2), EncodedBatch(b"[c]", 1)]
    assert (writer.stored_spans, writer.failed_spans) == (3, 1)
    assert writer.inserts == 4


def test_the_writer_merges_waiting_requests_into_one_multi_block_insert() -> None:
    written: list[EncodedBatch] = []

    class RecordingExporter:
        def export_encoded(self, batch: EncodedBatch) -> SpanExportResult:
            written.append(batch)
            return SpanExportResult.SUCCESS

    writer = serve.SpanWriter(RecordingExporter(), max_queue_spans=100)
    pendings = [writer.submit(EncodedBatch(bytes([n]) * 3, n)) for n in range(1, 5)]
    writer.close()
    assert all(pending.stored and pending.done.is_set() for pending in pendings)
    assert written == [EncodedBatch(b"\x01" * 3 + b"\x02" * 3 + b"\x03" * 3 + b"\x04" * 3, 10)]
    assert (writer.stored_spans, writer.inserts) == (10, 1)


def test_a_full_queue_answers_503_with_retry_after_and_accepts_again_once_written(tmp_path: Path) -> None:
    release = threading.Event()
    written: list[int] = []

    class SlowExporter:
        spool = None
        dropped_spans = 0

        def export_encoded(self, batch: EncodedBatch) -> SpanExportResult:
            release.wait(30)
            written.append(batch.rows)
            return SpanExportResult.SUCCESS

    settings = serve.ServeSettings(store_path=str(tmp_path), exporter=ExporterConfig.from_environment({}), port=0,
                                   max_queue_spans=3, ack_after_store=True)
    writer = serve.SpanWriter(SlowExporter(), settings.max_queue_spans)
    server = serve.ServeServer(settings, writer, interface=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = server.url + "/v1/traces"
    ids = [bytes([n]) * 8 for n in range(1, 8)]
    try:
        results: list[int] = []
        first = threading.Thread(target=lambda: results.append(
            post(url, protobuf_request(b"\x07" * 16, ids[:2]), otlp_headers())[0]))
        first.start()
        while writer.queued_spans < 2:  # the writer holds the first request's spans
            time.sleep(0.01)
        second = threading.Thread(target=lambda: results.append(
            post(url, protobuf_request(b"\x07" * 16, ids[2:3]), otlp_headers())[0]))
        second.start()
        while writer.queued_spans < 3:
            time.sleep(0.01)
        status, headers, body = post(url, protobuf_request(b"\x07" * 16, ids[3:5]), otlp_headers())
        assert status == 503
        assert headers["Retry-After"] == "1"
        release.set()
        first.join(30)
        second.join(30)
        assert results == [200, 200]
        assert post(url, protobuf_request(b"\x07" * 16, ids[3:5]), otlp_headers())[0] == 200
        assert sum(written) == 5
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        writer.close()


def test_health_reads_the_exporters_backlog_and_is_degraded_only_while_the_store_fails(tmp_path: Path) -> None:
    class DrainingExporter:
        """An exporter that spools every batch and inserts from a drain thread: a backlog is normal."""

        dropped_spans = 0
        store_failing = False
        waiting = (3, 1536)

        def export_encoded(self, batch: EncodedBatch) -> SpanExportResult:
            return SpanExportResult.SUCCESS

        def backlog(self) -> tuple[int, int]:
            return self.waiting

    exporter = DrainingExporter()
    settings = serve.ServeSettings(store_path=str(tmp_path), exporter=ExporterConfig.from_environment({}), port=0)
    writer = serve.SpanWriter(exporter, settings.max_queue_spans)
    server = serve.ServeServer(settings, writer, interface=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        health = json.loads(post(server.url + "/healthz", b"", method="GET")[2])
        assert health["status"] == "ok"
        assert health["store"] | {"path": None} == {
            "path": None, "database": "default", "table": "otel_traces", "spooled_batches": 3, "spooled_spans": 1536,
            "store_failing": False, "dropped_spans": 0}
        exporter.store_failing = True
        health = json.loads(post(server.url + "/healthz", b"", method="GET")[2])
        assert health["status"] == "degraded" and health["store"]["store_failing"] is True
    finally:
        server.shutdown()
        server.server_close()
        writer.close()


def test_an_exporter_that_cannot_take_encoded_batches_is_refused_at_start() -> None:
    class SpansOnly:
        def export(self, spans: list[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    with pytest.raises(TypeError, match="export_encoded"):
        serve.SpanWriter(SpansOnly(), max_queue_spans=10)


# --- the ClickHouse HTTP interface -------------------------------------------------------------


def test_clickhouse_clients_query_with_parameters_settings_and_compression(server: ServeProcess) -> None:
    client = server.client(compress="lz4")
    assert client.query("SELECT {n:UInt32} + 1", parameters={"n": 41}).result_rows == [(42,)]
    assert client.query("SELECT getSetting('max_threads')", settings={"max_threads": 1}).result_rows == [(1,)]
    assert client.command("SELECT count() FROM system.tables WHERE name = 'llm_calls'") == 1
    # Long parameter values go in a multipart form body (what the llmtel reader turns on).
    client.form_encode_query_params = True
    long_text = "prompt " * 5000
    assert client.query("SELECT length({t:String})", parameters={"t": long_text}).result_rows == [(len(long_text),)]
    client.close()
    status, headers, body = post(server.url + "/?enable_http_compression=1&default_format=JSONEachRow",
                                 b"SELECT 1 AS one", {"Accept-Encoding": "gzip", "X-ClickHouse-Key": TOKEN})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(body)) == {"one": 1}
    assert headers["X-ClickHouse-Format"] == "JSONEachRow"
    status, headers, body = post(server.url + f"/?password={TOKEN}", b"SELECT nonsense(")
    assert status == 400 and headers["X-ClickHouse-Exception-Code"] == "62"


def test_the_read_endpoint_is_read_only_even_when_a_client_asks_otherwise(server: ServeProcess) -> None:
    client = server.client()
    before = client.command("SELECT count() FROM otel_traces")
    for statement in ("DROP TABLE otel_traces", "CREATE TABLE x (n UInt8) ENGINE = Memory",
                      "INSERT INTO otel_traces (SpanName) VALUES ('x')", "TRUNCATE TABLE otel_traces"):
        with pytest.raises(Exception, match="readonly|READONLY"):
            client.command(statement)
    with pytest.raises(Exception, match="readonly|READONLY"):
        client.insert("otel_traces", [["x"]], column_names=["SpanName"])
    status, _, body = post(server.url + f"/?password={TOKEN}&readonly=0", b"DROP TABLE otel_traces")
    assert status == 500 and b"READONLY" in body
    assert client.command("SELECT count() FROM otel_traces") == before
    client.close()


def test_the_read_endpoint_runs_no_function_that_reads_outside_the_store(server: ServeProcess, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for clients")
    client = server.client()
    for statement in (
        f"SELECT * FROM file('{secret}', 'RawBLOB')",
        f"SELECT file('{secret}')",  # the scalar function too
        f"SELECT count() FROM otel_traces WHERE SpanName IN (SELECT * FROM FILE('{secret}', 'LineAsString'))",
        f"SELECT * FROM loop(file('{secret}', 'RawBLOB')) LIMIT 1",
        f"DESCRIBE TABLE file('{secret}', 'CSV')",
        "SELECT * FROM url('http://127.0.0.1:1/', 'CSV')",
        "SELECT * FROM remote('127.0.0.1:9000', system.one)",
        "SELECT * FROM s3('http://127.0.0.1:1/bucket/x.csv')",
    ):
        with pytest.raises(Exception, match="ACCESS_DENIED") as refused:
            client.query(statement)
        assert "not for clients" not in str(refused.value)
    # With query parameters, and a GET: the same check.
    status, _, body = post(server.url + f"/?password={TOKEN}&param_path={secret}",
                           b"SELECT * FROM file({path:String}, 'RawBLOB')")
    assert status == 403 and b"reads outside the store" in body and b"not for clients" not in body
    # Table functions that compute, or read the store's own tables, still work.
    assert client.query("SELECT sum(number) FROM numbers(4)").result_rows == [(6,)]
    assert client.command("SELECT count() FROM merge(currentDatabase(), '^otel_traces$')") == client.command(
        "SELECT count() FROM otel_traces")
    client.close()


# --- authentication ----------------------------------------------------------------------------


def test_both_endpoints_want_the_token(server: ServeProcess) -> None:
    body = protobuf_request(b"\x08" * 16, [b"\x08" * 8])
    plain = {"Content-Type": "application/x-protobuf"}
    status, headers, answer = post(server.url + "/v1/traces", body, plain)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert b"token" in answer
    assert post(server.url + "/v1/traces", body, {**plain, "Authorization": "Bearer wrong"})[0] == 401
    basic = "Basic " + base64.b64encode(f"default:{TOKEN}".encode()).decode()
    assert post(server.url + "/v1/traces", body, {**plain, "Authorization": basic})[0] == 200
    assert post(server.url + "/v1/traces", body, {**plain, "Authorization": f"Bearer {TOKEN}"})[0] == 200

    assert post(server.url + "/", b"SELECT 1")[0] == 401
    assert post(server.url + "/?password=wrong", b"SELECT 1")[0] == 401
    assert post(server.url + "/", b"SELECT 1", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert post(server.url + "/", b"SELECT 1", {"Authorization": basic})[0] == 200
    host, port = server.url.rsplit("//", 1)[1].split(":")
    with pytest.raises(Exception, match="401|token"):
        clickhouse_connect.get_client(host=host, port=int(port), password="wrong")
    client = clickhouse_connect.get_client(host=host, port=int(port), username="anyone", password=TOKEN)
    assert client.command("SELECT 1") == 1
    client.close()


def test_a_host_beyond_loopback_needs_a_token_and_the_environment_can_give_it(tmp_path: Path) -> None:
    parser = __import__("argparse").ArgumentParser()
    serve.add_arguments(parser)
    environ = {"XDG_DATA_HOME": str(tmp_path)}
    with pytest.raises(ValueError, match="token"):
        serve.ServeSettings.from_arguments(parser.parse_args(["--host", "0.0.0.0"]), environ)
    settings = serve.ServeSettings.from_arguments(parser.parse_args(["--host", "0.0.0.0"]),
                                                  {**environ, serve.SERVE_TOKEN_VARIABLE: "t"})
    assert settings.token == "t"
    local = serve.ServeSettings.from_arguments(parser.parse_args([]), environ)
    assert local.token == "" and local.host == "127.0.0.1" and local.port == 4318
    assert local.store_path == os.path.realpath(tmp_path / "llmtel" / "store")
    with pytest.raises(ValueError, match="embedded"):
        serve.ServeSettings.from_arguments(
            parser.parse_args([]), {**environ, "OTEL_EXPORTER_CLICKHOUSE_ENDPOINT": "http://ch:8123"})


# --- discovery, health, shutdown -------------------------------------------------------------------


def test_the_discovery_file_names_the_running_server_with_its_token(server: ServeProcess) -> None:
    found = serve.find_serve_endpoint(str(server.store))
    assert found is not None and found.endswith(server.url.split("//")[1])
    assert f":{TOKEN}@" in found
    assert (server.store / serve.DISCOVERY_FILE_NAME).stat().st_mode & 0o077 == 0
    client = clickhouse_connect.get_client(dsn=found)
    assert client.command("SELECT 1") == 1
    client.close()
    status, _, body = post(server.url + "/healthz", b"", method="GET")
    health = json.loads(body)
    assert status == 200
    assert health["store"]["path"] == os.path.realpath(server.store)
    assert health["queue"]["stored_spans"] >= 0 and health["read_only"] is True


def test_a_stale_discovery_file_is_ignored(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / serve.DISCOVERY_FILE_NAME).write_text(json.dumps({"url": "http://127.0.0.1:1", "pid": dead.pid}))
    assert serve.find_serve_endpoint(str(tmp_path)) is None
    assert serve.find_serve_endpoint(str(tmp_path / "missing")) is None


def test_batches_a_previous_run_left_in_the_spool_are_stored_at_start_without_a_request(tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from llmtel.exporter_clickhouse.columns import INSERT_COLUMN_NAMES
    from llmtel.exporter_clickhouse.otlp_columns import encode_request
    from llmtel.exporter_clickhouse.spool import SpoolDirectory

    store, data = tmp_path / "store", tmp_path / "data"
    config = ExporterConfig.from_environment({"XDG_DATA_HOME": str(data)}, endpoint=f"chdb://{os.path.realpath(store)}")
    batch = encode_request(encode_spans(span_batch(25, seed=21, service="left-behind"))).batch
    spool = SpoolDirectory(config.spool_path, config.spool_max_bytes)
    assert spool.put(batch.native, batch.rows, "left-1", INSERT_COLUMN_NAMES)
    process = ServeProcess(store, data, token="")
    process.start()
    try:
        query = b"SELECT count() FROM otel_traces WHERE ServiceName = 'left-behind'"
        stored = 0
        deadline = time.monotonic() + 60  # a bound for a broken build, not a speed check
        while (stored < 25 or spool.pending()) and time.monotonic() < deadline:
            time.sleep(0.05)
            stored = int(post(process.url + "/", query)[2])
        assert stored == 25
        assert spool.pending() == []
    finally:
        process.stop()


def test_sigterm_writes_everything_accepted_and_a_second_server_is_refused(tmp_path: Path) -> None:
    first = ServeProcess(tmp_path / "store", tmp_path / "data", "--allow-writes", token="")
    first.start()
    try:
        second = ServeProcess(tmp_path / "store", tmp_path / "data", token="")
        with pytest.raises(RuntimeError, match="already owns"):
            second.start()
        exporter = OTLPSpanExporter(endpoint=first.url + "/v1/traces", timeout=3)
        spans = every_kind_of_span()
        results: list[Any] = []

        def send() -> None:
            # Until the first refusal: the exporter's own retries would otherwise wait out its timeout each.
            for _ in range(50):
                results.append(exporter.export(spans))
                if results[-1] is not SpanExportResult.SUCCESS:
                    return

        sender = threading.Thread(target=send)
        sender.start()
        while not results:
            time.sleep(0.01)
        assert first.stop(signal.SIGTERM) == 0
        sender.join(60)
        accepted = sum(result is SpanExportResult.SUCCESS for result in results) * len(spans)
        assert not (tmp_path / "store" / serve.DISCOVERY_FILE_NAME).exists()
        assert any("spans stored" in line for line in first.output)
        first.start()
        stored = count_without_token(first)
        assert accepted <= stored <= len(results) * len(spans)
        # --allow-writes: ClickHouse clients may write (compressed inserts too); GET stays read-only.
        client = first.client(compress="lz4")
        client.command("CREATE TABLE notes (n UInt32, text String) ENGINE = MergeTree ORDER BY n")
        client.insert("notes", [[1, "one"], [2, "two"]], column_names=["n", "text"])
        assert client.query("SELECT n, text FROM notes ORDER BY n").result_rows == [(1, "one"), (2, "two")]
        client.close()
        status, _, body = post(first.url + "/?query=DROP+TABLE+notes", b"", method="GET")
        assert status == 500 and b"READONLY" in body
        assert count_without_token(first) == stored
    finally:
        first.stop()


def count_without_token(server: ServeProcess) -> int:
    wait_written(server)
    status, _, body = post(server.url + "/", b"SELECT count() FROM otel_traces")
    assert status == 200, body
    return int(body)
