"""``llmtel``: what teams otherwise hand-write against the ClickHouse tables.

::

    llmtel stats --since 24h --by model           calls, errors, tokens, cost, p50/p95/p99 per model
    llmtel calls --top cost --limit 10            the most expensive calls, with their trace ids
    llmtel trace 4bf92f3577b34da6a3ce929d0e0e4736 one request as a span tree
    llmtel traces --since 1h                      recent requests with their totals
    llmtel search "refund"                        calls whose captured prompts or replies mention it
    llmtel prune --older-than 90d                 delete old spans
    llmtel schema print|apply, backfill, doctor

The store is the exporter's: the ``OTEL_EXPORTER_CLICKHOUSE_*`` variables, overridden by
``--endpoint``, ``--database``, ``--username``, ``--password``. Output is a table on a terminal,
``--format json`` or ``csv`` for scripts. Exit codes: 0 ok, 1 no data, 2 usage or connection error.

What ``stats`` and ``calls`` count: model operations (chat, embeddings, ...; every llm_calls row
except ``invoke_agent``, ``invoke_workflow``, ``create_agent`` and ``execute_tool``), so an
agent's run is not counted next to the LLM calls it made, and no cost is counted twice.
``--by agent`` attributes LLM calls to their innermost agent; ``--by tool`` or ``--tool`` count
tool executions instead; ``--operation NAME`` counts exactly that operation.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

from llmtel.exporter_clickhouse import render, schema
from llmtel.exporter_clickhouse.config import ExporterConfig
from llmtel.exporter_clickhouse.durations import parse_duration
from llmtel.exporter_clickhouse.reader import ReadError, StoreReader, open_reader
from llmtel.exporter_clickhouse.render import Column, SpanNode
from llmtel.exporter_clickhouse.schema import quote_identifier

__all__ = ["GROUP_KEYS", "StatsPlan", "main", "parse_time_bound", "plan_stats"]

OK, NO_DATA, USAGE = 0, 1, 2

# Operations that are not model calls: they group model calls (and carry their totals in
# llmtel.* attributes), so counting them as calls would count a request twice.
AGENTIC_OPERATIONS = ("invoke_agent", "invoke_workflow", "create_agent", "execute_tool")
_AGENTIC_SQL = "(" + ", ".join(f"'{name}'" for name in AGENTIC_OPERATIONS) + ")"
_ERROR_SQL = "StatusCode IN ('Error', 'STATUS_CODE_ERROR')"


@dataclass(frozen=True)
class GroupKey:
    """A ``--by`` column: its expression in llm_calls, and in llm_usage_daily when that has it."""

    calls_expression: str
    daily_expression: str | None
    time: bool = False


GROUP_KEYS: dict[str, GroupKey] = {
    "model": GroupKey("ResponseModel", "ResponseModel"),
    "provider": GroupKey("Provider", "Provider"),
    "operation": GroupKey("Operation", "Operation"),
    "agent": GroupKey("AgentName", "AgentName"),
    "service": GroupKey("ServiceName", "ServiceName"),
    "day": GroupKey("toDate(Timestamp)", "Day", time=True),
    "tool": GroupKey("ToolName", None),
    "user": GroupKey("UserId", None),
    "session": GroupKey("SessionId", None),
    "status": GroupKey("StatusCode", None),
    "hour": GroupKey("toStartOfHour(Timestamp)", None, time=True),
}
TOP_ORDERS = {
    "cost": "Cost DESC NULLS LAST, Timestamp DESC",
    "tokens": "InputTokens + OutputTokens DESC, Timestamp DESC",
    "duration": "Duration DESC, Timestamp DESC",
}
# A model name matches itself and its dated snapshots: gpt-4o-mini matches gpt-4o-mini-2024-07-18
# (what the API answers with), not gpt-4o-mini-audio.
_MODEL_SQL = (
    "(ResponseModel = {model:String} OR (startsWith(ResponseModel, concat({model:String}, '-')) AND "
    "match(substring(ResponseModel, length({model:String}) + 2), '^[0-9]{4}-[0-9]{2}-[0-9]{2}$')))"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ONE_DAY = timedelta(days=1)


class UsageError(Exception):
    """A wrong argument: one line, exit 2."""


# --- time windows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeBound:
    """A window bound: an instant (ns since the epoch) or a whole day (in the store's time zone)."""

    nanoseconds: int | None = None
    day: date | None = None

    def as_datetime(self, *, end: bool) -> datetime:
        if self.day is not None:
            moment = datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC)
            return moment + _ONE_DAY if end else moment
        assert self.nanoseconds is not None
        return datetime.fromtimestamp(self.nanoseconds / 1e9, UTC)




