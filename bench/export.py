"""Spans per second through ``ClickHouseSpanExporter.export()`` into the embedded store, beside OTLP.

Prints figures; it is a report, not a test (it always exits 0). Usage::

    python bench/export.py                  # 3 rounds of >= 5 s per figure, ~3 minutes on 2 cores
    python bench/export.py --seconds 2 --rounds 1   # a quick look

The spans are realistic LLM spans made by the SDK's own ``TracerProvider`` (a chat call: 21
attributes of every value type, one or two events, an error status on some), built once and
exported again and again. Figures, per batch size (512, the SDK's default, and 8192, the
recommended ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``):

``export, llmtel schema``    end to end: span objects → Native → rows stored in a chDB store with
                             the whole schema the exporter creates (``otel_traces`` with its text
                             indexes, the trace-id lookup view, ``llm_calls`` and ``llm_usage_daily``
                             views), dedup token and insert settings as in production. ``export()``
                             returns once a batch is in the spool and the exporter's drain thread
                             inserts behind it, so the time runs from the first ``export()`` to the
                             end of ``force_flush()`` (the spool empty: every row stored; the bench
                             fails if a batch was dropped), and at the end every table's row count
                             is checked against the spans exported
``export, Collector tables`` the same into the Collector's tables only (traces + lookup view)
``encode only``              the Python half: ``columns.encode_spans`` (spans → Native bytes) of
                             the whole batch as one block (the exporter encodes a batch of more
                             than 2048 spans in slices of 2048, ~15% faster at 8192)
``OTLP encode``              the reference: ``encode_spans(batch).SerializeToString()`` of the
                             OTLP exporter, no network

Each figure is the median of the rounds; rounds interleave the modes (A B C D A B C D ...), so a
burst of load on the shared machine hits all of them alike. Peak RSS is the process's, at the end.
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import clickhouse_connect
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as otlp_encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from llmtel.exporter_clickhouse import ClickHouseSpanExporter, schema
from llmtel.exporter_clickhouse.columns import encode_spans

BATCH_SIZES = (512, 8192)


class _Collect(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def make_spans(count: int) -> list[ReadableSpan]:
    """``count`` finished chat spans from the SDK, shaped like llmtel's instrumentation makes them."""
    rng = random.Random(42)
    collect = _Collect()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-app", "deployment.environment": "prod"}))
    provider.add_span_processor(collect)
    tracer = provider.get_tracer("llmtel.instrumentation.openai", "0.1.0")
    models = ("gpt-4o-mini", "gpt-4o", "o3-mini", "gpt-4.1")
    for number in range(count):
        model = models[number % len(models)]
        with tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT) as span:
            span.set_attributes({
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
                "gen_ai.response.model": f"{model}-2024-07-18", "server.address": "api.openai.com",
                "server.port": 443, "gen_ai.request.temperature": 0.7, "gen_ai.request.max_tokens": 512,
                "gen_ai.request.top_p": 1.0, "gen_ai.usage.input_tokens": rng.randint(10, 5000),
                "gen_ai.usage.output_tokens": rng.randint(1, 900), "gen_ai.usage.cost": rng.random() / 100,
                "gen_ai.usage.cache_read.input_tokens": rng.choice((0, 0, 1024)),
                "gen_ai.response.finish_reasons": ("stop",), "gen_ai.response.id": f"chatcmpl-{rng.getrandbits(64):x}",
                "gen_ai.request.stream": bool(number % 2), "gen_ai.conversation.id": f"conv-{number // 10}",
                "user.id": f"user-{number % 97}", "session.id": f"session-{number % 13}",
                "llmtel.tags": '["support","eu"]', "gen_ai.response.time_to_first_chunk": rng.random(),
            })
            span.add_event("gen_ai.choice", {"index": 0, "finish_reason": "stop"})
            if number % 3 == 0:
                span.add_event("exception", {"exception.type": "RateLimitError", "exception.message": 'slow "down"'})
            if number % 10 == 0:
                span.set_status(Status(StatusCode.ERROR, "rate limited"))
    return collect.spans


class Mode(NamedTuple):
    """What one figure times: ``action`` per batch, then ``finish`` once (waits until all is done)."""

    action: Callable[[Sequence[ReadableSpan]], object]
    finish: Callable[[], object] | None = None


def rate(mode: Mode, batches: list[list[ReadableSpan]], seconds: float) -> tuple[float, int]:
    """(spans per second, spans done) of ``mode`` over whole passes through ``batches``, for at least
    ``seconds``, its ``finish`` included."""
    done = 0
    started = time.perf_counter()
    while True:
        for batch in batches:
            mode.action(batch)
            done += len(batch)
        if time.perf_counter() - started >= seconds:
            break
    if mode.finish is not None:
        mode.finish()
    return done / (time.perf_counter() - started), done


