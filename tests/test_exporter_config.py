"""config: environment → ExporterConfig (one reader, every problem at once), durations, the entry point."""

from __future__ import annotations

import dataclasses
import logging
import re
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from exporter_spans import span_batch
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

import llmtel.exporter_clickhouse as package
from llmtel.exporter_clickhouse import ClickHouseSpanExporter, ExporterConfig
from llmtel.exporter_clickhouse import environment_variables as env
from llmtel.exporter_clickhouse.config import parse_endpoint, parse_size
from llmtel.exporter_clickhouse.durations import format_duration, parse_duration
from llmtel.exporter_clickhouse.schema import SchemaOptions


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("500ms", 0.5), ("72h", 259200), ("1h30m", 5400), ("1.5h", 5400), ("90d", 7776000),
     ("2w", 1209600), ("0", 0), ("-5m", -300), ("250us", 0.00025), ("250µs", 0.00025), ("100ns", 1e-7),
     (" 10s ", 10), ("1m0.5s", 60.5)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "3 days", "1h30", "s", "h1", "1y", "--1s", "1.2.3s"])
def test_bad_durations_say_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration") as error:
        parse_duration(text)
    if text == "5":
        assert "add a unit" in str(error.value)


@pytest.mark.parametrize(("seconds", "text"), [(5400, "1h30m"), (0.5, "500ms"), (90 * 86400, "90d"), (61.5, "1m1.5s")])
def test_format_duration_reads_back(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "size"), [("1048576", 1048576), ("512MiB", 512 * 1024**2), ("2GB", 2 * 10**9), ("1.5KiB", 1536)]
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_defaults_are_the_collectors_and_the_schemas() -> None:
    config = ExporterConfig.from_environment({"HOME": "/home/someone"})
    options = SchemaOptions()
    assert config.validate() == []
    assert config.effective_database == options.database == "default"
    assert config.traces_table == options.traces_table == "otel_traces"
    assert config.table_engine == options.engine == "MergeTree()"
    assert (config.ttl, config.create_schema, config.timeout, config.compress) == (0, True, 5.0, "lz4")
    target = config.target()
    assert target.kind == "embedded" and target.default_store
    assert target.path == "/home/someone/.local/share/llmtel/store"
    assert config.spool_path.parent == Path("/home/someone/.local/share/llmtel/spool")


def test_xdg_data_home_moves_the_store_and_spool() -> None:
    config = ExporterConfig.from_environment({"HOME": "/home/x", "XDG_DATA_HOME": "/data"})
    assert config.target().path == "/data/llmtel/store"
    assert str(config.spool_path).startswith("/data/llmtel/spool/")