def parse_time_bound(text: str, now: datetime, option: str = "--since") -> TimeBound:
    """A window bound from ``24h`` / ``7d`` (that long before ``now``), ``2026-11-01`` (a whole day) or
    ``2026-11-01T10:00Z`` (a time; UTC when it names no zone)."""
    text = text.strip()
    if _DATE.match(text):
        try:
            return TimeBound(day=date.fromisoformat(text))
        except ValueError:
            raise UsageError(f"{option} {text!r}: not a date") from None
    if text[:1].isdigit() and ("-" in text[1:] or ":" in text):
        try:
            moment = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            raise UsageError(f"{option} {text!r}: not a time; write it like 2026-11-01T10:00:00Z") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return TimeBound(nanoseconds=_nanoseconds(moment))
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        raise UsageError(f"{option}: {error}; or a date (2026-11-01) or time (2026-11-01T10:00Z)") from None
    return TimeBound(nanoseconds=_nanoseconds(now) - int(seconds * 1e9))


def _nanoseconds(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def _iso(nanoseconds: int) -> str:
    seconds, rest = divmod(int(nanoseconds), 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest // 1_000_000:03d}Z"


# --- filters --------------------------------------------------------------------------------


@dataclass
class Conditions:
    """A WHERE clause from fixed fragments, and the query parameters their values travel in."""

    clauses: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)

    def add(self, clause: str, **parameters: Any) -> None:
        self.clauses.append(clause)
        self.parameters.update(parameters)

    @property
    def sql(self) -> str:
        return " AND ".join(self.clauses) or "1"


def _time_conditions(conditions: Conditions, since: TimeBound | None, until: TimeBound | None,
                     column: str = "Timestamp", *, daily: bool = False) -> None:
    if since is not None:
        if daily and since.day is not None:
            conditions.add("Day >= {since_day:Date}", since_day=since.day)
        elif daily:
            # The day the window starts in is partial: it comes from llm_calls (_edge_days_condition).
            conditions.add("Day > toDate(fromUnixTimestamp64Nano({since_ns:Int64}))", since_ns=since.nanoseconds)
        elif since.day is not None:
            conditions.add(f"{column} >= toDateTime64({{since_day:Date}}, 9)", since_day=since.day)
        else:
            conditions.add(f"{column} >= fromUnixTimestamp64Nano({{since_ns:Int64}})", since_ns=since.nanoseconds)
    if until is not None:
        # A day given as --until is included whole.
        if daily and until.day is not None:
            conditions.add("Day <= {until_day:Date}", until_day=until.day)
        elif daily:
            conditions.add("Day < toDate(fromUnixTimestamp64Nano({until_ns:Int64}))", until_ns=until.nanoseconds)
        elif until.day is not None:
            conditions.add(f"{column} < toDateTime64({{until_day:Date}} + 1, 9)", until_day=until.day)
        else:
            conditions.add(f"{column} < fromUnixTimestamp64Nano({{until_ns:Int64}})", until_ns=until.nanoseconds)


def _edge_days_condition(since: TimeBound | None, until: TimeBound | None) -> str:
    """The llm_calls rows of the days a window bound cuts (the rest of the window is whole days).

    Days are ``toDate`` in the store's time zone on both sides, as the rollup's view computes
    them, so the split needs no time zone here; llm_calls is partitioned by that day, so
    ClickHouse reads only the edge days' partitions.
    """
    edges = []
    if since is not None and since.day is None:
        edges.append("toDate(Timestamp) = toDate(fromUnixTimestamp64Nano({since_ns:Int64}))")
    if until is not None and until.day is None:
        edges.append("toDate(Timestamp) = toDate(fromUnixTimestamp64Nano({until_ns:Int64}))")
    return "(" + " OR ".join(edges) + ")" if edges else "0"


# Filters: option → (clause, whether llm_usage_daily has the column).
_FILTERS: dict[str, tuple[str, bool]] = {
    "service": ("ServiceName = {service:String}", True),
    "model": (_MODEL_SQL, True),
    "agent": ("AgentName = {agent:String}", True),
    "operation": ("Operation = {operation:String}", True),
    "tool": ("ToolName = {tool:String}", False),
    "user": ("UserId = {user:String}", False),
    "session": ("SessionId = {session:String}", False),
}


def _call_conditions(args: argparse.Namespace, groups: Sequence[str] = (), *, daily: bool = False) -> Conditions:
    conditions = Conditions()
    for name, (clause, _) in _FILTERS.items():
        value = getattr(args, name, None)
        if value is not None:
            conditions.add(clause, **{name: value})
    if args.status is not None:
        conditions.add(_ERROR_SQL if args.status == "error" else f"NOT {_ERROR_SQL}")
    for number, tag in enumerate(args.tag or ()):
        conditions.add(f"has(Tags, {{tag_{number}:String}})", **{f"tag_{number}": tag})
    conditions.add(_operation_scope(args, groups))
    _time_conditions(conditions, args.since, args.until, daily=daily)
    return conditions


def _operation_scope(args: argparse.Namespace, groups: Sequence[str]) -> str:
    """Which rows count as calls (see the module docstring)."""
    if args.operation is not None:
        return "1"
    if "tool" in groups or getattr(args, "tool", None) is not None:
        return "Operation = 'execute_tool'"
    return f"Operation NOT IN {_AGENTIC_SQL}"


# --- stats ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatsPlan:
    """Where ``llmtel stats`` reads: ``source`` and, when it is llm_calls, why not the rollup.

    ``edge_days``: the rollup answers the window's whole days, and llm_calls the day(s) a
    ``--since``/``--until`` time cuts in two.
    """

    source: str  # "llm_usage_daily" or "llm_calls"
    reason: str = ""
    edge_days: bool = False

    @property
    def description(self) -> str:
        if self.edge_days:
            return "llm_usage_daily (whole days) and llm_calls (the days the window cuts)"
        return self.source + (f" (not the daily rollup: {self.reason})" if self.reason else "")


def plan_stats(args: argparse.Namespace) -> StatsPlan:
    """The rollup when it answers the same: only its keys; llm_calls otherwise.

    The rollup's keys are day, service, provider, model, operation and agent; it keeps counts,
    token and cost sums and duration digests. A window of dates (``--since 2026-11-01 --until
    2026-11-30``) or none is whole days. A window bounded by a time (``--since 30d``) reads its
    whole days from the rollup and the day(s) it cuts from llm_calls, merged: the same counts,
    tokens and cost, and percentiles within the t-digest's error. ``--source`` forces one table
    (``--source daily`` only for whole days).
    """
    reasons = []
    for group in args.by:
        if GROUP_KEYS[group].daily_expression is None:
            reasons.append(f"--by {group}")
    for name, (_, in_daily) in _FILTERS.items():
        if getattr(args, name, None) is not None and not in_daily:
            reasons.append(f"--{name}")
    if args.status is not None:
        reasons.append("--status")
    if args.tag:
        reasons.append("--tag")
    cut_by = [option for option, bound in (("--since", args.since), ("--until", args.until))
              if bound is not None and bound.day is None]
    if args.source == "calls":
        return StatsPlan("llm_calls", "--source calls")
    if args.source == "daily" and (reasons or cut_by):
        reasons += [f"{option} is not a date" for option in cut_by]
        raise UsageError(f"--source daily: llm_usage_daily cannot answer this ({', '.join(reasons)})")
    if reasons:
        return StatsPlan("llm_calls", ", ".join(reasons))
    return StatsPlan("llm_usage_daily", edge_days=bool(cut_by))


def _group_columns(groups: Sequence[str], *, daily: bool) -> str:
    """``expression AS `group`,`` for each --by column, from the table the query reads."""
    selected = []
    for group in groups:
        key = GROUP_KEYS[group]
        expression = key.daily_expression if daily else key.calls_expression
        selected.append(f"{expression} AS {quote_identifier(group)},")
    return "\n    ".join(selected)


def _stats_rows(args: argparse.Namespace, plan: StatsPlan, reader: StoreReader) -> list[dict[str, Any]]:
    aliases = [quote_identifier(group) for group in args.by]
    time_keys = [quote_identifier(group) for group in args.by if GROUP_KEYS[group].time]
    order = [f"{key} ASC" for key in time_keys] + ["cost DESC", "calls DESC"]
    order += [f"{alias} ASC" for alias in aliases if alias not in time_keys]
    group_by = f"GROUP BY {', '.join(aliases)}" if aliases else ""
    if plan.edge_days:
        daily = _call_conditions(args, args.by, daily=True)
        edges = _call_conditions(args, args.by)
        edges.add(_edge_days_condition(args.since, args.until))
        return reader.rows(
            "stats_daily_and_edge_days.sql", {**daily.parameters, **edges.parameters},
            group_columns="\n    ".join(f"{alias}," for alias in aliases),
            daily_group_columns=_group_columns(args.by, daily=True),
            calls_group_columns=_group_columns(args.by, daily=False),
            daily_where=daily.sql, calls_where=edges.sql, group_by=group_by, order_by=", ".join(order),
        )
    daily = plan.source == "llm_usage_daily"
    conditions = _call_conditions(args, args.by, daily=daily)
    return reader.rows(
        "stats_daily.sql" if daily else "stats_calls.sql",
        conditions.parameters,
        group_columns=_group_columns(args.by, daily=daily),
        where=conditions.sql,
        group_by=group_by,
        order_by=", ".join(order),
    )


def _stats(args: argparse.Namespace, reader: StoreReader) -> int:
    plan = plan_stats(args)
    records = []
    for row in _stats_rows(args, plan, reader):
        if not row["calls"]:
            continue
        record: dict[str, Any] = {group: _plain(row[group]) for group in args.by}
        latency = [_milliseconds(value) for value in row["latency_ns"]]
        record.update(
            calls=int(row["calls"]), errors=int(row["errors"]), error_rate=row["errors"] / row["calls"],
            input_tokens=int(row["input_tokens"]), output_tokens=int(row["output_tokens"]),
            cached_tokens=int(row["cached_tokens"]),
            # No priced call: the cost is unknown, not 0.
            cost=None if row["unpriced_calls"] == row["calls"] else _money(row["cost"]),
            unpriced_calls=int(row["unpriced_calls"]), p50_ms=latency[0], p95_ms=latency[1], p99_ms=latency[2],
        )
        records.append(record)
    columns = [Column(group, group) for group in args.by] + [
        Column("calls", "calls", "int"), Column("errors", "errors", "int"), Column("error_rate", "err %", "percent"),
        Column("input_tokens", "input tok", "int"), Column("output_tokens", "output tok", "int"),
        Column("cached_tokens", "cached tok", "int"), Column("cost", "cost", "cost"),
        Column("p50_ms", "p50", "ms"), Column("p95_ms", "p95", "ms"), Column("p99_ms", "p99", "ms"),
    ]
    return _emit(args, records, columns, f"LLM calls from {plan.description}", "no calls match")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _money(value: Any) -> float | None:
    return None if value is None else float(value)


def _milliseconds(nanoseconds: Any) -> float | None:
    if nanoseconds is None or nanoseconds != nanoseconds:  # NaN: no calls to measure
        return None
    return float(nanoseconds) / 1e6


def _emit(args: argparse.Namespace, records: list[dict[str, Any]], columns: list[Column], title: str,
          empty: str) -> int:
    if not records:
        if args.format == "json":
            sys.stdout.write("[]\n")
        render.write_message(f"llmtel: {empty}")
        return NO_DATA
    render.write_records(records, columns, args.format, title=title)
    return OK


# --- calls ----------------------------------------------------------------------------------


def _calls(args: argparse.Namespace, reader: StoreReader) -> int:
    conditions = _call_conditions(args)
    if args.slower_than is not None:
        conditions.add("Duration > {slower_than_ns:UInt64}", slower_than_ns=int(args.slower_than * 1e9))
    if args.costlier_than is not None:
        conditions.add("Cost > {costlier_than:Decimal64(12)}", costlier_than=args.costlier_than)
    rows = reader.rows("calls.sql", {**conditions.parameters, "limit": args.limit}, where=conditions.sql,
                       order_by=TOP_ORDERS.get(args.top or "", "Timestamp DESC"))
    records = [_call_record(row) for row in rows]
    columns = [
        Column("time", "time", "time"), Column("trace_id", "trace id", "id"), Column("service", "service"),
        Column("operation", "operation"), Column("model", "model"), Column("agent", "agent"),
        Column("status", "status"), Column("duration_ms", "duration", "ms"),
        Column("input_tokens", "input tok", "int"), Column("output_tokens", "output tok", "int"),
        Column("cost", "cost", "cost"),
    ]
    title = f"Top calls by {args.top}" if args.top else "Calls, newest first"
    return _emit(args, records, columns, title, "no calls match")


def _call_record(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "time": _iso(row["start_ns"]), "trace_id": row["trace_id"], "span_id": row["span_id"],
        "service": row["service"], "operation": row["operation"], "model": row["model"], "agent": row["agent"],
        "tool": row["tool"], "user_id": row["user_id"], "status": row["status"], "error_type": row["error_type"],
        "duration_ms": row["duration_ns"] / 1e6, "input_tokens": int(row["input_tokens"]),
        "output_tokens": int(row["output_tokens"]), "cached_tokens": int(row["cached_tokens"]),
        "cost": _money(row["cost"]),
    }


# --- trace / traces -------------------------------------------------------------------------


def _trace(args: argparse.Namespace, reader: StoreReader) -> int:
    trace_id = args.trace_id.strip().lower()
    rows = reader.rows("trace.sql", {"trace_id": trace_id})
    if not rows:
        if args.format == "json":
            sys.stdout.write("[]\n")
        render.write_message(f"llmtel: no trace {trace_id!r} in {reader.where}")
        return NO_DATA
    roots = span_tree(rows)
    render.write_tree(roots, args.format, title=f"trace {trace_id}")
    return OK


def span_tree(rows: Sequence[dict[str, Any]]) -> list[SpanNode]:
    """The spans of one trace as trees (a span whose parent is not stored is a root), with subtree totals."""
    first = min(row["start_ns"] for row in rows)
    nodes: dict[str, SpanNode] = {}
    for row in rows:
        record = {
            "span_id": row["span_id"], "parent_span_id": row["parent_span_id"], "name": row["name"],
            "kind": row["kind"], "service": row["service"], "time": _iso(row["start_ns"]),
            "start_ms_offset": (row["start_ns"] - first) / 1e6, "duration_ms": row["duration_ns"] / 1e6,
            "status": row["status"], "status_message": row["status_message"], "operation": row["operation"],
            "model": row["model"], "input_tokens": int(row["input_tokens"]),
            "output_tokens": int(row["output_tokens"]), "cost": _money(row["cost"]), "error_type": row["error_type"],
        }
        nodes[row["span_id"]] = SpanNode(record)
    roots = []
    for node in nodes.values():  # rows come in start order, so children do too
        parent = nodes.get(node.record["parent_span_id"])
        if parent is None or parent is node:
            roots.append(node)
        else:
            parent.children.append(node)
    for root in roots:
        _sum_subtree(root)
    return roots


def _sum_subtree(node: SpanNode) -> dict[str, Any]:
    """``node.totals``: spans, LLM calls, tokens, errors and cost of its subtree.

    The cost sums the priced LLM calls; with none priced it is None (unknown, not 0).
    """
    record = node.record
    model_call = bool(record["operation"]) and record["operation"] not in AGENTIC_OPERATIONS
    priced = model_call and record["cost"] is not None
    totals = {
        "spans": 1,
        "llm_calls": int(model_call),
        "input_tokens": record["input_tokens"] if model_call else 0,
        "output_tokens": record["output_tokens"] if model_call else 0,
        "errors": int(record["status"] in ("Error", "STATUS_CODE_ERROR")),
    }
    cost = Decimal(str(record["cost"])) if priced else Decimal(0)
    for child in node.children:
        below = _sum_subtree(child)
        for key in totals:
            totals[key] += below[key]
        if below["cost"] is not None:
            cost += Decimal(str(below["cost"]))
            priced = True
    node.totals = {**totals, "cost": float(cost) if priced else None}
    return node.totals


def _traces(args: argparse.Namespace, reader: StoreReader) -> int:
    conditions = Conditions()
    if args.service is not None:
        conditions.add("ServiceName = {service:String}", service=args.service)
    if args.user is not None:
        conditions.add("SpanAttributes['user.id'] = {user:String}", user=args.user)
    _time_conditions(conditions, args.since, args.until)
    rows = reader.rows("traces.sql", {**conditions.parameters, "limit": args.limit}, where=conditions.sql,
                       agentic_operations=_AGENTIC_SQL)
    records = [
        {
            "time": _iso(row["start_ns"]), "trace_id": row["trace_id"], "name": row["name"], "service": row["service"],
            "user_id": row["user_id"], "duration_ms": row["duration_ns"] / 1e6, "status": row["status"],
            "spans": int(row["spans"]), "llm_calls": int(row["llm_calls"]), "input_tokens": int(row["input_tokens"]),
            "output_tokens": int(row["output_tokens"]),
            # No priced call: the cost is unknown, not 0.
            "cost": _money(row["cost"]) if row["priced_calls"] else None,
            "unpriced_calls": int(row["llm_calls"]) - int(row["priced_calls"]), "errors": int(row["errors"]),
        }
        for row in rows
    ]
    columns = [
        Column("time", "time", "time"), Column("trace_id", "trace id", "id"), Column("name", "root span"),
        Column("service", "service"), Column("duration_ms", "duration", "ms"), Column("spans", "spans", "int"),
        Column("llm_calls", "LLM calls", "int"), Column("input_tokens", "input tok", "int"),
        Column("output_tokens", "output tok", "int"), Column("cost", "cost", "cost"), Column("errors", "errors", "int"),
    ]
    return _emit(args, records, columns, "Recent traces", "no traces match")


# --- search ---------------------------------------------------------------------------------


def _search(args: argparse.Namespace, reader: StoreReader) -> int:
    if not args.text:
        raise UsageError("search: give the text to look for")
    conditions = Conditions()
    if args.service is not None:
        conditions.add("ServiceName = {service:String}", service=args.service)
    _time_conditions(conditions, args.since, args.until)
    # Inside the stored JSON, quotes, backslashes and control characters are escaped.
    text_json = json.dumps(args.text, ensure_ascii=False)[1:-1]
    parameters = {**conditions.parameters, "text": args.text, "text_json": text_json, "limit": args.limit,
                  "context": args.context}
    rows = reader.rows("search.sql", parameters, where=conditions.sql)
    records = [
        {"time": _iso(row["start_ns"]), "trace_id": row["trace_id"], "span_id": row["span_id"], "name": row["name"],
         "service": row["service"], "model": row["model"], "field": row["field"], "snippet": row["snippet"]}
        for row in rows
    ]
    columns = [Column("time", "time", "time"), Column("trace_id", "trace id", "id"), Column("name", "span"),
               Column("field", "field"), Column("snippet", "snippet")]
    return _emit(args, records, columns, f"Captured content containing {args.text!r}", "no captured content matches")


# --- prune ----------------------------------------------------------------------------------


@dataclass
class PrunePlan:
    table: str
    time_column: str
    cutoff_sql: str
    whole_partitions: list[str] = field(default_factory=list)
    dropped_rows: int = 0
    deleted_rows: int = 0

    @property
    def rows(self) -> int:
        return self.dropped_rows + self.deleted_rows


_PARTITION_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_CUTOFF = "fromUnixTimestamp64Nano({cutoff_ns:Int64})"


def _prune(args: argparse.Namespace, reader: StoreReader) -> int:
    if args.older_than <= 0:
        raise UsageError("--older-than: must be more than 0, e.g. 90d")
    cutoff_ns = _nanoseconds(datetime.now(UTC)) - int(args.older_than * 1e9)
    options = reader.options
    plans = [
        PrunePlan(options.traces_table, "Timestamp", _CUTOFF),
        PrunePlan(options.trace_id_ts_table, "End", _CUTOFF),
        PrunePlan(options.llm_calls_table, "Timestamp", _CUTOFF),
        # The rollup keeps whole days: the day the cutoff falls in stays.
        PrunePlan(options.llm_usage_daily_table, "Day", f"toDate({_CUTOFF})"),
    ]
    parameters = {"cutoff_ns": cutoff_ns}
    for plan in plans:
        for row in reader.rows("prune_partitions.sql", parameters, table=quote_identifier(plan.table),
                               time_column=plan.time_column, cutoff=plan.cutoff_sql):
            if row["older"] == row["total"] and _PARTITION_ID.match(row["partition_id"]):
                plan.whole_partitions.append(row["partition_id"])
                plan.dropped_rows += int(row["total"])
            else:
                plan.deleted_rows += int(row["older"])
    cutoff = _iso(cutoff_ns)
    total = sum(plan.rows for plan in plans)
    for plan in plans:
        render.write_message(f"{plan.table}: {plan.rows} rows older than {cutoff} "
                             f"({len(plan.whole_partitions)} partitions dropped whole, {plan.deleted_rows} rows "
                             f"deleted)", sys.stdout)
    if total == 0:
        render.write_message(f"llmtel: nothing older than {cutoff}")
        return OK
    if args.dry_run:
        return OK
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"prune would delete {total} rows: add --yes to confirm (stdin is not a terminal)")
        answer = input(f"Delete these {total} rows? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            render.write_message("llmtel: nothing deleted")
            return OK
    on_cluster = options.on_cluster
    for plan in plans:
        table = quote_identifier(plan.table)
        for partition in plan.whole_partitions:
            reader.run("prune_drop_partition.sql", table=table, partition_id=f"'{partition}'", on_cluster=on_cluster)
        if plan.deleted_rows:
            reader.run("prune_delete.sql", parameters, table=table, time_column=plan.time_column,
                       cutoff=plan.cutoff_sql, on_cluster=on_cluster)
    render.write_message(f"llmtel: deleted {total} rows older than {cutoff}", sys.stdout)
    return OK


# --- schema / backfill / doctor -------------------------------------------------------------


# The engine of a cluster's <name>_local tables when none is given: {shard} and {replica} are the
# servers' macros; {database}/{table} keep the tables' Keeper paths apart.
CLUSTER_ENGINE = "ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')"
_DEFAULT_ENGINE = ExporterConfig.table_engine


def _schema_options(args: argparse.Namespace, config: ExporterConfig) -> schema.SchemaOptions:
    try:
        options = config.schema_options()
        if args.cluster is not None:
            engine = args.engine or (config.table_engine if config.table_engine != _DEFAULT_ENGINE
                                     else CLUSTER_ENGINE)
            options = dataclasses.replace(options, cluster=args.cluster, engine=engine)
        elif args.engine is not None:
            options = dataclasses.replace(options, engine=args.engine)
        if getattr(args, "no_full_text_search", False):
            options = dataclasses.replace(options, full_text_search=False)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return options


def _schema_statements(args: argparse.Namespace, options: schema.SchemaOptions) -> list[str]:
    """``--cluster``: the sharded, replicated layout (``<name>_local`` tables, Distributed tables under
    the usual names); otherwise what the exporter's schema step runs (with ``ON CLUSTER`` when the
    environment names a cluster, the Collector's ``cluster_name`` layout)."""
    return schema.render_cluster(options) if args.cluster is not None else schema.render(options)


def _schema(args: argparse.Namespace, config: ExporterConfig) -> int:
    options = _schema_options(args, config)
    if args.action == "print":
        sys.stdout.write(";\n\n".join(_schema_statements(args, options)) + ";\n")
        return OK
    reader = open_reader(config, must_exist=False)
    try:
        if args.cluster is not None:
            # As schema.apply decides: text indexes only where the server has them.
            if not schema.server_has_full_text_search(reader.server_version):
                options = dataclasses.replace(options, full_text_search=False)
            for statement in _schema_statements(args, options):
                reader.client.command(statement)
        else:
            schema.apply(reader.client, options)
    except Exception as error:
        reason = str(error).strip().splitlines()[0]
        raise ReadError(f"could not apply the schema on {reader.where}: {reason}") from error
    finally:
        reader.close()
    render.write_message(f"llmtel: schema ready in {reader.where}", sys.stdout)
    return OK


def _backfill(args: argparse.Namespace, reader: StoreReader) -> int:
    start = args.since.as_datetime(end=False) if args.since else datetime(1970, 1, 1, tzinfo=UTC)
    end = args.until.as_datetime(end=True) if args.until else datetime.now(UTC)
    window = {"start": start, "end": end}
    before = reader.rows("backfill_count.sql", window)[0]
    try:
        schema.backfill(reader.client, reader.options, start, end)
    except Exception as error:
        raise ReadError(f"backfill failed on {reader.where}: {str(error).strip().splitlines()[0]}") from error
    after = reader.rows("backfill_count.sql", window)[0]
    added = int(list(after.values())[0]) - int(list(before.values())[0])
    render.write_message(f"llmtel: backfill added {added} llm_calls rows for {start.isoformat()} .. {end.isoformat()}",
                         sys.stdout)
    return OK


def _entry_point_installed(group: str, name: str) -> bool:
    from importlib.metadata import entry_points

    return any(point.name == name for point in entry_points(group=group))


def _doctor(args: argparse.Namespace, config: ExporterConfig) -> int:
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool | None, detail: str) -> None:
        checks.append({"check": name, "status": {True: "ok", False: "FAIL", None: "warn"}[ok], "detail": detail})

    for name, group in _ENTRY_POINTS:
        installed = _entry_point_installed(group, name)
        check(f"entry point {name}", installed,
              f"{group}: {'installed' if installed else 'missing (pip install llmtel)'}")
    try:
        reader = open_reader(config)
    except ReadError as error:
        check("store", False, str(error))
        render.write_records(checks, _DOCTOR_COLUMNS, args.format, title="llmtel doctor")
        return USAGE
    try:
        check("store", True, f"{reader.where}, ClickHouse {reader.server_version}")
        options = reader.options
        present = {row["name"]: row for row in reader.rows("doctor_tables.sql", {"database": options.database})}
        expected = [options.traces_table, options.trace_id_ts_table, options.trace_id_ts_mv, options.llm_calls_table,
                    options.llm_calls_mv, options.llm_usage_daily_table, options.llm_usage_daily_mv]
        for name in expected:
            row = present.get(name)
            if row is None:
                check(f"table {name}", False, "missing: `llmtel schema apply` creates it")
            elif row["engine"] == "MaterializedView":
                check(f"view {name}", True, "exists")
            else:
                (counted,) = reader.rows("doctor_count.sql", table=quote_identifier(name))
                check(f"table {name}", True, f"{int(counted['rows']):,} rows")
        if options.traces_table in present:
            last = reader.rows("doctor_last_span.sql")[0]
            if last["spans"]:
                check("last span", True, _iso(last["last_ns"]))
            else:
                check("last span", None, "no spans stored yet")
    finally:
        reader.close()
    render.write_records(checks, _DOCTOR_COLUMNS, args.format, title="llmtel doctor")
    return OK if all(row["status"] != "FAIL" for row in checks) else NO_DATA


