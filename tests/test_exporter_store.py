"""store, embedded: spans exported into chDB read back as the Collector would have stored them.

One chDB store per module (a process holds one store path at a time) and a fresh database per
test; every client and exporter is closed at the end, so later modules can open other paths.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import clickhouse_connect
import openai
import pytest
from exporter_spans import ROW_QUERY, every_kind_of_span, expected_rows, span_batch
from fake_openai import FakeOpenAI
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from telemetry_capture import TelemetryCapture

from llmtel.exporter_clickhouse import ClickHouseSpanExporter
from llmtel.exporter_clickhouse.columns import INSERT_COLUMN_NAMES, encode_spans

MESSAGES = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("chdb-exporter"))


@pytest.fixture(scope="module")
def reader(store_path: str) -> Iterator[Any]:
    client = clickhouse_connect.get_client(interface="chdb", path=store_path)
    yield client
    client.close()


@pytest.fixture
def make_exporter(store_path: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[
    Callable[..., ClickHouseSpanExporter]
]:
    """Exporters into the module's store, in this test's own database; shut down at the end."""
    made: list[ClickHouseSpanExporter] = []
    database = "t_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:60]

    def make(**settings: Any) -> ClickHouseSpanExporter:
        settings = {"endpoint": f"chdb://{store_path}", "database": database, "data_dir": str(tmp_path),
                    "retry_max_elapsed": "1s", **settings}
        exporter = ClickHouseSpanExporter(**settings)
        made.append(exporter)
        return exporter

    yield make
    for exporter in made:
        exporter.shutdown()


def rows(reader: Any, database: str, table: str = "otel_traces") -> list[tuple]:
    return [tuple(row) for row in reader.query(ROW_QUERY.format(table=f"`{database}`.`{table}`")).result_rows]


def test_spans_of_every_kind_read_back_as_the_collector_writes_them(make_exporter: Any, reader: Any) -> None:
    exporter = make_exporter()
    spans = every_kind_of_span()
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.force_flush()
    assert rows(reader, exporter.config.database) == expected_rows(spans)
    assert exporter.spool.pending() == []


def test_the_store_is_opened_and_the_schema_created_at_the_first_export_not_before(
    make_exporter: Any, reader: Any
) -> None:
    exporter = make_exporter()
    database = exporter.config.database
    assert reader.command(f"SELECT count() FROM system.databases WHERE name = '{database}'") == 0
    exporter.export(span_batch(3))
    assert exporter.force_flush()
    tables = {row[0] for row in reader.query(f"SHOW TABLES FROM `{database}`").result_rows}
    assert {"otel_traces", "otel_traces_trace_id_ts", "llm_calls", "llm_usage_daily"} <= tables
    assert reader.command(f"SELECT count() FROM `{database}`.otel_traces") == 3


def test_many_batches_are_each_stored_once(make_exporter: Any, reader: Any) -> None:
    exporter = make_exporter()
    spans = span_batch(2000)
    for start in range(0, 2000, 512):
        assert exporter.export(spans[start : start + 512]) is SpanExportResult.SUCCESS
    assert exporter.force_flush()
    database = exporter.config.database
    count, distinct = reader.query(f"SELECT count(), uniqExact(SpanId) FROM `{database}`.otel_traces").result_rows[0]
    assert (count, distinct) == (2000, 2000)


def test_the_attribute_indexes_are_built_when_parts_merge_and_the_others_at_insert(
    make_exporter: Any, reader: Any
) -> None:
    # The embedded store defers the attribute text indexes (most of an insert's cost) to merges.
    exporter = make_exporter()
    for seed in (1, 2):
        assert exporter.export(span_batch(50, seed=seed)) is SpanExportResult.SUCCESS
    assert exporter.force_flush()
    database = exporter.config.database
    sizes_query = (
        f"SELECT name, data_compressed_bytes FROM system.data_skipping_indices "
        f"WHERE database = '{database}' AND table = 'otel_traces'"
    )
    deferred = {"idx_res_attr_key", "idx_res_attr_items", "idx_span_attr_key", "idx_span_attr_items"}
    sizes = dict(reader.query(sizes_query).result_rows)
    assert deferred <= set(sizes) and all(sizes[name] == 0 for name in deferred)
    assert sizes["idx_trace_id"] > 0 and sizes["idx_duration"] > 0
    reader.command(f"OPTIMIZE TABLE `{database}`.otel_traces FINAL")
    sizes = dict(reader.query(sizes_query).result_rows)
    assert all(sizes[name] > 0 for name in deferred)
    # Reads are the same with or without them.
    assert reader.command(
        f"SELECT count() FROM `{database}`.otel_traces WHERE has(mapKeys(SpanAttributes), 'batch.number')"
    ) == 100


def test_a_batch_replayed_after_an_ambiguous_failure_is_stored_once_views_included(
    make_exporter: Any, reader: Any
) -> None:
    # The spool's copy of a batch the server did store (crash before the file was removed, or a
    # lost answer): replaying it with its token must not double otel_traces or the views.
    exporter = make_exporter()
    batch = encode_spans(span_batch(50))
    exporter.export(span_batch(1, seed=99, service="warm-up"))  # opens the store, creates the schema
    assert exporter.force_flush()  # the drain thread is idle: the store is this thread's now
    assert exporter._store is not None
    with exporter._store_lock:
        exporter._store.insert(batch.native, "replayed-token", INSERT_COLUMN_NAMES)
    exporter.spool.put(batch.native, batch.rows, "replayed-token", INSERT_COLUMN_NAMES)
    assert exporter.force_flush()
    database = exporter.config.database
    assert reader.command(f"SELECT count() FROM `{database}`.otel_traces") == 51
    assert reader.command(f"SELECT count() FROM `{database}`.llm_calls") == 51
    assert reader.command(f"SELECT sum(Calls) FROM `{database}`.llm_usage_daily") == 51


def test_real_instrumentation_spans_fill_the_llm_tables_with_typed_values(
    make_exporter: Any, reader: Any, fake_openai: FakeOpenAI, client: openai.OpenAI
) -> None:
    exporter = make_exporter()
    capture = TelemetryCapture()
    processor = BatchSpanProcessor(exporter, schedule_delay_millis=60_000)
    capture.tracer_provider.add_span_processor(processor)
    with capture.instrumented():
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        client.embeddings.create(model="text-embedding-3-small", input="hello")
        fake_openai.fail_next(400)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert processor.force_flush()  # the SDK's flush: exported, i.e. in the spool
    assert exporter.force_flush()  # stored
    spans = {span.context.span_id: span for span in capture.llm_spans()}
    database = exporter.config.database
    stored = reader.query(
        f"SELECT SpanId, Operation, Provider, RequestModel, ResponseModel, InputTokens, OutputTokens, Cost, "
        f"FinishReasons, StatusCode, ErrorType, Duration, toUnixTimestamp64Nano(Timestamp) "
        f"FROM `{database}`.llm_calls ORDER BY Timestamp"
    ).named_results()
    stored = list(stored)
    assert len(stored) == 3 == len(spans)
    chat, embeddings, failed = stored
    span = spans[int(chat["SpanId"], 16)]
    attributes = span.attributes
    assert (chat["Operation"], chat["Provider"], chat["RequestModel"]) == ("chat", "openai", "gpt-4o-mini")
    assert chat["ResponseModel"] == reply.model == attributes["gen_ai.response.model"]
    assert chat["InputTokens"] == reply.usage.prompt_tokens == attributes["gen_ai.usage.input_tokens"]
    assert chat["OutputTokens"] == reply.usage.completion_tokens
    assert chat["Cost"] == Decimal(repr(attributes["gen_ai.usage.cost"])).quantize(Decimal("1e-12"))
    assert chat["FinishReasons"] == list(attributes["gen_ai.response.finish_reasons"])
    assert chat["Duration"] == span.end_time - span.start_time
    assert chat["toUnixTimestamp64Nano(Timestamp)"] == span.start_time
    assert embeddings["Operation"] == "embeddings" and embeddings["Cost"] is not None
    assert (failed["StatusCode"], failed["RequestModel"]) == ("Error", "gpt-4o")
    assert failed["ErrorType"] == spans[int(failed["SpanId"], 16)].attributes["error.type"]
    assert failed["Cost"] is None  # no usage, no cost: unknown, not 0
    processor.shutdown()


@contextlib.contextmanager
def held_drain_lock(spool: Any) -> Iterator[None]:
    """The spool's drain lock, waiting until the exporter's drain thread has let go of it."""
    deadline = time.monotonic() + 10
    while True:
        with spool.drain_lock() as mine:
            if mine:
                yield
                return
        assert time.monotonic() < deadline, "the drain thread kept the spool's lock"
        time.sleep(0.01)


def test_a_group_whose_insert_reached_the_store_before_a_crash_is_stored_once(
    make_exporter: Any, reader: Any
) -> None:
    # The state a drainer killed after its grouped insert reached the store, before it deleted
    # the members: the intent and its members are still in the spool. The next drainer repeats
    # that very insert (same blocks, same token), which the store drops, views included.
    exporter = make_exporter()
    exporter.export(span_batch(1, seed=98, service="warm-up"))
    assert exporter.force_flush()
    batches = [encode_spans(span_batch(size, seed=size)) for size in (40, 7, 25)]
    # Built while holding the drain lock, as the killed drainer did: the exporter's own drain
    # thread (its insert interval may run out meanwhile) must not take these batches first.
    with held_drain_lock(exporter.spool):
        for batch in batches:
            exporter.spool.put(batch.native, batch.rows, uuid.uuid4().hex, INSERT_COLUMN_NAMES)
        intent = exporter.spool.begin_group(exporter.spool.pending())
        assert exporter._store is not None
        with exporter._store_lock:
            exporter._store.insert(b"".join(batch.native for batch in batches), intent.token, INSERT_COLUMN_NAMES)
    # A later batch, exported after the restart: it is inserted after the group, in its own insert.
    assert exporter.export(span_batch(5, seed=5)) is SpanExportResult.SUCCESS
    assert exporter.force_flush()
    database = exporter.config.database
    for table, column in (("otel_traces", "count()"), ("llm_calls", "count()"), ("llm_usage_daily", "sum(Calls)")):
        assert reader.command(f"SELECT {column} FROM `{database}`.{table}") == 1 + 72 + 5, table
    assert reader.command(f"SELECT uniqExact(SpanId) FROM `{database}`.otel_traces") == 78
    assert exporter.spool.pending() == [] and exporter.spool.groups() == []
