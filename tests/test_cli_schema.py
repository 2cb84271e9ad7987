"""``llmtel schema print|apply``: the one-server DDL, and with ``--cluster`` the cluster layout.

No store is opened: ``print`` needs none, and ``apply --cluster`` runs against a client that
records the statements it is sent (the cluster DDL itself runs in chDB in tests/test_deploy.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmtel.exporter_clickhouse import cli, schema
from llmtel.exporter_clickhouse.reader import StoreReader

CLUSTER_SCHEMA = Path(__file__).resolve().parent.parent / "deploy" / "clickhouse-cluster" / "schema.sql"
REPLICATED = "ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')"


def schema_print(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(["schema", "print", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def without_header(text: str) -> str:
    """A .sql file's statements, without the comment lines it starts with and the blank line after them."""
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("--"):
        lines.pop(0)
    assert lines and lines[0] == "\n"
    return "".join(lines[1:])


@pytest.fixture(autouse=True)
def no_store_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_CLICKHOUSE_CLUSTER_NAME", "OTEL_EXPORTER_CLICKHOUSE_TABLE_ENGINE",
                 "OTEL_EXPORTER_CLICKHOUSE_DATABASE", "OTEL_EXPORTER_CLICKHOUSE_TTL"):
        monkeypatch.delenv(name, raising=False)


def test_print_cluster_is_the_deployed_cluster_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, text, err = schema_print(capsys, "--cluster", "llmtel")
    assert code == 0, err
    # deploy/clickhouse-cluster/schema.sql: a header saying where it comes from, then exactly this.
    assert text == without_header(CLUSTER_SCHEMA.read_text(encoding="utf-8"))
    options = schema.SchemaOptions(cluster="llmtel", engine=REPLICATED)
    assert text == ";\n\n".join(schema.render_cluster(options)) + ";\n"


def test_print_cluster_takes_the_engine_database_and_ttl(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = "ReplicatedMergeTree('/ch/{shard}/{database}/{table}', '{replica}')"
    code, text, _ = schema_print(capsys, "--cluster", "analytics", "--engine", engine, "--database", "otel")
    assert code == 0
    assert text == ";\n\n".join(schema.render_cluster(
        schema.SchemaOptions(cluster="analytics", engine=engine, database="otel"))) + ";\n"
    assert "`otel`.`llm_usage_daily_local` ON CLUSTER analytics" in text
    assert "ReplicatedAggregatingMergeTree('/ch/{shard}/{database}/{table}', '{replica}')" in text
    # The environment's engine and TTL, as the exporter reads them.
    monkeypatch.setenv("OTEL_EXPORTER_CLICKHOUSE_TABLE_ENGINE", engine)
    monkeypatch.setenv("OTEL_EXPORTER_CLICKHOUSE_TTL", "720h")
    code, text, _ = schema_print(capsys, "--cluster", "analytics")
    assert code == 0 and text == ";\n\n".join(schema.render_cluster(
        schema.SchemaOptions(cluster="analytics", engine=engine, ttl_seconds=30 * 86_400))) + ";\n"


def test_print_without_cluster_is_what_the_exporter_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, text, _ = schema_print(capsys)
    assert code == 0 and text == ";\n\n".join(schema.render(schema.SchemaOptions())) + ";\n"
    assert "_local" not in text and "Distributed" not in text
    # A cluster named in the environment: the exporter's own statements with ON CLUSTER (the
    # Collector's cluster_name layout), not the Distributed layout.
    monkeypatch.setenv("OTEL_EXPORTER_CLICKHOUSE_CLUSTER_NAME", "analytics")
    code, text, _ = schema_print(capsys)
    assert code == 0 and text == ";\n\n".join(schema.render(schema.SchemaOptions(cluster="analytics"))) + ";\n"
    assert "_local" not in text


def test_print_cluster_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, needle in ((["--cluster", "bad;name"], "cluster 'bad;name'"),
                         (["--cluster", "llmtel", "--engine", "Log"], "engine 'Log'")):
        code, _, err = schema_print(capsys, *argv)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


class RecordingClient:
    """A client that records the statements it is sent, as a server of ``version`` would accept them."""

    def __init__(self, version: str) -> None:
        self.server_version = version
        self.statements: list[str] = []

    def command(self, sql: str, parameters: Any = None) -> None:
        self.statements.append(sql)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("version", ["26.9.2.1", "25.8.1.1"])
def test_apply_cluster_runs_the_printed_statements(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    client = RecordingClient(version)
    opened: list[bool] = []

    def open_reader(config: Any, *, must_exist: bool = True) -> StoreReader:
        opened.append(must_exist)
        return StoreReader(client, config.schema_options(), "http://ch-s1r1:8123 (default)", "server")

    monkeypatch.setattr(cli, "open_reader", open_reader)
    assert cli.main(["schema", "apply", "--cluster", "llmtel", "--endpoint", "http://ch-s1r1:8123"]) == 0
    assert opened == [False] and "schema ready" in capsys.readouterr().out
    # Text indexes only on a server that has them (26.2 and later), as schema.apply decides.
    text_indexes = version.startswith("26.")
    assert client.statements == schema.render_cluster(
        schema.SchemaOptions(cluster="llmtel", engine=REPLICATED, full_text_search=text_indexes))
    assert any("TYPE text" in s for s in client.statements) == text_indexes