def test_every_variable_is_read_and_keyword_arguments_override() -> None:
    environ = {
        env.OTEL_EXPORTER_CLICKHOUSE_ENDPOINT: "https://ch.example:9443",
        env.OTEL_EXPORTER_CLICKHOUSE_DATABASE: "otel",
        env.OTEL_EXPORTER_CLICKHOUSE_USERNAME: "writer",
        env.OTEL_EXPORTER_CLICKHOUSE_PASSWORD: " secret ",
        env.OTEL_EXPORTER_CLICKHOUSE_TRACES_TABLE_NAME: "spans",
        env.OTEL_EXPORTER_CLICKHOUSE_TTL: "72h",
        env.OTEL_EXPORTER_CLICKHOUSE_CREATE_SCHEMA: "false",
        env.OTEL_EXPORTER_CLICKHOUSE_CLUSTER_NAME: "main",
        env.OTEL_EXPORTER_CLICKHOUSE_TABLE_ENGINE: "ReplicatedMergeTree('/t/{uuid}', '{replica}')",
        env.OTEL_EXPORTER_CLICKHOUSE_TIMEOUT: "2500ms",
        env.OTEL_EXPORTER_CLICKHOUSE_COMPRESS: "zstd",
        env.OTEL_EXPORTER_CLICKHOUSE_RETRY_MAX_ELAPSED_TIME: "3s",
        env.OTEL_EXPORTER_CLICKHOUSE_SPOOL_DIR: "/var/spool/llmtel",
        env.OTEL_EXPORTER_CLICKHOUSE_SPOOL_MAX_BYTES: "1GiB",
        env.OTEL_EXPORTER_CLICKHOUSE_INSERT_MAX_ROWS: "20_000",
        env.OTEL_EXPORTER_CLICKHOUSE_INSERT_MAX_BYTES: "16MiB",
        env.OTEL_EXPORTER_CLICKHOUSE_INSERT_INTERVAL: "250ms",
        "OTEL_BSP_EXPORT_TIMEOUT": "2000",
    }
    config = ExporterConfig.from_environment(environ)
    assert config.validate() == []
    assert (config.database, config.username, config.password, config.traces_table) == (
        "otel", "writer", " secret ", "spans")
    assert (config.ttl, config.create_schema, config.cluster_name) == (259200, False, "main")
    assert (config.timeout, config.compress, config.retry_max_elapsed) == (2.5, "zstd", 3.0)
    assert config.spool_max_bytes == 1024**3 and str(config.spool_path).startswith("/var/spool/llmtel/")
    assert (config.insert_max_rows, config.insert_max_bytes, config.insert_interval) == (20_000, 16 * 1024**2, 0.25)
    assert config.retry_budget == 2.0  # the SDK's export timeout bounds the retries
    target = config.target()
    assert (target.kind, target.secure, target.host, target.port) == ("server", True, "ch.example", 9443)
    options = config.schema_options()
    assert (options.database, options.traces_table, options.ttl_seconds, options.cluster) == ("otel", "spans", 259200,
                                                                                              "main")

    overridden = ExporterConfig.from_environment(environ, timeout=1, ttl="1d", create_schema=True, database="x")
    assert (overridden.timeout, overridden.ttl) == (1.0, 86400)
    assert (overridden.create_schema, overridden.database) == (True, "x")
    assert "secret" not in repr(config)


def test_every_problem_is_reported_at_once_one_line_each() -> None:
    config = ExporterConfig.from_environment(
        {
            env.OTEL_EXPORTER_CLICKHOUSE_ENDPOINT: "ftp://ch.example",
            env.OTEL_EXPORTER_CLICKHOUSE_TTL: "3 days",
            env.OTEL_EXPORTER_CLICKHOUSE_TIMEOUT: "5",
            env.OTEL_EXPORTER_CLICKHOUSE_CREATE_SCHEMA: "maybe",
            env.OTEL_EXPORTER_CLICKHOUSE_SPOOL_MAX_BYTES: "-1",
            env.OTEL_EXPORTER_CLICKHOUSE_TABLE_ENGINE: "Log()",
            env.OTEL_EXPORTER_CLICKHOUSE_DATABASE: "bad\nname",
            env.OTEL_EXPORTER_CLICKHOUSE_INSERT_MAX_ROWS: "lots",
            env.OTEL_EXPORTER_CLICKHOUSE_INSERT_MAX_BYTES: "0",
        },
        colour="blue",
    )
    problems = config.validate()
    assert len(problems) == 10
    assert all("\n" not in problem for problem in problems)
    for variable in ("ENDPOINT", "TTL", "TIMEOUT", "CREATE_SCHEMA", "SPOOL_MAX_BYTES", "TABLE_ENGINE", "DATABASE",
                     "INSERT_MAX_ROWS", "INSERT_MAX_BYTES"):
        assert sum(problem.startswith(f"OTEL_EXPORTER_CLICKHOUSE_{variable}:") for problem in problems) == 1, variable
    assert any(problem.startswith("colour=") for problem in problems)
    assert "add a unit" in next(p for p in problems if "TIMEOUT" in p)


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("http://ch:8123", ("server", False, "ch", 8123)),
        ("https://ch", ("server", True, "ch", 8443)),
        ("http://ch", ("server", False, "ch", 8123)),
        ("clickhouse://ch", ("server", False, "ch", 8123)),
        ("clickhouse://ch?secure=true", ("server", True, "ch", 8443)),
        ("clickhouse://ch:18123", ("server", False, "ch", 18123)),
        ("chdb:///srv/store", ("embedded", False, "", 0)),
        ("", ("embedded", False, "", 0)),
    ],
)
def test_endpoints(endpoint: str, expected: tuple) -> None:
    target = parse_endpoint(endpoint, "/data/llmtel")
    assert (target.kind, target.secure, target.host, target.port) == expected


