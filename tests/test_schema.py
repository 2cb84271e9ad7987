"""The ClickHouse schema: the Collector's DDL text, the LLM layer's values, deduplication, backfill, README queries.

Text tests compare rendered DDL with tests/collector_traces_expected.sql (the Collector's DDL written
out by hand for the release pinned in collector-config.yaml). Execution tests run the DDL in chDB
through clickhouse-connect, with rows shaped as the Collector (and llmtel's exporter) writes them:
every attribute value a string — ints as decimal text, doubles as Go float text, arrays as JSON.

chDB allows one store path per process at a time, so the module opens one store and closes it at
the end; each test works in a database of its own.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import clickhouse_connect
import pytest
import yaml

from llmtel.exporter_clickhouse import schema
from llmtel.exporter_clickhouse.schema import SchemaOptions

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).with_name("collector_traces_expected.sql")
REPLICATED = "ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')"


# --- the Collector's text ------------------------------------------------------------------------

def _normalise(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()


def _golden_cases() -> dict[str, list[str]]:
    cases: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in GOLDEN.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^-- case: (\S+)$", line)
        if match:
            current = cases.setdefault(match.group(1), [])
        elif current is not None and not line.startswith("--"):
            current.append(line)
    return {
        name: [_normalise(s) for s in "\n".join(lines).split(";") if s.strip()]
        for name, lines in cases.items()
    }


GOLDEN_OPTIONS = {
    "default_text_index": SchemaOptions(),
    "default_bloom_filter": SchemaOptions(full_text_search=False),
    "ttl_72h_bloom_filter": SchemaOptions(full_text_search=False, ttl_seconds=72 * 3600),
    "cluster_replicated_ttl_90m_text_index": SchemaOptions(
        database="otel", cluster="my_cluster", engine=REPLICATED, ttl_seconds=90 * 60
    ),
}


def test_golden_file_has_every_case() -> None:
    cases = _golden_cases()
    assert set(cases) == set(GOLDEN_OPTIONS)
    assert all(len(statements) == 3 for statements in cases.values())


@pytest.mark.parametrize("case", sorted(GOLDEN_OPTIONS))
def test_traces_ddl_is_the_collectors(case: str) -> None:
    expected = _golden_cases()[case]
    assert [_normalise(s) for s in schema.render_traces(GOLDEN_OPTIONS[case])] == expected


@pytest.mark.parametrize("case", sorted(GOLDEN_OPTIONS))
def test_render_starts_with_the_collectors_statements(case: str) -> None:
    options = GOLDEN_OPTIONS[case]
    statements = [_normalise(s) for s in schema.render(options)]
    first = 1 if options.database != "default" else 0
    assert statements[first:first + 3] == _golden_cases()[case]


def _pinned_release() -> str:
    header = ROOT.joinpath("collector-config.yaml").read_text(encoding="utf-8")
    match = re.search(r"^# Image: otel/opentelemetry-collector-contrib:(\d+\.\d+\.\d+)\s*$", header, re.MULTILINE)
    assert match, "collector-config.yaml must name its image in a '# Image: ...' header line"
    return match.group(1)


def test_golden_file_names_the_pinned_release() -> None:
    version = _pinned_release()
    header = [line for line in GOLDEN.read_text(encoding="utf-8").splitlines() if line.startswith("--")][:5]
    named = re.findall(r"otel/opentelemetry-collector-contrib:(\d+\.\d+\.\d+)", "\n".join(header))
    assert named == [version]


def _go_duration_seconds(text: str) -> int:
    units = {"h": 3600, "m": 60, "s": 1}
    total = sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([hms])", str(text)))
    assert re.fullmatch(r"(\d+[hms])+|0", str(text)), text
    return total


def test_collector_config_matches_the_schema_defaults() -> None:
    config = yaml.safe_load(ROOT.joinpath("collector-config.yaml").read_text(encoding="utf-8"))
    exporter = config["exporters"]["clickhouse"]
    defaults = SchemaOptions()
    assert exporter["endpoint"] == "${env:CLICKHOUSE_ENDPOINT}"
    assert exporter["database"] == defaults.database
    assert exporter["traces_table_name"] == defaults.traces_table
    assert _go_duration_seconds(exporter["ttl"]) == defaults.ttl_seconds
    assert exporter["create_schema"] is False
    queue = exporter["sending_queue"]
    assert queue["storage"] in config["extensions"]
    assert queue["batch"]["min_size"] >= 1000  # ClickHouse: at least 1,000 rows per insert
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "${env:JAEGER_ENDPOINT}"
    receivers = config["receivers"]["otlp"]["protocols"]
    assert receivers["grpc"]["endpoint"].endswith(":4317") and receivers["http"]["endpoint"].endswith(":4318")
    service = config["service"]
    assert set(service["extensions"]) == {"health_check", "file_storage"} <= set(config["extensions"])
    pipeline = service["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(config[kind]), kind
    assert pipeline["processors"] == ["memory_limiter"]


# --- helpers -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, ""),
        (72 * 3600, "TTL toDateTime(Timestamp) + toIntervalDay(3)"),
        (36 * 3600, "TTL toDateTime(Timestamp) + toIntervalHour(36)"),
        (90 * 60, "TTL toDateTime(Timestamp) + toIntervalMinute(90)"),
        (61, "TTL toDateTime(Timestamp) + toIntervalSecond(61)"),
        (30 * 86400, "TTL toDateTime(Timestamp) + toIntervalDay(30)"),
    ],
)
def test_ttl_expression_picks_the_largest_whole_unit(seconds: int, expected: str) -> None:
    assert schema.ttl_expression("toDateTime(Timestamp)", seconds) == expected


@pytest.mark.parametrize(
    ("engine", "expected"),
    [
        ("MergeTree()", "AggregatingMergeTree()"),
        ("MergeTree", "AggregatingMergeTree()"),
        (REPLICATED, REPLICATED.replace("ReplicatedMergeTree", "ReplicatedAggregatingMergeTree")),
        ("SharedMergeTree('a', 'b')", "SharedMergeTree('a', 'b')"),
    ],
)
def test_lookup_engine_is_derived_like_the_collectors(engine: str, expected: str) -> None:
    assert schema.lookup_engine(engine) == expected


@pytest.mark.parametrize(
    ("engine", "expected"),
    [
        ("MergeTree()", "AggregatingMergeTree()"),
        (REPLICATED, REPLICATED.replace("ReplicatedMergeTree", "ReplicatedAggregatingMergeTree")),
        ("SharedMergeTree('a', 'b')", "SharedAggregatingMergeTree('a', 'b')"),
        ("ReplacingMergeTree()", "AggregatingMergeTree()"),
    ],
)
def test_rollup_engine_is_always_aggregating(engine: str, expected: str) -> None:
    assert schema.rollup_engine(engine) == expected


def test_quote_identifier_quotes_and_escapes() -> None:
    assert schema.quote_identifier("otel_traces") == "`otel_traces`"
    assert schema.quote_identifier("my-db") == "`my-db`"
    assert schema.quote_identifier("a`; DROP TABLE x; --") == "`a\\`; DROP TABLE x; --`"
    assert schema.quote_identifier("back\\slash") == "`back\\\\slash`"
    with pytest.raises(ValueError, match="empty"):
        schema.quote_identifier("")


def test_bad_options_are_all_reported_at_once() -> None:
    with pytest.raises(ValueError) as error:
        SchemaOptions(database="", cluster="c; DROP", engine="MergeTree(); DROP TABLE x", ttl_seconds=-1)
    message = str(error.value)
    for part in ("database ''", "cluster 'c; DROP'", "engine 'MergeTree(); DROP TABLE x'", "ttl_seconds -1"):
        assert part in message
    for engine in ("Log()", "MergeTree() SETTINGS x = 1", "ReplicatedMergeTree('a', 'b') --", "MergeTree('unclosed)"):
        assert SchemaOptions.problems(replace_unchecked(engine=engine)), engine
    assert SchemaOptions(cluster="'{cluster}'").on_cluster == "ON CLUSTER '{cluster}'"


def replace_unchecked(**changes: Any) -> SchemaOptions:
    """A SchemaOptions with fields set past __post_init__, to ask problems() about them."""
    options = SchemaOptions()
    for name, value in changes.items():
        object.__setattr__(options, name, value)
    return options


def test_server_version_gate() -> None:
    assert schema.server_has_full_text_search("26.2.1.1")
    assert schema.server_has_full_text_search("26.9.2.1")
    assert schema.server_has_full_text_search("27.1")
    assert not schema.server_has_full_text_search("26.1.3.4")
    assert not schema.server_has_full_text_search("25.12.1")
    assert not schema.server_has_full_text_search("")


def test_render_order_database_and_dedup_statements() -> None:
    default = schema.render(SchemaOptions())
    assert not any(s.startswith("CREATE DATABASE") for s in default)
    kinds = [re.match(r"(CREATE TABLE|CREATE MATERIALIZED VIEW|ALTER TABLE)", s).group(1) for s in default]
    assert kinds == ["CREATE TABLE", "CREATE TABLE", "CREATE MATERIALIZED VIEW", "CREATE TABLE",
                     "CREATE MATERIALIZED VIEW", "CREATE TABLE", "CREATE MATERIALIZED VIEW"] + ["ALTER TABLE"] * 4
    assert all("non_replicated_deduplication_window = 10000" in s for s in default[-4:])

    other = schema.render(SchemaOptions(database="otel", cluster="c1", engine=REPLICATED))
    assert other[0] == "CREATE DATABASE IF NOT EXISTS `otel` ON CLUSTER c1"
    assert not any(s.startswith("ALTER") for s in other)  # replicated tables deduplicate already
    assert all("ON CLUSTER c1" in s for s in other)
    assert "ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{database}/{table}'" in other[6]


# --- chDB ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    store = clickhouse_connect.get_client(interface="chdb", path=str(tmp_path_factory.mktemp("chdb-schema")))
    yield store
    store.close()


@pytest.fixture
def options(client: Any) -> SchemaOptions:
    return SchemaOptions(database=f"schema_{uuid.uuid4().hex[:12]}")


NOW = datetime.now(timezone.utc).replace(microsecond=0)
YESTERDAY = (NOW - timedelta(days=1)).replace(hour=12, minute=0, second=0)
TWO_DAYS_AGO = (NOW - timedelta(days=2)).replace(hour=12, minute=0, second=0)


def span_row(
    span_id: str,
    attributes: dict[str, str],
    *,
    start: datetime = YESTERDAY,
    duration_ns: int = 1_000_000,
    trace_id: str = "0af7651916cd43dd8448eb211c80319c",
    parent: str = "",
    name: str = "span",
    kind: str = "Client",
    status: str = "Unset",
    service: str = "support-bot",
) -> list[Any]:
    """One traces-table row in the Collector's insert order (schema.TRACES_COLUMNS)."""
    return [
        start, trace_id, span_id, parent, "", name, kind, service,
        {"service.name": service, "telemetry.sdk.language": "python"},
        "llmtel.instrumentation", "0.1.0", attributes, duration_ns, status, "",
        [start], ["gen_ai.content.prompt"], [{"k": "v"}], [], [], [], [],
    ]