def exporting(exporter: ClickHouseSpanExporter) -> Mode:
    """``exporter.export`` per batch (fails loudly unless SUCCESS), then ``force_flush()``: all stored."""

    def export(batch: Sequence[ReadableSpan]) -> None:
        result = exporter.export(batch)
        assert result is SpanExportResult.SUCCESS, f"export() returned {result}"

    def flush() -> None:
        assert exporter.force_flush(600_000), "the store refused a batch (or the flush timed out)"
        assert exporter.dropped_spans == 0, f"{exporter.dropped_spans} spans dropped"

    return Mode(export, flush)


def check_stored(client: object, database: str, exported: int, llm_spans: int) -> None:
    """Every exported span is a row in the traces table and (all are LLM calls) in llm_calls."""
    stored = client.command(f"SELECT count() FROM `{database}`.otel_traces")  # type: ignore[attr-defined]
    assert stored == exported, f"{database}: {stored:,} rows stored for {exported:,} spans exported"
    if llm_spans:
        calls = client.command(f"SELECT count() FROM `{database}`.llm_calls")  # type: ignore[attr-defined]
        assert calls == llm_spans, f"{database}: {calls:,} llm_calls rows for {llm_spans:,} spans"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="minimum time per figure and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spans", type=int, default=16384, help="distinct spans made (reused across batches)")
    arguments = parser.parse_args()

    print(f"making {arguments.spans} spans with the SDK ...", flush=True)
    spans = make_spans(arguments.spans)
    attributes = [len(span.attributes) for span in spans]
    print(f"  {min(attributes)}-{max(attributes)} attributes, "
          f"{sum(len(span.events) for span in spans) / len(spans):.2f} events per span")

    store = tempfile.mkdtemp(prefix="llmtel-bench-")
    data_dir = tempfile.mkdtemp(prefix="llmtel-bench-data-")
    try:
        full = ClickHouseSpanExporter(endpoint=f"chdb://{store}", database="bench_full", data_dir=data_dir)
        # The Collector's tables only: created here, the exporter told not to create more.
        options = schema.SchemaOptions(database="bench_collector")
        setup = clickhouse_connect.get_client(interface="chdb", path=store)
        setup.command("CREATE DATABASE IF NOT EXISTS bench_collector")
        for statement in schema.render_traces(options):
            setup.command(statement)
        collector = ClickHouseSpanExporter(endpoint=f"chdb://{store}", database="bench_collector",
                                           data_dir=data_dir, create_schema=False)
        exported = {"export, llmtel schema": 10, "export, Collector tables": 10}
        for warm_up in (exporting(full), exporting(collector)):  # opens the store, creates the schema
            warm_up.action(spans[:10])
            assert warm_up.finish is not None
            warm_up.finish()

        modes: dict[str, Mode] = {
            "export, llmtel schema": exporting(full),
            "export, Collector tables": exporting(collector),
            "encode only": Mode(encode_spans),
            "OTLP encode": Mode(lambda batch: otlp_encode_spans(batch).SerializeToString()),
        }
        results: dict[tuple[str, int], list[float]] = {}
        for round_number in range(arguments.rounds):
            for size in BATCH_SIZES:
                batches = [spans[start : start + size] for start in range(0, len(spans) - size + 1, size)]
                for name, mode in modes.items():
                    figure, done = rate(mode, batches, arguments.seconds)
                    if name in exported:
                        exported[name] += done
                    results.setdefault((name, size), []).append(figure)
                    print(f"  round {round_number + 1}  batch {size:5d}  {name:26s} {figure:9,.0f} spans/s", flush=True)
        for exporter in (full, collector):
            exporter.shutdown()
        # The bench's spans are all LLM calls: each must be in llm_calls too (the views ran).
        check_stored(setup, "bench_full", exported["export, llmtel schema"], exported["export, llmtel schema"])
        check_stored(setup, "bench_collector", exported["export, Collector tables"], 0)
        stored = exported["export, llmtel schema"]
        setup.close()
    finally:
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)

    print()
    print(f"median of {arguments.rounds} rounds, >= {arguments.seconds:g} s each "
          f"({stored:,} spans stored in the llmtel-schema database, row counts checked)")
    print(f"{'':28s}" + "".join(f"{'batch ' + str(size):>16s}" for size in BATCH_SIZES))
    medians = {key: statistics.median(values) for key, values in results.items()}
    for name in modes:
        print(f"{name:28s}" + "".join(f"{medians[name, size]:>11,.0f} sp/s" for size in BATCH_SIZES))
    for name in ("export, llmtel schema", "export, Collector tables", "encode only"):
        print(f"{name + ' / OTLP encode':40s}" + "".join(
            f"{medians[name, size] / medians['OTLP encode', size]:>10.2f}x" for size in BATCH_SIZES))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:,.0f} MiB (Python {sys.version.split()[0]}, "
          f"clickhouse-connect {clickhouse_connect.__version__})")


if __name__ == "__main__":
    main()
