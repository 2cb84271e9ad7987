"""Spans per second accepted and stored by ``llmtel serve`` from 4 exporter processes at once.

Prints figures; it is a report, not a test (it always exits 0 once the server ran). Usage::

    python bench/serve.py                          # 4 processes x 100 batches of 512 spans
    python bench/serve.py --processes 4 --batches 30 --batch-size 512   # a quick look
    python bench/serve.py --pre-encoded            # the receiver alone: clients send pre-encoded bytes

Each exporter process is the stock ``OTLPSpanExporter`` (OTLP/HTTP protobuf, what
``OTEL_TRACES_EXPORTER=otlp`` gives): it builds its LLM-like spans first (a chat call with 14
attributes, one event), then calls ``export()`` back to back, as a ``BatchSpanProcessor`` under
load would. Figures:

``stored spans/s``      all spans of all processes / the time from the first request until the
                        server's queue is empty (all of them are in the store)
``receiver latency``    p50/p99/max per OTLP request inside the server (read, decode, queue,
                        insert, answer), from ``/healthz``
``client latency``      p50/p99 of ``export()`` as the exporters saw it (adds the client's
                        protobuf encoding and HTTP)
``CPU per span``        the server's CPU time (all its threads, chDB's included) and the
                        exporter processes' (their export loop) while exporting, per span: on
                        one machine they share the cores, so both decide the figure

The target is >= 20,000 spans/s stored on the 2-core reference machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

READY_PREFIX = "llmtel serve: listening on "

EXPORTER_PROCESS = r"""
import json, random, sys, time
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

url, worker, batches, batch_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pre_encoded = sys.argv[5] == "pre-encoded"
memory = InMemorySpanExporter()
provider = TracerProvider(resource=Resource.create({"service.name": f"bench-{worker}", "service.version": "1.0"}))
provider.add_span_processor(SimpleSpanProcessor(memory))
tracer = provider.get_tracer("llmtel.instrumentation.openai", "0.1")
rng = random.Random(worker)
for number in range(batch_size):
    with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes={
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.response.id": f"chatcmpl-{rng.getrandbits(64):x}",
        "gen_ai.usage.input_tokens": rng.randint(10, 4000), "gen_ai.usage.output_tokens": rng.randint(1, 800),
        "gen_ai.request.temperature": 0.7, "gen_ai.request.max_tokens": 1024,
        "gen_ai.response.finish_reasons": ("stop",),
        "server.address": "api.openai.com", "server.port": 443, "llmtel.cost.usd": rng.random() / 100,
        "gen_ai.conversation.id": f"conv-{number % 50}",
    }) as span:
        span.add_event("gen_ai.first_chunk", {"gen_ai.usage.output_tokens": 1})
        if number % 20 == 0:
            span.set_status(Status(StatusCode.ERROR, "rate limited"))
spans = memory.get_finished_spans()
exporter = OTLPSpanExporter(endpoint=url + "/v1/traces", timeout=60)
print("ready", flush=True)
sys.stdin.readline()  # all processes start together
latencies, failures = [], 0
started = time.perf_counter()
cpu_started = time.process_time()
if pre_encoded:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    body = encode_spans(spans).SerializePartialToString()
for _ in range(batches):
    begin = time.perf_counter()
    if pre_encoded:
        # The exporter's own HTTP client (headers, compression, retries), without re-encoding each time.
        ok = exporter._client.export(body).success
    else:
        ok = exporter.export(spans).name == "SUCCESS"
    if not ok:
        failures += 1
    latencies.append(time.perf_counter() - begin)
print(json.dumps({"started": started, "ended": time.perf_counter(), "cpu": time.process_time() - cpu_started,
                  "latencies": latencies, "failures": failures, "spans": len(spans) * (batches - failures)}),
      flush=True)