@pytest.mark.parametrize(
    ("endpoint", "hint"),
    [
        ("clickhouse://ch:9000", "native protocol"),
        ("tcp://ch:9000", "native protocol"),
        ("localhost:8123", "http://localhost:8123"),
        ("chdb://relative/path", "absolute path"),
        ("chdb:///", None),
        ("http://:8123", "no host"),
        ("http://ch:port", "port"),
    ],
)
def test_unusable_endpoints_say_what_to_write(endpoint: str, hint: str | None) -> None:
    if hint is None:
        assert parse_endpoint(endpoint, "/d").path == "/"
        return
    with pytest.raises(ValueError, match=re.escape(hint)):
        parse_endpoint(endpoint, "/d")


def test_credentials_and_database_in_the_url_and_never_in_messages() -> None:
    config = ExporterConfig.from_environment({env.OTEL_EXPORTER_CLICKHOUSE_ENDPOINT: "https://bob:s3cr%40t@ch/otel"})
    target = config.target()
    assert (target.username, target.password, config.effective_database) == ("bob", "s3cr@t", "otel")
    assert "s3cr" not in target.url and "s3cr" not in str(config.spool_path) and "s3cr" not in repr(target)
    bad = ExporterConfig.from_environment({env.OTEL_EXPORTER_CLICKHOUSE_ENDPOINT: "clickhouse://bob:s3cr@ch:9000"})
    assert not any("s3cr" in problem for problem in bad.validate())


def test_each_store_and_table_gets_its_own_spool() -> None:
    def spool(**settings: str) -> Path:
        return ExporterConfig.from_environment({"HOME": "/h"}, **settings).spool_path

    paths = {
        spool(),
        spool(endpoint="chdb:///other"),
        spool(endpoint="http://a:8123"),
        spool(endpoint="http://b:8123"),
        spool(endpoint="http://a:8123", traces_table="t2"),
        spool(endpoint="http://a:8123", database="d2"),
    }
    assert len(paths) == 6
    assert spool(endpoint="http://a:8123") == spool(endpoint="http://a:8123", password="changed")


def test_the_sdk_finds_the_exporter_by_its_entry_point() -> None:
    (entry,) = [e for e in entry_points(group="opentelemetry_traces_exporter") if e.name == "clickhouse"]
    assert entry.load() is ClickHouseSpanExporter
    assert issubclass(ClickHouseSpanExporter, SpanExporter)


def test_only_config_reads_the_environment() -> None:
    folder = Path(package.__file__).parent
    readers = sorted(path.name for path in folder.glob("*.py") if "os.environ" in path.read_text()
                     or "getenv(" in path.read_text())
    assert readers == ["config.py"]


def test_every_variable_is_documented_and_configurable() -> None:
    names = [name for name in vars(env) if name.startswith("OTEL_EXPORTER_CLICKHOUSE_")]
    assert len(names) == 17
    fields = {field.name for field in dataclasses.fields(ExporterConfig)}
    assert {"endpoint", "spool_dir", "spool_max_bytes", "retry_max_elapsed", "insert_max_rows",
            "insert_max_bytes", "insert_interval"} <= fields


def test_a_misconfigured_exporter_logs_one_error_keeps_spans_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="llmtel.exporter_clickhouse"):
        exporter = ClickHouseSpanExporter(data_dir=str(tmp_path), endpoint="htp://typo:8123", ttl="forever")
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    message = record.getMessage()
    assert "\n" not in message and "OTEL_EXPORTER_CLICKHOUSE_ENDPOINT" in message and "forever" in message
    assert str(exporter.spool.path) in message
    assert exporter.export(span_batch(4)) is SpanExportResult.SUCCESS
    assert [item.rows for item in exporter.spool.pending()] == [4]
    assert exporter.force_flush(100) is False
    exporter.shutdown()
    assert exporter.export(span_batch(1)) is SpanExportResult.FAILURE  # after shutdown, as the SDK expects