_ENTRY_POINTS = (("llmtel_openai", "opentelemetry_instrumentor"), ("clickhouse", "opentelemetry_traces_exporter"))
_DOCTOR_COLUMNS = [Column("check", "check"), Column("status", "status"), Column("detail", "detail")]


# --- demo / serve (other modules) -----------------------------------------------------------

_PLUGGED = {"demo": "llmtel.exporter_clickhouse.demo", "serve": "llmtel.exporter_clickhouse.serve"}
_PLUGGED_HELP = {"demo": "a local model and the example app, traced into the store",
                 "serve": "own the embedded store: OTLP receiver and read endpoint"}


def _plugged(command: str, argv: list[str]) -> int:
    """``llmtel demo`` / ``llmtel serve``: modules of their own, imported only when asked for."""
    name = _PLUGGED[command]
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name == name:
            render.write_message(f"llmtel {command}: not available in this installation ({name} is missing)")
        else:
            render.write_message(f"llmtel {command}: needs {error.name}: {error}")
        return USAGE
    parser = _Parser(prog=f"llmtel {command}", description=_PLUGGED_HELP[command])
    module.add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return _exit_code(exit_)
    return int(module.run(args))


# --- arguments ------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors in one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _group_list(text: str) -> list[str]:
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in GROUP_KEYS:
            raise argparse.ArgumentTypeError(f"unknown --by column {name!r}; choose from {', '.join(GROUP_KEYS)}")
    return list(dict.fromkeys(names))


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _money_amount(text: str) -> Decimal:
    try:
        value = Decimal(text.strip().lstrip("$"))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount of dollars, e.g. 0.01") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a non-negative amount of dollars, e.g. 0.01")
    return value


