"""store, server: the same round trip through ClickHouse's HTTP interface (the chDB-backed endpoint)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_http import ChdbHttpEndpoint
from exporter_spans import ROW_QUERY, every_kind_of_span, expected_rows, span_batch
from opentelemetry.sdk.trace.export import SpanExportResult

from llmtel.exporter_clickhouse import ClickHouseSpanExporter, schema

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
    table = f"`{exporter.config.database}`.`otel_traces`"
    assert [tuple(row) for row in reader.query(ROW_QUERY.format(table=table)).result_rows] == expected_rows(spans)


@pytest.mark.parametrize("compress", ["lz4", "zstd", "gzip", "deflate", "none"])
def test_every_compression_stores_every_row(
    compress: str, make_exporter: Any, reader: Any, endpoint: ChdbHttpEndpoint
) -> None:
    exporter = make_exporter(compress=compress)
    spans = span_batch(2500, seed=len(compress))
    assert exporter.export(spans) is SpanExportResult.SUCCESS
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
    assert reader.command(f"SELECT count() FROM `{fixed.config.database}`.otel_traces") == 12
    assert fixed.spool.pending() == []


def test_without_create_schema_a_missing_table_is_named_and_spans_are_kept(
    make_exporter: Any, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = make_exporter(create_schema=False)
    with caplog.at_level(logging.WARNING):
        assert exporter.export(span_batch(2)) is SpanExportResult.SUCCESS
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "does not exist" in line and "OTEL_EXPORTER_CLICKHOUSE_CREATE_SCHEMA=true" in line
    assert len(exporter.spool.pending()) == 1
