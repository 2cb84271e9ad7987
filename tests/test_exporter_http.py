"""store, server: the same round trip through ClickHouse's HTTP interface (the chDB-backed endpoint)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_http import ChdbHttpEndpoint
from exporter_spans import ROW_QUERY, every_kind_of_span, expected_rows, span_batch
from opentelemetry.sdk.trace.export import SpanExportResult

from llmtel.exporter_clickhouse import ClickHouseSpanExporter, schema
from llmtel.exporter_clickhouse.columns import INSERT_COLUMN_NAMES
from llmtel.exporter_clickhouse.spool import group_token

USER, PASSWORD = "writer", "s3cret"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbHttpEndpoint]:
    with ChdbHttpEndpoint(tmp_path_factory.mktemp("http-store"), username=USER, password=PASSWORD) as running:
        yield running


@pytest.fixture(scope="module")
def reader(endpoint: ChdbHttpEndpoint) -> Iterator[Any]:
    client = clickhouse_connect.get_client(**endpoint.client_kwargs())
    yield client
    client.close()


@pytest.fixture
def make_exporter(
    endpoint: ChdbHttpEndpoint, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ClickHouseSpanExporter]]:
    endpoint.reset()
    made: list[ClickHouseSpanExporter] = []
    database = "h_" + "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[:60]

    def make(**settings: Any) -> ClickHouseSpanExporter:
        settings = {"endpoint": endpoint.url, "username": USER, "password": PASSWORD, "database": database,
                    "data_dir": str(tmp_path), "retry_max_elapsed": "1s", **settings}
        exporter = ClickHouseSpanExporter(**settings)
        made.append(exporter)
        return exporter

    yield make
    for exporter in made:
        exporter.shutdown()
    endpoint.reset()


def test_spans_of_every_kind_read_back_through_http(make_exporter: Any, reader: Any) -> None:
    exporter = make_exporter()
    spans = every_kind_of_span()
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.force_flush()
    table = f"`{exporter.config.database}`.`otel_traces`"
    assert [tuple(row) for row in reader.query(ROW_QUERY.format(table=table)).result_rows] == expected_rows(spans)


@pytest.mark.parametrize("compress", ["lz4", "zstd", "gzip", "deflate", "none"])
def test_every_compression_stores_every_row(
    compress: str, make_exporter: Any, reader: Any, endpoint: ChdbHttpEndpoint
) -> None:
    exporter = make_exporter(compress=compress)
    spans = span_batch(2500, seed=len(compress))
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.force_flush()
    table = f"`{exporter.config.database}`.otel_traces"
    count, distinct, total = reader.query(
        f"SELECT count(), uniqExact(SpanId), sum(toUInt64(SpanAttributes['batch.number'])) FROM {table}"
    ).result_rows[0]
    assert (count, distinct, total) == (2500, 2500, sum(range(2500)))
    (insert,) = [r for r in endpoint.requests() if r["statement"].startswith("INSERT INTO")]
    assert (insert["content_encoding"] or "none") == compress
    # Every insert carries its batch token and the schema's settings.
    assert len(insert["settings"]["insert_deduplication_token"]) == 32
    for name, value in schema.INSERT_SETTINGS.items():
        assert str(insert["settings"][name]) == str(value)


def test_a_wrong_password_is_one_clear_line_and_the_spans_wait_in_the_spool(
    make_exporter: Any, reader: Any, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = make_exporter(password="not-it", retry_max_elapsed="10s")
    with caplog.at_level(logging.WARNING):
        assert wrong.export(span_batch(7)) is SpanExportResult.SUCCESS  # kept, not lost
        assert wrong.export(span_batch(3, seed=2)) is SpanExportResult.SUCCESS
        assert wrong.force_flush(10_000) is False  # refused at once: not retried
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert f"refused the credentials of user '{USER}'" in lines[0]
    assert "OTEL_EXPORTER_CLICKHOUSE_PASSWORD" in lines[0] and str(wrong.spool.path) in lines[0]
    assert "\n" not in lines[0] and "not-it" not in lines[0]
    assert [item.rows for item in wrong.spool.pending()] == [7, 3]
    wrong.shutdown()

    fixed = make_exporter()  # same store and table, so the same spool
    assert fixed.spool.path == wrong.spool.path
    assert fixed.export(span_batch(2, seed=3)) is SpanExportResult.SUCCESS
    assert fixed.force_flush()
    assert reader.command(f"SELECT count() FROM `{fixed.config.database}`.otel_traces") == 12
    assert fixed.spool.pending() == []


def test_without_create_schema_a_missing_table_is_named_and_spans_are_kept(
    make_exporter: Any, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = make_exporter(create_schema=False)
    with caplog.at_level(logging.WARNING):
        assert exporter.export(span_batch(2)) is SpanExportResult.SUCCESS
        assert exporter.force_flush(10_000) is False
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "does not exist" in line and "OTEL_EXPORTER_CLICKHOUSE_CREATE_SCHEMA=true" in line
    assert len(exporter.spool.pending()) == 1


def held_insert(endpoint: ChdbHttpEndpoint) -> bool:
    """Whether a request (here: the exporter's insert) is held by the endpoint's delay fault, not run yet
    (its statement is read after the delay)."""
    return any(r["fault"].startswith("delay") and not r["statement"] and r["status"] == 0
               for r in endpoint.requests())


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_export_returns_while_a_slow_store_still_holds_the_insert(
    make_exporter: Any, reader: Any, endpoint: ChdbHttpEndpoint
) -> None:
    exporter = make_exporter(timeout="20s")
    exporter.export(span_batch(1, seed=1))  # the schema in place
    assert exporter.force_flush()
    database = exporter.config.database
    endpoint.faults(delay_seconds=3)
    assert exporter.export(span_batch(20)) is SpanExportResult.SUCCESS
    # export() has returned; the insert of its batch is at the endpoint, unanswered, and not stored.
    wait_for(lambda: held_insert(endpoint))
    assert endpoint.query(f"SELECT count() FROM `{database}`.otel_traces").strip() == "1"  # (no delay on this)
    endpoint.faults()
    assert exporter.force_flush()
    assert reader.command(f"SELECT count() FROM `{database}`.otel_traces") == 21
    inserts = [r for r in endpoint.requests() if r["statement"].startswith("INSERT INTO")]
    assert inserts[-1]["fault"] == "delay 3s"  # the held request was that insert


def test_batches_that_wait_together_go_in_one_multi_block_insert_stored_once(
    make_exporter: Any, reader: Any, endpoint: ChdbHttpEndpoint
) -> None:
    exporter = make_exporter(timeout="20s", compress="lz4")
    spans = every_kind_of_span()
    exporter.export(spans[:1])
    assert exporter.force_flush()
    endpoint.faults(delay_seconds=2)
    exporter.export(spans[1:2])
    wait_for(lambda: held_insert(endpoint))  # while this insert is held, the others accumulate
    endpoint.faults()
    for span in spans[2:]:
        assert exporter.export([span]) is SpanExportResult.SUCCESS
    waiting = exporter.spool.pending()[1:]
    body = b"".join(exporter.spool.read(item)[0] for item in waiting)
    assert exporter.force_flush()
    inserts = [r for r in endpoint.requests() if r["statement"].startswith("INSERT INTO")]
    assert len(inserts) == 3 < len(spans)  # the first, the held one, then all the others in one
    assert inserts[-1]["settings"]["insert_deduplication_token"] == group_token([item.token for item in waiting])
    table = f"`{exporter.config.database}`.`otel_traces`"
    assert [tuple(row) for row in reader.query(ROW_QUERY.format(table=table)).result_rows] == expected_rows(spans)
    # The same group sent again (a retry after a lost answer) is dropped by the server's deduplication.
    assert exporter._store is not None
    with exporter._store_lock:  # the drain thread's store
        exporter._store.insert(body, inserts[-1]["settings"]["insert_deduplication_token"], INSERT_COLUMN_NAMES)
    assert reader.command(f"SELECT count() FROM {table}") == len(spans)


def test_two_exporters_sharing_one_spool_store_every_span_once(make_exporter: Any, reader: Any) -> None:
    exporters = [make_exporter(), make_exporter()]
    assert exporters[0].spool.path == exporters[1].spool.path
    exported: list[str] = []

    def run(number: int) -> None:
        for seed in range(12):
            spans = span_batch(5, seed=1000 * number + seed, service=f"sharer-{number}")
            exported.extend(f"{span.context.span_id:016x}" for span in spans)
            assert exporters[number].export(spans) is SpanExportResult.SUCCESS

    threads = [threading.Thread(target=run, args=(number,)) for number in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(exporter.force_flush() for exporter in exporters)
    table = f"`{exporters[0].config.database}`.otel_traces"
    stored = [row[0] for row in reader.query(f"SELECT SpanId FROM {table}").result_rows]
    assert sorted(stored) == sorted(exported) and len(stored) == 120
