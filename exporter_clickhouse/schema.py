"""The ClickHouse tables llmtel writes to: the Collector's ``otel_traces`` set, plus the LLM layer.

The traces tables are the OpenTelemetry Collector contrib ``clickhouseexporter``'s, statement for
statement (the release is pinned in ``collector-config.yaml``), so llmtel's exporter, the Collector,
Grafana and OpenLIT can all share them. The LLM layer is fed by materialized views *from* the
traces table, so it fills whichever of the two writers stored the span::

    otel_traces ──otel_traces_trace_id_ts_mv──▶ otel_traces_trace_id_ts   (trace id → time window)
        └───────llm_calls_mv──▶ llm_calls ──llm_usage_daily_mv──▶ llm_usage_daily

Usage::

    import clickhouse_connect
    from llmtel.exporter_clickhouse import schema

    client = clickhouse_connect.get_client(interface="chdb", path="/tmp/llmtel-store")
    options = schema.SchemaOptions(database="otel", ttl_seconds=30 * 86400)
    schema.apply(client, options)                    # idempotent; run it at every start
    client.insert("otel.otel_traces", rows, column_names=schema.TRACES_COLUMN_NAMES,
                  settings={**schema.INSERT_SETTINGS, "insert_deduplication_token": batch_id})
    schema.backfill(client, options, start, end)     # spans stored before the views existed

    # A sharded, replicated cluster: <name>_local tables + Distributed tables under the usual names.
    replicated = "ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')"
    cluster = SchemaOptions(cluster="llmtel", engine=replicated)
    for statement in schema.render_cluster(cluster):
        client.command(statement)

The statements live in ``schema/*.sql``; this module only fills them in. Identifiers are
validated and backtick-quoted; no value is ever formatted into SQL (the backfill window travels
as query parameters).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "CLUSTER_LOCAL_SUFFIX",
    "FULL_TEXT_SEARCH_MIN_VERSION",
    "INSERT_SETTINGS",
    "TRACES_COLUMNS",
    "TRACES_COLUMN_NAMES",
    "SchemaOptions",
    "apply",
    "backfill",
    "lookup_engine",
    "quote_identifier",
    "render",
    "render_backfill",
    "render_cluster",
    "render_traces",
    "rollup_engine",
    "server_has_full_text_search",
    "ttl_expression",
]

# The Collector builds TYPE text(...) indexes from this server version on (versionFullTextSearch
# in exporter_logs.go), bloom filters before it.
FULL_TEXT_SEARCH_MIN_VERSION = (26, 2)

# The Collector's insert columns (internal/sqltemplates/traces_insert.sql), in its order, with the
# types of the table's columns: the exporter can pass them as column_types and skip a DESCRIBE.
TRACES_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Timestamp", "DateTime64(9)"),
    ("TraceId", "String"),
    ("SpanId", "String"),
    ("ParentSpanId", "String"),
    ("TraceState", "String"),
    ("SpanName", "LowCardinality(String)"),
    ("SpanKind", "LowCardinality(String)"),
    ("ServiceName", "LowCardinality(String)"),
    ("ResourceAttributes", "Map(LowCardinality(String), String)"),
    ("ScopeName", "String"),
    ("ScopeVersion", "String"),
    ("SpanAttributes", "Map(LowCardinality(String), String)"),
    ("Duration", "UInt64"),
    ("StatusCode", "LowCardinality(String)"),
    ("StatusMessage", "String"),
    ("Events.Timestamp", "Array(DateTime64(9))"),
    ("Events.Name", "Array(LowCardinality(String))"),
    ("Events.Attributes", "Array(Map(LowCardinality(String), String))"),
    ("Links.TraceId", "Array(String)"),
    ("Links.SpanId", "Array(String)"),
    ("Links.TraceState", "Array(String)"),
    ("Links.Attributes", "Array(Map(LowCardinality(String), String))"),
)
TRACES_COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in TRACES_COLUMNS)

# Sent with every insert into the traces table, next to a per-batch insert_deduplication_token:
# a batch sent again after an ambiguous failure (the server stored it, the answer was lost) is
# then dropped as a duplicate by the traces table AND by every materialized view below it.
# - deduplicate_blocks_in_dependent_materialized_views: without it the traces table skips the
#   repeat but the views still run on it, doubling llm_calls, the rollup and the lookup table
#   (tests/test_schema.py shows both). Servers before 26.x default it to 0.
# - async_insert=0: the batches are already large, an acknowledged insert must mean "stored"
#   (the spool deletes its copy then), and async inserts deduplicate only with further settings.
# Non-replicated tables also need the window apply() sets (non_replicated_deduplication_window);
# replicated ones keep one by default.
INSERT_SETTINGS: dict[str, object] = {
    "insert_deduplicate": 1,
    "deduplicate_blocks_in_dependent_materialized_views": 1,
    "async_insert": 0,
}

# Block hashes a non-replicated table remembers: a replay is caught while fewer than this many
# inserts came after the original (about 2.8 hours at the recommended one insert per second).
DEFAULT_DEDUPLICATION_WINDOW = 10_000

_ENGINE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.DOTALL)
_CLUSTER = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.\-]*|'[^'\\\s;]+')$")
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'")
_DEFAULT_DATABASE = "default"


@dataclass(frozen=True)
class SchemaOptions:
    """Where and how the tables are created; the defaults are the Collector's.

    ``engine`` is the Collector's ``table_engine`` written out, ``name(params)``: ``MergeTree()``,
    or e.g. ``ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')``
    with ``cluster`` set. The lookup and rollup tables take its Aggregating twin, as the Collector
    does. Replicated parameters are used for every table, so they must tell tables apart: use the
    ``{database}``/``{table}`` (or ``{uuid}``) macros, or no parameters at all.
    ``full_text_search`` asks for text indexes; apply() still uses bloom filters on a server
    older than 26.2, where text indexes do not exist.
    """

    database: str = _DEFAULT_DATABASE
    traces_table: str = "otel_traces"
    cluster: str = ""
    engine: str = "MergeTree()"
    ttl_seconds: int = 0
    full_text_search: bool = True
    deduplication_window: int = DEFAULT_DEDUPLICATION_WINDOW

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("invalid ClickHouse schema options: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """Every problem with these options, one sentence each (empty when they are usable)."""
        found = []
        for label, name in (("database", self.database), ("traces table", self.traces_table)):
            problem = _identifier_problem(name)
            if problem:
                found.append(f"{label} {name!r}: {problem}")
        if self.cluster and not _CLUSTER.match(self.cluster):
            found.append(f"cluster {self.cluster!r}: a name (letters, digits, _ . -) or a quoted macro, '{{cluster}}'")
        engine_problem = _engine_problem(self.engine)
        if engine_problem:
            found.append(f"engine {self.engine!r}: {engine_problem}")
        if isinstance(self.ttl_seconds, bool) or not isinstance(self.ttl_seconds, int) or self.ttl_seconds < 0:
            found.append(f"ttl_seconds {self.ttl_seconds!r}: a whole number of seconds, 0 for no TTL")
        if isinstance(self.deduplication_window, bool) or not isinstance(self.deduplication_window, int) or (
            self.deduplication_window < 0
        ):
            found.append(f"deduplication_window {self.deduplication_window!r}: a number of inserts, 0 to turn it off")
        return found

    # Companion names derive from the traces table as the Collector derives them.
    @property
    def trace_id_ts_table(self) -> str:
        return f"{self.traces_table}_trace_id_ts"

    @property
    def trace_id_ts_mv(self) -> str:
        return f"{self.traces_table}_trace_id_ts_mv"

    # The LLM layer: one per database, read by name by the CLI.
    @property
    def llm_calls_table(self) -> str:
        return "llm_calls"

    @property
    def llm_calls_mv(self) -> str:
        return "llm_calls_mv"

    @property
    def llm_usage_daily_table(self) -> str:
        return "llm_usage_daily"

    @property
    def llm_usage_daily_mv(self) -> str:
        return "llm_usage_daily_mv"

    @property
    def engine_name(self) -> str:
        match = _ENGINE.match(self.engine)
        assert match is not None  # validated in __post_init__
        return match.group(1)

    @property
    def replicated(self) -> bool:
        """Whether the engine deduplicates inserts by itself (Replicated*, and Cloud's Shared*)."""
        return self.engine_name.startswith(("Replicated", "Shared"))

    @property
    def on_cluster(self) -> str:
        return f"ON CLUSTER {self.cluster}" if self.cluster else ""

    def qualified(self, table: str) -> str:
        """``database.table``, both quoted."""
        return f"{quote_identifier(self.database)}.{quote_identifier(table)}"


def quote_identifier(name: str) -> str:
    """``name`` as a backtick-quoted ClickHouse identifier (what the Collector's ``ident`` renders)."""
    problem = _identifier_problem(name)
    if problem:
        raise ValueError(f"identifier {name!r}: {problem}")
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def ttl_expression(column: str, seconds: int) -> str:
    """``TTL <column> + toIntervalX(n)`` in the largest whole unit, like the Collector's GenerateTTLExpr.

    ``column`` is an SQL expression (``toDateTime(Timestamp)``), not a value; 0 seconds gives ``""``.
    """
    if seconds <= 0:
        return ""
    for unit, size in (("Day", 86400), ("Hour", 3600), ("Minute", 60)):
        if seconds % size == 0:
            return f"TTL {column} + toInterval{unit}({seconds // size})"
    return f"TTL {column} + toIntervalSecond({seconds})"


def lookup_engine(engine: str) -> str:
    """The engine of the Aggregating tables for a configured ``engine``, as the Collector derives it.

    ``MergeTree(...)`` → ``AggregatingMergeTree()``, ``ReplicatedMergeTree(p)`` →
    ``ReplicatedAggregatingMergeTree(p)``, anything else (SharedMergeTree...) unchanged.
    """
    match = _ENGINE.match(engine)
    if match is None:
        raise ValueError(f"engine {engine!r}: {_engine_problem(engine)}")
    name, params = match.group(1), match.group(2) or ""
    if name == "MergeTree":
        return "AggregatingMergeTree()"
    if name == "ReplicatedMergeTree":
        return f"ReplicatedAggregatingMergeTree({params})"
    return _engine_text(engine)


def rollup_engine(engine: str) -> str:
    """The engine of llm_usage_daily: the Aggregating member of the configured engine's family.

    Unlike the lookup table's (kept as the Collector derives it), this one is always Aggregating,
    or the daily sums would not merge: ``SharedMergeTree(p)`` → ``SharedAggregatingMergeTree(p)``.
    """
    match = _ENGINE.match(engine)
    if match is None:
        raise ValueError(f"engine {engine!r}: {_engine_problem(engine)}")
    name, params = match.group(1), (match.group(2) or "").strip()
    for family in ("Replicated", "Shared"):
        if name.startswith(family):
            return f"{family}AggregatingMergeTree({params})"
    return "AggregatingMergeTree()"


def server_has_full_text_search(server_version: str) -> bool:
    """Whether a server of this version (``"26.9.2.1"``) has text indexes; False when unreadable."""
    parts = re.findall(r"\d+", server_version or "")
    if len(parts) < 2:
        return False
    return (int(parts[0]), int(parts[1])) >= FULL_TEXT_SEARCH_MIN_VERSION


def render_traces(options: SchemaOptions) -> list[str]:
    """The Collector's three statements: the traces table, its trace-id lookup table and that table's view."""
    values = _values(options)
    lookup = {**values, "engine": lookup_engine(options.engine),
              "ttl": ttl_expression("toDateTime(Start)", options.ttl_seconds)}
    flags = {"full_text_search": options.full_text_search}
    return [
        _render("traces_table.sql", values, flags),
        _render("traces_trace_id_ts_table.sql", lookup),
        _render("traces_trace_id_ts_mv.sql", values),
    ]


def render(options: SchemaOptions) -> list[str]:
    """Every statement of the schema step, in execution order (all idempotent).

    The database (unless ``default``), the Collector's traces tables, the LLM layer, then the
    deduplication window of every non-replicated table an insert reaches.
    """
    values = _values(options)
    statements = []
    if options.database != _DEFAULT_DATABASE:
        statements.append(_render("database.sql", values))
    statements += render_traces(options)
    statements.append(_render("llm_calls_table.sql", values))
    statements.append(_render("llm_calls_mv.sql", values))
    daily = {**values, "engine": rollup_engine(options.engine), "ttl": ttl_expression("Day", options.ttl_seconds)}
    statements.append(_render("llm_usage_daily_table.sql", daily))
    statements.append(_render("llm_usage_daily_mv.sql", values))
    if not options.replicated and options.deduplication_window > 0:
        for table in (options.traces_table, options.trace_id_ts_table, options.llm_calls_table,
                      options.llm_usage_daily_table):
            statements.append(
                _render("dedup_window.sql", {**values, "table": quote_identifier(table),
                                             "window": str(options.deduplication_window)})
            )
    return statements


# The cluster layout (render_cluster): each node holds the real tables under <name>_local; the
# usual names are Distributed tables over them.
CLUSTER_LOCAL_SUFFIX = "_local"

# How the Distributed tables written through spread rows over shards: by trace, so a trace's
# spans, its trace-id lookup row and its llm_calls rows live on one shard (the lookup's min/max
# and a trace view then read one shard, and the views below see whole traces).
_TRACE_SHARDING_KEY = "cityHash64(TraceId)"


def render_cluster(options: SchemaOptions) -> list[str]:
    """The schema for a sharded, replicated cluster, in execution order (all idempotent, all ``ON CLUSTER``).

    Every node gets the tables of ``render()`` under ``<name>_local`` (``otel_traces_local``,
    ``llm_calls_local``...; give a ``Replicated*`` ``options.engine``), with the materialized views
    between the local tables, so each shard fills its own LLM layer from the spans it stores.
    The usual names become ``Distributed`` tables over them: ``otel_traces`` (written by the
    Collector and llmtel's exporter, sharded by trace) and ``llm_calls`` (same key, so a backfill
    can write through it) for reads and writes, ``otel_traces_trace_id_ts`` and
    ``llm_usage_daily`` for reads. Writers, Grafana and the CLI keep their table names.
    ``options.cluster`` names the cluster (``remote_servers``), used by ``ON CLUSTER`` and by
    the Distributed tables.
    """
    if not options.cluster:
        raise ValueError("render_cluster needs options.cluster: the cluster's name in remote_servers")
    values = _values(options)
    local = {
        name: quote_identifier(table + CLUSTER_LOCAL_SUFFIX)
        for name, table in (
            ("traces_table", options.traces_table),
            ("trace_id_ts_table", options.trace_id_ts_table),
            ("llm_calls_table", options.llm_calls_table),
            ("llm_usage_daily_table", options.llm_usage_daily_table),
        )
    }
    values = {**values, **local, "llm_calls_select": _render("llm_calls_select.sql", {
        "database": values["database"], "traces_table": local["traces_table"],
    })}
    statements = []
    if options.database != _DEFAULT_DATABASE:
        statements.append(_render("database.sql", values))
    statements.append(_render("traces_table.sql", values, {"full_text_search": options.full_text_search}))
    statements.append(_render("traces_trace_id_ts_table.sql", {
        **values, "engine": lookup_engine(options.engine),
        "ttl": ttl_expression("toDateTime(Start)", options.ttl_seconds),
    }))
    statements.append(_render("traces_trace_id_ts_mv.sql", values))
    statements.append(_render("llm_calls_table.sql", values))
    statements.append(_render("llm_calls_mv.sql", values))
    statements.append(_render("llm_usage_daily_table.sql", {
        **values, "engine": rollup_engine(options.engine), "ttl": ttl_expression("Day", options.ttl_seconds),
    }))
    statements.append(_render("llm_usage_daily_mv.sql", values))
    cluster = options.cluster if options.cluster.startswith("'") else f"'{options.cluster}'"
    for table, sharding_key in (
        (options.traces_table, _TRACE_SHARDING_KEY),
        (options.trace_id_ts_table, ""),
        (options.llm_calls_table, _TRACE_SHARDING_KEY),
        (options.llm_usage_daily_table, ""),
    ):
        statements.append(_render("cluster_distributed_table.sql", {
            **values,
            "table": quote_identifier(table),
            "local_table": quote_identifier(table + CLUSTER_LOCAL_SUFFIX),
            "cluster": cluster,
            "sharding_key": f", {sharding_key}" if sharding_key else "",
        }))
    if not options.replicated and options.deduplication_window > 0:
        for name in ("traces_table", "trace_id_ts_table", "llm_calls_table", "llm_usage_daily_table"):
            statements.append(_render("dedup_window.sql", {
                **values, "table": local[name], "window": str(options.deduplication_window),
            }))
    return statements


def render_backfill(options: SchemaOptions) -> str:
    """The backfill INSERT, with ``{start:DateTime64(9)}`` and ``{end:DateTime64(9)}`` left as query parameters."""
    return _render("llm_calls_backfill.sql", _values(options))


def apply(client: Any, options: SchemaOptions) -> None:
    """Create whatever is missing; safe to run at every start and from several processes.

    ``client`` is a clickhouse-connect Client (HTTP or chDB). Text indexes are used when
    ``options.full_text_search`` and the server has them (>= 26.2), bloom filters otherwise.
    Existing tables are never altered, except for the deduplication window setting.
    """
    full_text_search = options.full_text_search and server_has_full_text_search(str(client.server_version))
    for statement in render(replace(options, full_text_search=full_text_search)):
        client.command(statement)


def backfill(client: Any, options: SchemaOptions, start: datetime, end: datetime) -> None:
    """Fill llm_calls and llm_usage_daily from the spans stored in ``[start, end)``; rerunnable.

    Naive datetimes are taken in the server's time zone, as ClickHouse reads them.
    """
    client.command(render_backfill(options), parameters={"start": start, "end": end})


def _values(options: SchemaOptions) -> dict[str, str]:
    return {
        "database": quote_identifier(options.database),
        "traces_table": quote_identifier(options.traces_table),
        "trace_id_ts_table": quote_identifier(options.trace_id_ts_table),
        "trace_id_ts_mv": quote_identifier(options.trace_id_ts_mv),
        "llm_calls_table": quote_identifier(options.llm_calls_table),
        "llm_calls_mv": quote_identifier(options.llm_calls_mv),
        "llm_usage_daily_table": quote_identifier(options.llm_usage_daily_table),
        "llm_usage_daily_mv": quote_identifier(options.llm_usage_daily_mv),
        "on_cluster": options.on_cluster,
        "engine": _engine_text(options.engine),
        "ttl": ttl_expression("toDateTime(Timestamp)", options.ttl_seconds),
        "llm_calls_select": _render("llm_calls_select.sql", {
            "database": quote_identifier(options.database),
            "traces_table": quote_identifier(options.traces_table),
        }),
    }


def _render(name: str, values: dict[str, str], flags: dict[str, bool] | None = None) -> str:
    return string.Template(_template(name, tuple(sorted((flags or {}).items())))).substitute(values).strip()


@cache
def _template(name: str, flags: tuple[tuple[str, bool], ...]) -> str:
    """A schema/*.sql file with its ``--#if flag`` / ``--#else`` / ``--#end`` blocks resolved and comments dropped.

    Whole-line ``--`` comments document the templates; they are not sent to the server.
    """
    text = resources.files(__package__).joinpath("schema", name).read_text(encoding="utf-8")
    wanted = dict(flags)
    kept: list[str] = []
    branch: list[bool] = []  # one entry per open --#if: is the current branch kept?
    for line in text.splitlines():
        directive = line.strip()
        if directive.startswith("--#if "):
            branch.append(wanted[directive[len("--#if "):].strip()])
        elif directive == "--#else":
            branch[-1] = not branch[-1]
        elif directive == "--#end":
            branch.pop()
        elif all(branch) and not directive.startswith("--"):
            kept.append(line)
    if branch:
        raise ValueError(f"schema/{name}: an --#if without --#end")
    return "\n".join(kept)


def _identifier_problem(name: str) -> str:
    if not isinstance(name, str) or not name:
        return "must not be empty"
    if len(name) > 200:
        return "longer than 200 characters"
    if any(ord(ch) < 32 or ch == "\x7f" for ch in name):
        return "contains a control character"
    return ""


def _engine_text(engine: str) -> str:
    """``engine`` as the Collector writes it: ``Name(params)``, with ``()`` added when absent."""
    match = _ENGINE.match(engine)
    if match is None:
        raise ValueError(f"engine {engine!r}: {_engine_problem(engine)}")
    return f"{match.group(1)}({(match.group(2) or '').strip()})"


def _engine_problem(engine: str) -> str:
    # The engine is operator configuration written into DDL as the Collector writes table_engine;
    # it is checked to be one engine call and nothing after it.
    match = _ENGINE.match(engine) if isinstance(engine, str) else None
    if match is None:
        return "expected Name(params): MergeTree() or ReplicatedMergeTree('/clickhouse/tables/{uuid}', '{replica}')"
    if not match.group(1).endswith("MergeTree"):
        return "only MergeTree-family engines can hold these tables"
    # After the quoted strings are taken out, what is left must be bare words and commas.
    if re.search(r"[;`()'\"]|--|/\*", _QUOTED.sub("", match.group(2) or "")):
        return "parameters must be literals or names separated by commas"
    return ""