def chat_attributes(model: str, served: str, tokens: tuple[int, int], cost: str | None, **extra: str) -> dict[str, str]:
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": model,
        "gen_ai.response.model": served,
        "gen_ai.usage.input_tokens": str(tokens[0]),
        "gen_ai.usage.output_tokens": str(tokens[1]),
        "gen_ai.response.finish_reasons": '["stop"]',
        "server.address": "api.openai.com",
        "server.port": "443",
        "gen_ai.request.temperature": "0.2",
    }
    if cost is not None:
        attributes["gen_ai.usage.cost"] = cost
    attributes.update(extra)
    return attributes


def sample_spans() -> list[list[Any]]:
    """Spans as real instrumentation produces them, stringified as the Collector writes them."""
    context = {"user.id": "u-42", "session.id": "s-7", "gen_ai.conversation.id": "conv-1",
               "llmtel.tags": '["beta","support"]'}
    return [
        span_row("a000000000000001", {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage",
                                      "gen_ai.provider.name": "openai", "llmtel.agent.llm_calls": "2",
                                      "llmtel.agent.cost": "0.000123", **context},
                 name="invoke_agent triage", kind="Internal", duration_ns=900_000_000),
        span_row("c000000000000001", chat_attributes(
                     "gpt-4o-mini", "gpt-4o-mini-2024-07-18", (1200, 80), "0.000228",
                     **{"gen_ai.usage.cache_read.input_tokens": "1024", "gen_ai.usage.reasoning.output_tokens": "0",
                        "gen_ai.response.time_to_first_chunk": "0.41", "gen_ai.request.stream": "true"},
                     **context),
                 parent="a000000000000001", name="chat gpt-4o-mini", duration_ns=700_000_000),
        span_row("c000000000000002", chat_attributes(
                     "gpt-4o-mini", "gpt-4o-mini-2024-07-18", (300, 20), "1.5e-05",
                     **{"gen_ai.response.finish_reasons": '["tool_calls"]'}),
                 parent="a000000000000001", name="chat gpt-4o-mini", duration_ns=200_000_000),
        span_row("e000000000000001", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order",
                                      "gen_ai.tool.type": "function", "gen_ai.tool.call.id": "call_1"},
                 parent="a000000000000001", name="execute_tool lookup_order", kind="Internal", duration_ns=3_000),
        # Not a GenAI span: stays out of llm_calls.
        span_row("f000000000000001", {"http.request.method": "POST", "http.route": "/ask"},
                 name="POST /ask", kind="Server", duration_ns=1_000_000_000),
        # A failed call: no response model, no usage, no cost; the deprecated gen_ai.system names the provider.
        span_row("c000000000000003", {"gen_ai.operation.name": "chat", "gen_ai.system": "openai",
                                      "gen_ai.request.model": "gpt-4o", "error.type": "RateLimitError",
                                      "http.response.status_code": "429"},
                 name="chat gpt-4o", status="Error", duration_ns=50_000_000, trace_id="1" * 32),
        # A model missing from the price table: tokens, but no cost attribute at all.
        span_row("c000000000000004", chat_attributes("my-finetune", "my-finetune", (50, 10), None),
                 name="chat my-finetune", start=TWO_DAYS_AGO, duration_ns=120_000_000, trace_id="2" * 32),
        # An agent that failed.
        span_row("a000000000000002", {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "writer",
                                      "error.type": "ValueError"},
                 name="invoke_agent writer", kind="Internal", status="Error", duration_ns=30_000_000,
                 trace_id="2" * 32, start=TWO_DAYS_AGO),
        span_row("a000000000000003", {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "writer"},
                 name="invoke_agent writer", kind="Internal", duration_ns=40_000_000, trace_id="3" * 32),
    ]