def _count(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more")
    return int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    store = argparse.ArgumentParser(add_help=False)
    group = store.add_argument_group("store (default: the OTEL_EXPORTER_CLICKHOUSE_* settings)")
    group.add_argument("--endpoint", help="chdb:///path or http(s)://host:port")
    group.add_argument("--database", help="the database of the tables")
    group.add_argument("--username")
    group.add_argument("--password")
    group.add_argument("--traces-table", help="the traces table's name (default otel_traces)")
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--format", choices=render.FORMATS, default="table", help="table (default), json or csv")
    window = argparse.ArgumentParser(add_help=False)
    window.add_argument("--since", help="24h, 7d, a date (2026-11-01) or a time (2026-11-01T10:00Z, UTC if no zone)")
    window.add_argument("--until", help="as --since; a date includes that whole day")
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--service")
    filters.add_argument("--model", help="a model, with its dated snapshots (gpt-4o-mini-2024-07-18)")
    filters.add_argument("--agent")
    filters.add_argument("--tool")
    filters.add_argument("--user", help="user.id")
    filters.add_argument("--session", help="session.id")
    filters.add_argument("--operation", help="exactly this gen_ai.operation.name (chat, invoke_agent, ...)")
    filters.add_argument("--status", choices=("ok", "error"))
    filters.add_argument("--tag", action="append", help="has this tag (repeat for all of several)")

    parser = _Parser(prog="llmtel", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    stats = commands.add_parser("stats", parents=[store, output, window, filters],
                                help="calls, errors, tokens, cost and latency, grouped")
    stats.add_argument("--by", type=_group_list, default=[], help=f"comma-separated: {', '.join(GROUP_KEYS)}")
    stats.add_argument("--source", choices=("auto", "calls", "daily"), default="auto",
                       help="read llm_calls or the llm_usage_daily rollup (auto: the rollup when it can answer)")
    calls = commands.add_parser("calls", parents=[store, output, window, filters], help="individual calls")
    calls.add_argument("--top", choices=tuple(TOP_ORDERS), help="the most expensive / largest / slowest first")
    calls.add_argument("--slower-than", type=_duration, help="e.g. 5s")
    calls.add_argument("--costlier-than", type=_money_amount, help="dollars, e.g. 0.01")
    calls.add_argument("--limit", type=_positive_int, default=20)
    trace = commands.add_parser("trace", parents=[store, output], help="one trace as a span tree")
    trace.add_argument("trace_id")
    traces = commands.add_parser("traces", parents=[store, output, window], help="recent traces with totals")
    traces.add_argument("--service")
    traces.add_argument("--user", help="user.id on the root span")
    traces.add_argument("--limit", type=_positive_int, default=20)
    search = commands.add_parser("search", parents=[store, output, window], help="search captured content")
    search.add_argument("text")
    search.add_argument("--service")
    search.add_argument("--limit", type=_positive_int, default=20)
    search.add_argument("--context", type=_count, default=60, help="characters shown around the match")
    prune = commands.add_parser("prune", parents=[store], help="delete spans older than a duration")
    prune.add_argument("--older-than", type=_duration, required=True, help="e.g. 90d")
    prune.add_argument("--yes", action="store_true", help="do not ask")
    prune.add_argument("--dry-run", action="store_true", help="only count")
    schema_command = commands.add_parser("schema", parents=[store], help="print or apply the DDL")
    schema_command.add_argument("action", choices=("print", "apply"))
    schema_command.add_argument("--cluster", help="the cluster layout on this cluster (remote_servers name): "
                                "Replicated <name>_local tables and Distributed tables under the usual names")
    schema_command.add_argument("--engine", help="the tables' engine, e.g. ReplicatedMergeTree(...) (default "
                                "OTEL_EXPORTER_CLICKHOUSE_TABLE_ENGINE; with --cluster a ReplicatedMergeTree "
                                "on the {shard}/{replica} macros)")
    schema_command.add_argument("--no-full-text-search", action="store_true",
                                help="bloom filter indexes (servers before 26.2); apply decides by itself")
    backfill = commands.add_parser("backfill", parents=[store, window], help="fill llm_calls from stored spans")
    del backfill
    commands.add_parser("doctor", parents=[store, output], help="check the store, tables and entry points")
    for command, text in _PLUGGED_HELP.items():
        commands.add_parser(command, help=text, add_help=False)
    return parser


def _config(args: argparse.Namespace) -> ExporterConfig:
    overrides = {name: getattr(args, name) for name in ("endpoint", "database", "username", "password",
                                                        "traces_table")
                 if getattr(args, name, None) is not None}
    return ExporterConfig.from_environment(**overrides)


_READERS: dict[str, Callable[[argparse.Namespace, StoreReader], int]] = {
    "stats": _stats, "calls": _calls, "trace": _trace, "traces": _traces, "search": _search, "prune": _prune,
    "backfill": _backfill,
}


def _exit_code(exit_: SystemExit) -> int:
    return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else USAGE)


def main(argv: list[str] | None = None) -> int:
    """Run ``llmtel``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _PLUGGED:
        return _plugged(argv[0], argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return _exit_code(exit_)
    try:
        now = datetime.now(UTC)
        for option in ("since", "until"):
            if getattr(args, option, None) is not None:
                setattr(args, option, parse_time_bound(getattr(args, option), now, f"--{option}"))
        config = _config(args)
        if args.command == "schema":
            return _schema(args, config)
        if args.command == "doctor":
            return _doctor(args, config)
        reader = open_reader(config)
        try:
            return _READERS[args.command](args, reader)
        finally:
            reader.close()
    except UsageError as error:
        render.write_message(f"llmtel {args.command}: {error}")
        return USAGE
    except ReadError as error:
        render.write_message(f"llmtel {args.command}: {error}")
        return NO_DATA if error.missing else USAGE
    except BrokenPipeError:
        # `llmtel calls | head`: the reader went away; nothing more to say.
        return OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