"""


def _start_server(store: str, data: str) -> tuple[subprocess.Popen[str], str]:
    environment = {**os.environ, "XDG_DATA_HOME": data, "PYTHONUNBUFFERED": "1"}
    environment.pop("OTEL_EXPORTER_CLICKHOUSE_ENDPOINT", None)
    environment.pop("LLMTEL_SERVE_TOKEN", None)
    process = subprocess.Popen([sys.executable, "-m", "llmtel.exporter_clickhouse.serve", "--store", store,
                                "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=environment)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(READY_PREFIX):
            # Keep draining its output so the server never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # type: ignore[union-attr]
            return process, line[len(READY_PREFIX):].split()[0]
        print(line, end="", file=sys.stderr)
    raise SystemExit("llmtel serve did not start")


def _get(url: str, body: bytes | None = None) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=120) as response:
        return response.read()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process so far (Linux /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields 14 and 15 (utime, stime), counted from 1 with the pid and command name before ")".
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--batches", type=int, default=100, help="export() calls per process")
    parser.add_argument("--batch-size", type=int, default=512, help="spans per export() (the SDK's default 512)")
    parser.add_argument("--pre-encoded", action="store_true",
                        help="encode each process's batch once and send those bytes again and again through the "
                             "exporter's HTTP client: the receiver's figure without the clients' protobuf encoding, "
                             "which on 2 cores competes with the server for CPU")
    args = parser.parse_args()

    root = tempfile.mkdtemp(prefix="llmtel-bench-serve-")
    server, url = _start_server(os.path.join(root, "store"), os.path.join(root, "data"))
    try:
        children = [
            subprocess.Popen([sys.executable, "-c", EXPORTER_PROCESS, url, str(worker), str(args.batches),
                              str(args.batch_size), "pre-encoded" if args.pre_encoded else "export"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for worker in range(args.processes)
        ]
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise SystemExit("an exporter process failed to start")
        server_cpu_before = _cpu_seconds(server.pid)
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        reports = [json.loads(child.communicate()[0].strip().splitlines()[-1]) for child in children]
        # Acknowledged means queued (and then spooled): the figure counts until the last span is in the store.
        while True:
            health = json.loads(_get(url + "/healthz"))
            if not health["queue"]["queued_spans"] and not health["store"]["spooled_batches"]:
                break
            time.sleep(0.01)
        drained = time.perf_counter()
        server_cpu = _cpu_seconds(server.pid) - server_cpu_before
        stored = int(_get(url + "/", b"SELECT count() FROM otel_traces"))
    finally:
        server.terminate()
        server.wait(120)
        shutil.rmtree(root, ignore_errors=True)

    sent = sum(report["spans"] for report in reports)
    # perf_counter is CLOCK_MONOTONIC on Linux: one clock for every process of the machine.
    elapsed = max(drained, *(report["ended"] for report in reports)) - min(report["started"] for report in reports)
    latencies = [latency for report in reports for latency in report["latencies"]]
    receiver = health.get("otlp_latency_ms", {})
    mode = "pre-encoded bytes" if args.pre_encoded else "export()"
    print(f"llmtel serve, {args.processes} OTLPSpanExporter processes x {args.batches} batches x "
          f"{args.batch_size} spans, {mode} ({os.cpu_count()} CPUs)")
    print(f"  stored spans/s      {sent / elapsed:12,.0f}   ({stored:,} rows stored, {sent:,} acknowledged, "
          f"{sum(report['failures'] for report in reports)} failed exports, {elapsed:.2f} s)")
    print(f"  receiver latency    p50 {receiver.get('p50', 0):8.1f} ms   p99 {receiver.get('p99', 0):8.1f} ms   "
          f"max {receiver.get('max', 0):8.1f} ms   ({health['queue']['inserts']} merged writes)")
    print(f"  client latency      p50 {statistics.median(latencies) * 1000:8.1f} ms   "
          f"p99 {_percentile(latencies, 0.99) * 1000:8.1f} ms")
    clients_cpu = sum(report["cpu"] for report in reports)
    print(f"  CPU per span        server {server_cpu / sent * 1e6:8.1f} us   clients {clients_cpu / sent * 1e6:8.1f} us"
          f"   (while exporting: {server_cpu + clients_cpu:.2f} CPU-s in {elapsed:.2f} s)")
    if stored != sent:
        print(f"  MISMATCH: {sent} spans acknowledged but {stored} rows stored")


if __name__ == "__main__":
    main()