def expected_calls(spans: list[list[Any]], server_tz: ZoneInfo) -> dict[str, dict[str, Any]]:
    """What llm_calls should hold for these spans, computed here from the raw rows."""
    expected = {}
    for row in spans:
        a = row[11]
        if not a.get("gen_ai.operation.name"):
            continue
        def number(key: str, a: dict[str, str] = a) -> int:
            return int(a.get(key, "0"))

        expected[row[2]] = {
            "Timestamp": row[0].astimezone(server_tz).replace(tzinfo=None),
            "TraceId": row[1], "ParentSpanId": row[3], "ServiceName": row[7], "SpanName": row[5],
            "Operation": a["gen_ai.operation.name"],
            "Provider": a.get("gen_ai.provider.name") or a.get("gen_ai.system", ""),
            "RequestModel": a.get("gen_ai.request.model", ""),
            "ResponseModel": a.get("gen_ai.response.model") or a.get("gen_ai.request.model", ""),
            "AgentName": a.get("gen_ai.agent.name", ""), "ToolName": a.get("gen_ai.tool.name", ""),
            "UserId": a.get("user.id", ""), "SessionId": a.get("session.id", ""),
            "ConversationId": a.get("gen_ai.conversation.id", ""),
            "Tags": ["beta", "support"] if "llmtel.tags" in a else [],
            "StatusCode": row[13], "ErrorType": a.get("error.type", ""), "Duration": row[12],
            "InputTokens": number("gen_ai.usage.input_tokens"), "OutputTokens": number("gen_ai.usage.output_tokens"),
            "CacheReadTokens": number("gen_ai.usage.cache_read.input_tokens"),
            "CacheCreationTokens": number("gen_ai.usage.cache_creation.input_tokens"),
            "ReasoningTokens": number("gen_ai.usage.reasoning.output_tokens"),
            "Cost": Decimal(a["gen_ai.usage.cost"]) if "gen_ai.usage.cost" in a else None,
            "TimeToFirstChunk": float(a["gen_ai.response.time_to_first_chunk"])
            if "gen_ai.response.time_to_first_chunk" in a else None,
            "FinishReasons": json.loads(a.get("gen_ai.response.finish_reasons", "[]")),
        }
    return expected


def insert_spans(client: Any, options: SchemaOptions, spans: list[list[Any]], **settings: Any) -> None:
    client.insert(options.traces_table, spans, database=options.database,
                  column_names=list(schema.TRACES_COLUMN_NAMES),
                  column_type_names=[t for _, t in schema.TRACES_COLUMNS], settings=settings or None)


def stored_calls(client: Any, options: SchemaOptions) -> dict[str, dict[str, Any]]:
    result = client.query(f"SELECT * FROM {options.qualified('llm_calls')}")
    rows = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
    assert len({r["SpanId"] for r in rows}) == len(rows), "a span stored twice"
    return {r.pop("SpanId"): r for r in rows}


def server_tz(client: Any) -> ZoneInfo:
    return ZoneInfo(client.command("SELECT timezone()"))


def expected_daily(calls: dict[str, dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    daily: dict[tuple[Any, ...], dict[str, Any]] = {}
    for call in calls.values():
        key = (call["Timestamp"].date(), call["ServiceName"], call["Provider"], call["ResponseModel"],
               call["Operation"], call["AgentName"])
        acc = daily.setdefault(key, {"Calls": 0, "Errors": 0, "PricedCalls": 0, "InputTokens": 0, "OutputTokens": 0,
                                     "CacheReadTokens": 0, "Cost": Decimal(0), "DurationSum": 0})
        acc["Calls"] += 1
        acc["Errors"] += call["StatusCode"] == "Error"
        acc["PricedCalls"] += call["Cost"] is not None
        for column in ("InputTokens", "OutputTokens", "CacheReadTokens"):
            acc[column] += call[column]
        acc["Cost"] += call["Cost"] or 0
        acc["DurationSum"] += call["Duration"]
    return daily


def stored_daily(client: Any, options: SchemaOptions) -> dict[tuple[Any, ...], dict[str, Any]]:
    result = client.query(
        "SELECT Day, ServiceName, Provider, ResponseModel, Operation, AgentName, sum(Calls) AS Calls,"
        " sum(Errors) AS Errors, sum(PricedCalls) AS PricedCalls, sum(InputTokens) AS InputTokens,"
        " sum(OutputTokens) AS OutputTokens, sum(CacheReadTokens) AS CacheReadTokens, sum(Cost) AS Cost,"
        " sum(DurationSum) AS DurationSum"
        f" FROM {options.qualified('llm_usage_daily')} GROUP BY Day, ServiceName, Provider, ResponseModel,"
        " Operation, AgentName"
    )
    return {row[:6]: dict(zip(result.column_names[6:], row[6:], strict=True)) for row in result.result_rows}


def counts(client: Any, options: SchemaOptions) -> dict[str, int]:
    tables = (options.traces_table, options.trace_id_ts_table, options.llm_calls_table)
    found = {t: int(client.command(f"SELECT count() FROM {options.qualified(t)}")) for t in tables}
    found["llm_usage_daily.Calls"] = int(
        client.command(f"SELECT sum(Calls) FROM {options.qualified(options.llm_usage_daily_table)}")
    )
    return found


def test_apply_is_idempotent_and_creates_every_object(client: Any, options: SchemaOptions) -> None:
    schema.apply(client, options)
    schema.apply(client, options)
    tables = client.query(
        "SELECT name, engine FROM system.tables WHERE database = {db:String} ORDER BY name",
        parameters={"db": options.database},
    ).result_rows
    assert tables == [
        ("llm_calls", "MergeTree"), ("llm_calls_mv", "MaterializedView"),
        ("llm_usage_daily", "AggregatingMergeTree"), ("llm_usage_daily_mv", "MaterializedView"),
        ("otel_traces", "MergeTree"), ("otel_traces_trace_id_ts", "AggregatingMergeTree"),
        ("otel_traces_trace_id_ts_mv", "MaterializedView"),
    ]
    for table in ("otel_traces", "otel_traces_trace_id_ts", "llm_calls", "llm_usage_daily"):
        create = client.command(f"SHOW CREATE TABLE {options.qualified(table)}")
        assert "non_replicated_deduplication_window = 10000" in create, table


def test_cluster_render_is_its_single_node_twin_which_runs(client: Any, options: SchemaOptions) -> None:
    # chDB has no cluster and no Keeper: the ON CLUSTER / Replicated render is checked to be the
    # single-node render plus exactly those, and the single-node twin is run.
    cluster = replace(options, cluster="c1", engine=REPLICATED, ttl_seconds=86400)
    twin = replace(options, ttl_seconds=86400)
    lookup, rollup = schema.lookup_engine(REPLICATED), schema.rollup_engine(REPLICATED)
    undone = [
        s.replace(" ON CLUSTER c1", "").replace(lookup, "AggregatingMergeTree()")
        .replace(rollup, "AggregatingMergeTree()").replace(REPLICATED, "MergeTree()")
        for s in schema.render(cluster)
    ]
    twin_statements = schema.render(twin)
    assert [_normalise(s) for s in undone] == [_normalise(s) for s in twin_statements if not s.startswith("ALTER")]
    for statement in undone:
        client.command(statement)
    assert int(client.command(
        "SELECT count() FROM system.tables WHERE database = {db:String}", parameters={"db": options.database}
    )) == 7


def test_insert_columns_are_the_tables(client: Any, options: SchemaOptions) -> None:
    schema.apply(client, options)
    described = client.query(f"DESCRIBE TABLE {options.qualified('otel_traces')}").result_rows
    types = {row[0]: row[1] for row in described}
    assert len(schema.TRACES_COLUMNS) == 22
    assert {name: types[name] for name in schema.TRACES_COLUMN_NAMES} == dict(schema.TRACES_COLUMNS)


@pytest.mark.parametrize(("full_text_search", "index_type"), [(True, "text"), (False, "bloom_filter")])
def test_trace_id_index_follows_the_server_and_the_option(
    client: Any, options: SchemaOptions, full_text_search: bool, index_type: str
) -> None:
    assert schema.server_has_full_text_search(client.server_version)  # chDB 4.4 is ClickHouse 26.9
    schema.apply(client, replace(options, full_text_search=full_text_search))
    found = client.command(
        "SELECT type FROM system.data_skipping_indices WHERE database = {db:String}"
        " AND table = 'otel_traces' AND name = 'idx_trace_id'",
        parameters={"db": options.database},
    )
    assert found == index_type


def test_ttl_applies_to_every_table(client: Any, options: SchemaOptions) -> None:
    with_ttl = replace(options, ttl_seconds=7 * 86400)
    schema.apply(client, with_ttl)
    expectations = {
        "otel_traces": "TTL toDateTime(Timestamp) + toIntervalDay(7)",
        "otel_traces_trace_id_ts": "TTL toDateTime(Start) + toIntervalDay(7)",
        "llm_calls": "TTL toDateTime(Timestamp) + toIntervalDay(7)",
        "llm_usage_daily": "TTL Day + toIntervalDay(7)",
    }
    for table, ttl in expectations.items():
        assert ttl in client.command(f"SHOW CREATE TABLE {with_ttl.qualified(table)}").replace("\\n", " "), table
    # A span older than the TTL is gone from every table; a recent one stays.
    old = span_row("c0000000000000aa", chat_attributes("gpt-4o", "gpt-4o", (1, 1), "0.1"),
                   start=NOW - timedelta(days=30), trace_id="4" * 32)
    insert_spans(client, with_ttl, [old, *sample_spans()[:2]])
    client.command(f"OPTIMIZE TABLE {with_ttl.qualified('llm_calls')} FINAL")
    assert "c0000000000000aa" not in stored_calls(client, with_ttl)
    assert set(stored_calls(client, with_ttl)) == {"a000000000000001", "c000000000000001"}


def test_llm_calls_rows_are_typed_from_the_span_attributes(client: Any, options: SchemaOptions) -> None:
    schema.apply(client, options)
    spans = sample_spans()
    insert_spans(client, options, spans, **schema.INSERT_SETTINGS)
    stored = stored_calls(client, options)
    expected = expected_calls(spans, server_tz(client))
    assert set(stored) == set(expected) and "f000000000000001" not in stored
    for span_id, row in expected.items():
        assert stored[span_id] == row, span_id
    # The spot checks a reader cares about, stated outright.
    assert stored["c000000000000002"]["Cost"] == Decimal("0.000015")  # Go's 'g' form of a small double
    assert stored["c000000000000004"]["Cost"] is None  # no price: unknown, not 0
    assert stored["c000000000000003"]["ResponseModel"] == "gpt-4o"  # no response: the requested model
    assert stored["c000000000000003"]["Provider"] == "openai"  # from the deprecated gen_ai.system
    assert stored["c000000000000001"]["Tags"] == ["beta", "support"]
    assert stored["c000000000000001"]["TimeToFirstChunk"] == pytest.approx(0.41)


def test_daily_rollup_matches_the_calls(client: Any, options: SchemaOptions) -> None:
    schema.apply(client, options)
    spans = sample_spans()
    insert_spans(client, options, spans[:4], **schema.INSERT_SETTINGS)  # two batches: rows merge by key
    insert_spans(client, options, spans[4:], **schema.INSERT_SETTINGS)
    expected = expected_daily(expected_calls(spans, server_tz(client)))
    assert stored_daily(client, options) == expected
    chat_key = next(k for k in expected if k[3] == "gpt-4o-mini-2024-07-18")
    assert expected[chat_key]["Cost"] == Decimal("0.000243") and expected[chat_key]["Calls"] == 2
    p50, p95 = client.query(
        "SELECT quantilesTDigestMerge(0.5, 0.95)(DurationDigest) FROM "
        f"{options.qualified('llm_usage_daily')} WHERE ResponseModel = 'gpt-4o-mini-2024-07-18'"
    ).result_rows[0][0]
    assert 200_000_000 <= p50 <= p95 <= 700_000_000


def test_trace_lookup_table_spans_each_trace(client: Any, options: SchemaOptions) -> None:
    schema.apply(client, options)
    insert_spans(client, options, sample_spans())
    found = client.query(
        f"SELECT TraceId, min(Start), max(End) FROM {options.qualified('otel_traces_trace_id_ts')}"
        " GROUP BY TraceId ORDER BY TraceId"
    ).result_rows
    tz = server_tz(client)
    yesterday, two_days_ago = (t.astimezone(tz).replace(tzinfo=None) for t in (YESTERDAY, TWO_DAYS_AGO))
    assert found == [
        ("0af7651916cd43dd8448eb211c80319c", yesterday, yesterday),
        ("1" * 32, yesterday, yesterday),
        ("2" * 32, two_days_ago, two_days_ago),
        ("3" * 32, yesterday, yesterday),
    ]


def test_a_replayed_batch_is_stored_once_in_every_table(client: Any, options: SchemaOptions) -> None:
    schema.apply(client, options)
    spans = sample_spans()
    settings = {**schema.INSERT_SETTINGS, "insert_deduplication_token": "batch-0001"}
    insert_spans(client, options, spans, **settings)
    once = counts(client, options)
    once_daily = stored_daily(client, options)
    insert_spans(client, options, spans, **settings)  # the retry after an ambiguous failure
    assert counts(client, options) == once
    assert stored_daily(client, options) == once_daily
    # Another batch (another token) with other spans is stored.
    other = [span_row("c0000000000000bb", chat_attributes("gpt-4o", "gpt-4o", (5, 5), "0.01"), trace_id="5" * 32)]
    insert_spans(client, options, other, **{**settings, "insert_deduplication_token": "batch-0002"})
    assert counts(client, options)["llm_calls"] == once["llm_calls"] + 1


def test_without_the_view_setting_a_replay_doubles_the_llm_tables(client: Any, options: SchemaOptions) -> None:
    # Why INSERT_SETTINGS carries deduplicate_blocks_in_dependent_materialized_views: the traces
    # table drops the repeat either way, the views below it only with the setting.
    schema.apply(client, options)
    spans = sample_spans()
    settings = {**schema.INSERT_SETTINGS, "insert_deduplication_token": "batch-0001",
                "deduplicate_blocks_in_dependent_materialized_views": 0}
    insert_spans(client, options, spans, **settings)
    once = counts(client, options)
    insert_spans(client, options, spans, **settings)
    twice = counts(client, options)
    assert twice["otel_traces"] == once["otel_traces"]
    assert twice["llm_calls"] == 2 * once["llm_calls"]
    assert twice["llm_usage_daily.Calls"] == 2 * once["llm_usage_daily.Calls"]


def test_without_the_window_a_replay_doubles_the_traces_table(client: Any, options: SchemaOptions) -> None:
    no_window = replace(options, deduplication_window=0)
    schema.apply(client, no_window)
    settings = {**schema.INSERT_SETTINGS, "insert_deduplication_token": "batch-0001"}
    insert_spans(client, no_window, sample_spans(), **settings)
    insert_spans(client, no_window, sample_spans(), **settings)
    assert counts(client, no_window)["otel_traces"] == 2 * len(sample_spans())


def test_backfill_fills_the_llm_layer_from_older_spans(client: Any, options: SchemaOptions) -> None:
    # Spans stored by a Collector before llmtel's schema step added the LLM views.
    database, *_ = schema.render(options)
    for statement in [database, *schema.render_traces(options)]:
        client.command(statement)
    assert int(client.command(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name LIKE 'llm%'",
        parameters={"db": options.database})) == 0
    spans = sample_spans()
    insert_spans(client, options, spans)
    schema.apply(client, options)
    assert stored_calls(client, options) == {}

    # The window holds yesterday's spans only; the day before stays out until asked for.
    tz = server_tz(client)
    schema.backfill(client, options, YESTERDAY - timedelta(hours=1), NOW)
    all_expected = expected_calls(spans, tz)
    recent = {k: v for k, v in all_expected.items() if v["Timestamp"].date() == YESTERDAY.astimezone(tz).date()}
    assert stored_calls(client, options) == recent and len(recent) < len(all_expected)

    # Rerun over a wider window, overlapping what is there: each span once.
    schema.backfill(client, options, TWO_DAYS_AGO - timedelta(hours=1), NOW)
    schema.backfill(client, options, TWO_DAYS_AGO - timedelta(hours=1), NOW)
    assert stored_calls(client, options) == all_expected
    assert stored_daily(client, options) == expected_daily(all_expected)


def test_backfill_text_keeps_the_window_as_query_parameters() -> None:
    text = schema.render_backfill(SchemaOptions(database="otel"))
    assert text.startswith("INSERT INTO `otel`.`llm_calls`")
    assert text.count("{start:DateTime64(9)}") == 2 and text.count("{end:DateTime64(9)}") == 2
    # The view and the backfill share one SELECT.
    view = next(s for s in schema.render(SchemaOptions(database="otel")) if "`llm_calls_mv`" in s)
    shared = view[view.index("SELECT"):]
    assert shared in text


def _readme_queries() -> list[str]:
    readme = ROOT.joinpath("README.md").read_text(encoding="utf-8")
    start = readme.index("\n## ClickHouse tables and example queries\n")
    following = readme.find("\n## ", start + 1)
    section = readme[start:following if following != -1 else len(readme)]
    return re.findall(r"```sql\n(.*?)```", section, re.DOTALL)


def test_readme_queries_run_and_cost_per_model_per_day_is_right(client: Any, options: SchemaOptions) -> None:
    queries = _readme_queries()
    assert len(queries) == 4
    schema.apply(client, options)
    spans = sample_spans()
    insert_spans(client, options, spans, **schema.INSERT_SETTINGS)
    reader = clickhouse_connect.get_client(interface="chdb", path=client.path, database=options.database)
    try:
        results = [reader.query(q) for q in queries]
    finally:
        reader.close()
    for query, result in zip(queries, results, strict=True):
        assert result.result_rows, query

    cost = [dict(zip(results[0].column_names, row, strict=True)) for row in results[0].result_rows]
    expected: dict[tuple[date, str], dict[str, Any]] = {}
    for call in expected_calls(spans, server_tz(client)).values():
        if not call["ResponseModel"]:
            continue
        acc = expected.setdefault((call["Timestamp"].date(), call["ResponseModel"]),
                                  {"calls": 0, "unpriced_calls": 0, "input_tokens": 0, "output_tokens": 0,
                                   "cost_usd": Decimal(0)})
        acc["calls"] += 1
        acc["unpriced_calls"] += call["Cost"] is None
        acc["input_tokens"] += call["InputTokens"]
        acc["output_tokens"] += call["OutputTokens"]
        acc["cost_usd"] += call["Cost"] or 0
    assert {(r.pop("Day"), r.pop("model")): r for r in cost} == expected

    agents = {row[0]: row[1:] for row in results[3].result_rows}
    assert agents == {"writer": (2, 1, 0.5), "triage": (1, 0, 0.0)}
    traces = results[2].result_rows
    assert traces[0][0] == "0af7651916cd43dd8448eb211c80319c" and traces[0][4] == Decimal("0.000243")
