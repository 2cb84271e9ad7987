"""The llmtel command against the embedded store and a ClickHouse HTTP endpoint, on real telemetry.

The data is made once per module: three support requests through the real openai instrumentation
and the ``workflow``/``agent``/``tool``/``context`` decorators against the fake OpenAI API (content
capture on), plus hand-built spans on fixed days (windows, the rollup, durations and costs,
hostile filter values). The same spans are exported with ``ClickHouseSpanExporter`` into a chDB
store in this process's temp dir and into a chDB-backed HTTP endpoint; every test runs against
both. The CLI runs in-process through ``main()`` (reading ``--format json``), and a few times as
a subprocess. Expected numbers are computed here from the finished spans, not from the store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from clickhouse_http import ChdbHttpEndpoint
from conftest import API_KEY
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from telemetry_capture import TelemetryCapture

from llmtel.exporter_clickhouse import ClickHouseSpanExporter, schema
from llmtel.exporter_clickhouse.cli import main, parse_time_bound
from llmtel.instrumentation import agent, context, tool, workflow

AGENTIC = ("invoke_agent", "invoke_workflow", "create_agent", "execute_tool")
DAY = 86_400 * 10**9
OLD_DAYS = (date(2026, 1, 10), date(2026, 1, 11), date(2026, 1, 12))
HOSTILE = [
    "it's \"quoted\"",
    "back\\slash\\",
    "'; DROP TABLE otel_traces; --",
    "Grüße, 世界 🌍",
    "{service:String} %s $1 ${database}",
    "λ" * 5_000 + "\ttab\nnew line",
]
LOOKUP_TOOL = {"type": "function", "function": {"name": "lookup_order", "parameters": {
    "type": "object", "properties": {"order_id": {"type": "string"}}}}}


# --- the data -------------------------------------------------------------------------------


def _day_ns(day: date, hour: float = 12) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 10**9 + int(hour * 3600 * 10**9)


def built_span(number: int, *, start_ns: int, duration_ns: int = 1_000_000, service: str = "batch-svc",
               operation: str = "chat", model: str = "gpt-4o-mini", input_tokens: int = 10, output_tokens: int = 5,
               cost: float | None = 0.001, user: str = "", agent_name: str = "", tags: Sequence[str] = (),
               error: bool = False, content: str = "") -> ReadableSpan:
    """One finished span as another instrumentation might send it; its own trace."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation, "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
        "gen_ai.response.model": model, "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
    }
    if cost is not None:
        attributes["gen_ai.usage.cost"] = cost
    if user:
        attributes["user.id"] = user
    if agent_name:
        attributes["gen_ai.agent.name"] = agent_name
    if tags:
        attributes["llmtel.tags"] = tuple(tags)
    if content:
        attributes["gen_ai.input.messages"] = json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": content}]}], ensure_ascii=False)
    if error:
        attributes["error.type"] = "RateLimitError"
    context_ = SpanContext(0xC11 << 64 | number, 0xD11 << 32 | number, is_remote=False,
                           trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return ReadableSpan(
        name=f"{operation} {model}", context=context_, parent=None,
        resource=Resource({"service.name": service}), attributes=attributes, kind=SpanKind.CLIENT,
        status=Status(StatusCode.ERROR, "rate limited") if error else Status(StatusCode.UNSET),
        start_time=start_ns, end_time=start_ns + duration_ns,
        instrumentation_scope=InstrumentationScope("another.instrumentation", "1.0"),
    )


def hand_built_spans(now_ns: int) -> list[ReadableSpan]:
    spans = []
    number = 0
    for index, day in enumerate(OLD_DAYS):
        for hour, model in ((9, "gpt-4o-mini"), (10, "gpt-4o"), (11, "gpt-4o-mini")):
            number += 1
            spans.append(built_span(
                number, start_ns=_day_ns(day, hour), duration_ns=(number % 4 + 1) * 1_500_000_000,
                model=model, input_tokens=100 * number, output_tokens=7 * number, cost=0.004 * number,
                service="batch-svc" if index < 2 else "other-svc", error=number % 5 == 0,
                agent_name="planner" if number % 2 else "",
            ))
    number += 1  # an unpriced call
    spans.append(built_span(number, start_ns=_day_ns(OLD_DAYS[1], 13), model="local-llama", cost=None))
    for hostile in HOSTILE:
        number += 1
        spans.append(built_span(
            number, start_ns=_day_ns(date(2026, 1, 15), 1 + number / 60), service=hostile, model=hostile,
            user=hostile, agent_name=hostile, tags=[hostile, "common"], content=f"prefix {hostile} suffix",
            input_tokens=number, output_tokens=1, cost=0.0001,
        ))
    # Around a cutoff 30 days ago at noon: `prune` drops one whole older day and deletes part of a day.
    prune_noon = _day_ns((datetime.fromtimestamp(now_ns / 1e9, UTC) - timedelta(days=30)).date())
    for offset_hours in (-2, 2, -26):
        number += 1
        spans.append(built_span(number, start_ns=prune_noon + int(offset_hours * 3600 * 10**9), service="prune-svc"))
    return spans


@tool(description="Look up an order")
def lookup_order(order_id: str) -> dict:
    return {"order_id": order_id, "status": "shipped"}


def support_request(client: openai.OpenAI, fake: Any, user: str, question: str) -> None:
    @agent("triage")
    def triage() -> str:
        fake.tool_calls = (("lookup_order", '{"order_id": "A1001"}'),)
        first = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": question}],
                                               tools=[LOOKUP_TOOL])
        fake.tool_calls = ()
        for call in first.choices[0].message.tool_calls or []:
            lookup_order(**json.loads(call.function.arguments))
        final = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "system", "content": "You are a support agent."},
                                           {"role": "user", "content": question}])
        return final.choices[0].message.content or ""

    @agent("writer")
    def write(facts: str) -> str:
        stream = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": facts}],
                                                stream=True)
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    with context(user_id=user, session_id=f"session-{user}", tags=["cli-test"]), workflow("support-request"):
        facts = triage()
        client.embeddings.create(model="text-embedding-3-small", input=question)
        write(facts)
        try:
            client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
        except openai.NotFoundError:
            pass


@dataclass
class Dataset:
    spans: list[ReadableSpan]
    real: list[ReadableSpan]
    request_trace_ids: list[str]
    embedded: str
    http: ChdbHttpEndpoint
    service: str
    prune_cutoff_seconds: float


def export(endpoint: str, spans: list[ReadableSpan], database: str, data_dir: Path) -> None:
    exporter = ClickHouseSpanExporter(endpoint=endpoint, database=database, data_dir=str(data_dir))
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


@pytest.fixture(scope="module")
def dataset(fake_openai: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dataset]:
    fake_openai.reset()
    client = openai.OpenAI(base_url=fake_openai.base_url, api_key=API_KEY, max_retries=0)
    capture = TelemetryCapture()
    with capture.instrumented(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true"):
        support_request(client, fake_openai, "alice", "Where is my order A1001?")
        support_request(client, fake_openai, "bob", "I want a REFUND for my broken kettle")
        fake_openai.cached_tokens = 4  # cached prompt tokens on carol's calls
        support_request(client, fake_openai, "carol", 'Please say "hi" to Grüße from me')
    fake_openai.reset()
    real = capture.finished()
    now_ns = time.time_ns()
    spans = real + hand_built_spans(now_ns)
    roots = [span for span in real if span.parent is None]
    assert len(roots) == 3
    base = tmp_path_factory.mktemp("cli")
    embedded = f"chdb://{base / 'store'}"
    http = ChdbHttpEndpoint(base / "http-store")
    http.start()
    try:
        for endpoint in (embedded, http.url):
            for database in ("default", "prune_db", "backfill_db"):
                export(endpoint, spans, database, base / "data")
        noon = _day_ns((datetime.fromtimestamp(now_ns / 1e9, UTC) - timedelta(days=30)).date())
        yield Dataset(spans, real, [f"{root.context.trace_id:032x}" for root in roots], embedded, http,
                      str(real[0].resource.attributes["service.name"]), (time.time_ns() - noon) / 1e9)
    finally:
        http.stop()


@pytest.fixture(scope="module", params=["embedded", "http"])
def store(request: pytest.FixtureRequest, dataset: Dataset) -> str:
    return dataset.embedded if request.param == "embedded" else dataset.http.url


# --- running the command --------------------------------------------------------------------


Runner = Callable[..., tuple[int, Any, str]]


@pytest.fixture
def llmtel(capsys: pytest.CaptureFixture[str], store: str) -> Runner:
    """``llmtel(*argv)`` → (exit code, parsed JSON or None, stderr), against the module's store."""

    def run(*argv: str, fmt: str = "json") -> tuple[int, Any, str]:
        capsys.readouterr()
        extra = ["--format", fmt] if fmt and argv[0] not in ("prune", "schema", "backfill") else []
        code = main([*argv, "--endpoint", store, *extra])
        out, err = capsys.readouterr()
        return code, (json.loads(out) if fmt == "json" and out.strip() else out), err

    return run


# --- expected values, from the spans --------------------------------------------------------


def attribute(span: ReadableSpan, name: str, default: Any = None) -> Any:
    return (span.attributes or {}).get(name, default)


def operation(span: ReadableSpan) -> str:
    return attribute(span, "gen_ai.operation.name", "")


def response_model(span: ReadableSpan) -> str:
    return attribute(span, "gen_ai.response.model") or attribute(span, "gen_ai.request.model", "")


def model_calls(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [span for span in spans if operation(span) and operation(span) not in AGENTIC]


def in_days(span: ReadableSpan, first: date, last: date) -> bool:
    day = datetime.fromtimestamp(span.start_time / 1e9, UTC).date()
    return first <= day <= last


def totals(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    cost = sum((Decimal(str(attribute(s, "gen_ai.usage.cost"))) for s in spans
                if attribute(s, "gen_ai.usage.cost") is not None), Decimal(0))
    return {
        "calls": len(spans),
        "errors": sum(1 for s in spans if s.status.status_code is StatusCode.ERROR),
        "input_tokens": sum(int(attribute(s, "gen_ai.usage.input_tokens", 0)) for s in spans),
        "output_tokens": sum(int(attribute(s, "gen_ai.usage.output_tokens", 0)) for s in spans),
        "cached_tokens": sum(int(attribute(s, "gen_ai.usage.cache_read.input_tokens", 0)) for s in spans),
        "cost": float(cost),
        "unpriced_calls": sum(1 for s in spans if attribute(s, "gen_ai.usage.cost") is None),
    }


def assert_totals(row: dict[str, Any], spans: Sequence[ReadableSpan]) -> None:
    expected = totals(spans)
    assert {key: row[key] for key in expected if key != "cost"} == {k: v for k, v in expected.items() if k != "cost"}
    if expected["unpriced_calls"] == expected["calls"]:
        assert row["cost"] is None  # unknown, not 0
    else:
        assert row["cost"] == pytest.approx(expected["cost"], abs=1e-9)
    assert row["error_rate"] == pytest.approx(expected["errors"] / expected["calls"])


# --- stats ----------------------------------------------------------------------------------


def test_stats_totals_count_model_calls_only(llmtel: Runner, dataset: Dataset) -> None:
    code, rows, _ = llmtel("stats")
    assert code == 0
    (row,) = rows
    assert_totals(row, model_calls(dataset.spans))
    assert row["cached_tokens"] > 0 and row["unpriced_calls"] > 0
    durations = sorted((s.end_time - s.start_time) / 1e6 for s in model_calls(dataset.spans))
    assert durations[0] <= row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] <= durations[-1]


def test_stats_by_model_over_the_real_requests(llmtel: Runner, dataset: Dataset) -> None:
    code, rows, _ = llmtel("stats", "--by", "model", "--since", "1h", "--service", dataset.service)
    assert code == 0
    calls = model_calls(dataset.real)
    assert {row["model"] for row in rows} == {response_model(s) for s in calls}
    for row in rows:
        assert_totals(row, [s for s in calls if response_model(s) == row["model"]])
    # The failed call is counted, as an error of its model.
    failed = next(row for row in rows if row["model"] == "no-such-model")
    assert (failed["errors"], failed["cost"], failed["unpriced_calls"]) == (3, None, 3)


def test_stats_by_agent_attributes_llm_calls_to_the_innermost_agent(llmtel: Runner, dataset: Dataset) -> None:
    code, rows, _ = llmtel("stats", "--by", "agent,user", "--since", "1h")
    assert code == 0
    calls = model_calls(dataset.real)
    keys = {(attribute(s, "gen_ai.agent.name", ""), attribute(s, "user.id", "")) for s in calls}
    assert {(row["agent"], row["user"]) for row in rows} == keys
    for row in rows:
        assert_totals(row, [s for s in calls if (attribute(s, "gen_ai.agent.name", ""),
                                                 attribute(s, "user.id", "")) == (row["agent"], row["user"])])


def test_stats_by_tool_counts_tool_executions(llmtel: Runner, dataset: Dataset) -> None:
    code, rows, _ = llmtel("stats", "--by", "tool", "--since", "1h")
    assert code == 0
    tools = [s for s in dataset.real if operation(s) == "execute_tool"]
    assert [(row["tool"], row["calls"]) for row in rows] == [("lookup_order", len(tools))] and len(tools) == 3


def test_stats_operation_filter_counts_that_operation(llmtel: Runner, dataset: Dataset) -> None:
    code, rows, _ = llmtel("stats", "--operation", "invoke_agent", "--by", "agent")
    assert code == 0
    agents = [s for s in dataset.spans if operation(s) == "invoke_agent"]
    assert {row["agent"]: row["calls"] for row in rows} == {"triage": 3, "writer": 3} and len(agents) == 6


def test_stats_by_model_and_day_reads_the_rollup_for_whole_days(llmtel: Runner, dataset: Dataset) -> None:
    window = ["--since", "2026-01-10", "--until", "2026-01-11", "--by", "model,day"]
    code, auto, _ = llmtel("stats", *window, fmt="table")
    assert code == 0 and "from llm_usage_daily" in auto
    code, daily, _ = llmtel("stats", *window)
    code_calls, from_calls, _ = llmtel("stats", *window, "--source", "calls")
    assert code == code_calls == 0
    calls = [s for s in model_calls(dataset.spans) if in_days(s, OLD_DAYS[0], OLD_DAYS[1])]
    for rows in (daily, from_calls):
        keys = {(response_model(s), datetime.fromtimestamp(s.start_time / 1e9, UTC).date().isoformat())
                for s in calls}
        assert {(row["model"], row["day"]) for row in rows} == keys
        for row in rows:
            assert_totals(row, [s for s in calls if response_model(s) == row["model"] and
                                datetime.fromtimestamp(s.start_time / 1e9, UTC).date().isoformat() == row["day"]])
    assert [(r["model"], r["day"], r["calls"], r["cost"]) for r in daily] == [
        (r["model"], r["day"], r["calls"], r["cost"]) for r in from_calls]


def _same_stats(from_rollup: list[dict[str, Any]], from_calls: list[dict[str, Any]], keys: Sequence[str]) -> None:
    """Exact counts, tokens and cost; percentiles within the t-digest's error (a merge of two digests)."""
    exact = [*keys, "calls", "errors", "input_tokens", "output_tokens", "cached_tokens", "unpriced_calls"]
    assert [[row[key] for key in exact] for row in from_rollup] == [[row[key] for key in exact] for row in from_calls]
    for rolled, scanned in zip(from_rollup, from_calls, strict=True):
        assert (rolled["cost"] is None) == (scanned["cost"] is None)
        if scanned["cost"] is not None:
            assert Decimal(str(rolled["cost"])) == Decimal(str(scanned["cost"]))
        for percentile in ("p50_ms", "p95_ms", "p99_ms"):
            assert rolled[percentile] == pytest.approx(scanned[percentile], rel=0.05), percentile


@pytest.mark.parametrize("window", [
    ["--since", "2026-01-10T10:30:00Z", "--until", "2026-01-12T10:30:00Z"],  # both bounds cut a day
    ["--since", "2026-01-11T12:30:00Z"],  # open end: every later day whole
    ["--since", "2026-01-10", "--until", "2026-01-11T13:30:00Z"],  # a date, then a time
    ["--since", "2026-01-10T09:30:00Z", "--until", "2026-01-10T10:30:00Z"],  # inside one day
    ["--since", "30d"],
], ids=["both-cut", "open-end", "date-then-time", "one-day", "30d"])
def test_stats_over_a_window_cut_mid_day_reads_whole_days_from_the_rollup(
    llmtel: Runner, dataset: Dataset, window: list[str]
) -> None:
    code, text, _ = llmtel("stats", *window, fmt="table")
    assert code == 0 and "llm_usage_daily (whole days) and llm_calls (the days the window cuts)" in text
    for groups in ("model,day", "service,agent"):
        code, mixed, _ = llmtel("stats", *window, "--by", groups)
        code_calls, scanned, _ = llmtel("stats", *window, "--by", groups, "--source", "calls")
        assert code == code_calls == 0
        _same_stats(mixed, scanned, groups.split(","))
    # And both equal the spans themselves.
    now = datetime.now(UTC)
    since = parse_time_bound(window[1], now)
    until = parse_time_bound(window[3], now, "--until") if len(window) > 2 else None
    start = since.as_datetime(end=False).timestamp() * 1e9
    end = until.as_datetime(end=True).timestamp() * 1e9 if until else float("inf")
    code, rows, _ = llmtel("stats", *window)
    assert code == 0
    assert_totals(rows[0], [s for s in model_calls(dataset.spans) if start <= s.start_time < end])


def test_stats_reads_llm_calls_when_the_rollup_cannot_answer(llmtel: Runner) -> None:
    code, text, _ = llmtel("stats", "--since", "24h", "--by", "hour", fmt="table")
    assert code == 0 and "from llm_calls" in text and "--by hour" in text
    code, _, err = llmtel("stats", "--since", "24h", "--source", "daily")
    assert code == 2 and "--since is not a date" in err and len(err.strip().splitlines()) == 1


def test_stats_model_filter_takes_dated_snapshots(llmtel: Runner, dataset: Dataset) -> None:
    code, rows, _ = llmtel("stats", "--model", "gpt-4o-mini", "--since", "1h")
    assert code == 0
    expected = [s for s in model_calls(dataset.real) if response_model(s).startswith("gpt-4o-mini-20")]
    assert expected and rows[0]["calls"] == len(expected)


def test_stats_filters_status_tag_user(llmtel: Runner, dataset: Dataset) -> None:
    code, rows, _ = llmtel("stats", "--status", "error", "--tag", "cli-test", "--user", "bob")
    assert code == 0
    expected = [s for s in model_calls(dataset.real)
                if s.status.status_code is StatusCode.ERROR and attribute(s, "user.id") == "bob"]
    assert_totals(rows[0], expected)


def test_stats_csv_and_table_output(llmtel: Runner) -> None:
    code, text, _ = llmtel("stats", "--by", "service", fmt="csv")
    assert code == 0
    header, *lines = text.strip().splitlines()
    assert header.startswith("service,calls,errors,error_rate,input_tokens") and lines
    code, text, _ = llmtel("stats", "--by", "service", fmt="table")
    assert code == 0 and "batch-svc" in text and "p95" in text


def test_no_data_and_usage_errors(llmtel: Runner) -> None:
    code, rows, err = llmtel("stats", "--service", "nobody")
    assert (code, rows) == (1, []) and "no calls match" in err
    code, _, err = llmtel("calls", "--database", "never_exported")
    assert code == 1 and "llmtel schema apply" in err and len(err.strip().splitlines()) == 1
    for argv, needle in ((["stats", "--by", "colour"], "unknown --by column 'colour'"),
                         (["stats", "--since", "yesterday"], "'yesterday' is not a duration"),
                         (["calls", "--slower-than", "5"], "add a unit"),
                         (["stats", "--until", "2026-13-01"], "not a date")):
        code, _, err = llmtel(*argv)
        assert code == 2, argv
        assert needle in err and len(err.strip().splitlines()) == 1, err


# --- calls ----------------------------------------------------------------------------------


def test_calls_newest_first_with_trace_ids(llmtel: Runner, dataset: Dataset) -> None:
    code, rows, _ = llmtel("calls", "--since", "1h", "--limit", "100")
    assert code == 0
    calls = sorted(model_calls(dataset.real), key=lambda s: s.start_time, reverse=True)
    assert [row["span_id"] for row in rows] == [f"{s.context.span_id:016x}" for s in calls]
    assert {row["trace_id"] for row in rows} == set(dataset.request_trace_ids)


def test_calls_top_cost_slower_than_costlier_than(llmtel: Runner, dataset: Dataset) -> None:
    calls = model_calls(dataset.spans)
    code, rows, _ = llmtel("calls", "--top", "cost", "--limit", "3")
    priced = sorted((attribute(s, "gen_ai.usage.cost") for s in calls if attribute(s, "gen_ai.usage.cost")),
                    reverse=True)
    assert code == 0 and [row["cost"] for row in rows] == pytest.approx(priced[:3])
    code, rows, _ = llmtel("calls", "--slower-than", "5s", "--limit", "100")
    slow = {f"{s.context.span_id:016x}" for s in calls if s.end_time - s.start_time > 5 * 10**9}
    assert code == 0 and slow and {row["span_id"] for row in rows} == slow
    code, rows, _ = llmtel("calls", "--costlier-than", "0.02", "--limit", "100")
    costly = {f"{s.context.span_id:016x}" for s in calls if (attribute(s, "gen_ai.usage.cost") or 0) > 0.02}
    assert code == 0 and costly and {row["span_id"] for row in rows} == costly
    code, rows, _ = llmtel("calls", "--top", "tokens", "--limit", "2")
    by_tokens = sorted(calls, key=lambda s: -(attribute(s, "gen_ai.usage.input_tokens", 0)
                                             + attribute(s, "gen_ai.usage.output_tokens", 0)))
    assert [row["span_id"] for row in rows] == [f"{s.context.span_id:016x}" for s in by_tokens[:2]]
    code, rows, _ = llmtel("calls", "--top", "duration", "--limit", "1")
    longest = max(calls, key=lambda s: s.end_time - s.start_time)
    assert rows[0]["duration_ms"] == pytest.approx((longest.end_time - longest.start_time) / 1e6)


def test_windows_take_iso_times_and_dates(llmtel: Runner, dataset: Dataset) -> None:
    code, rows, _ = llmtel("calls", "--since", "2026-01-10T09:30:00Z", "--until", "2026-01-10T11:30+01:00")
    start = _day_ns(OLD_DAYS[0], 9.5)
    expected = [s for s in model_calls(dataset.spans) if start <= s.start_time < start + 3600 * 10**9]
    assert code == 0 and len(expected) == 1
    assert [row["span_id"] for row in rows] == [f"{expected[0].context.span_id:016x}"]
    assert rows[0]["time"] == "2026-01-10T10:00:00.000Z"
    code, rows, _ = llmtel("stats", "--since", "2026-01-12", "--until", "2026-01-12", "--by", "hour")
    assert code == 0 and [row["hour"] for row in rows] == ["2026-01-12T09:00:00", "2026-01-12T10:00:00",
                                                           "2026-01-12T11:00:00"]


# --- trace / traces -------------------------------------------------------------------------


def _tree_of(spans: Sequence[ReadableSpan], parent: int | None) -> list[tuple[str, list]]:
    children = sorted((s for s in spans if (s.parent.span_id if s.parent else None) == parent),
                      key=lambda s: (s.start_time, f"{s.context.span_id:016x}"))
    return [(s.name, _tree_of(spans, s.context.span_id)) for s in children]


def _names(nodes: list[dict[str, Any]]) -> list[tuple[str, list]]:
    return [(node["name"], _names(node["children"])) for node in nodes]


def test_trace_is_the_whole_tree_with_subtree_totals(llmtel: Runner, dataset: Dataset) -> None:
    trace_id = dataset.request_trace_ids[1]
    spans = [s for s in dataset.real if f"{s.context.trace_id:032x}" == trace_id]
    code, roots, err = llmtel("trace", trace_id.upper())
    assert code == 0, err
    assert _names(roots) == _tree_of(spans, None)
    (root,) = roots
    expected = totals(model_calls(spans))
    assert root["totals"]["llm_calls"] == expected["calls"] == 5
    assert root["totals"]["input_tokens"] == expected["input_tokens"]
    assert root["totals"]["output_tokens"] == expected["output_tokens"]
    assert root["totals"]["cost"] == pytest.approx(expected["cost"], abs=1e-9)
    assert root["totals"]["spans"] == len(spans)
    assert root["totals"]["errors"] == sum(1 for s in spans if s.status.status_code is StatusCode.ERROR) >= 1
    triage = next(child for child in root["children"] if child["name"] == "invoke_agent triage")
    assert triage["totals"]["llm_calls"] == 2
    code, text, _ = llmtel("trace", trace_id, fmt="csv")
    header, *lines = text.strip().splitlines()
    assert code == 0 and header.startswith("depth,span_id,parent_span_id,name") and len(lines) == len(spans)
    code, text, _ = llmtel("trace", trace_id, fmt="table")
    assert code == 0 and "invoke_workflow support-request" in text and "█" in text
    assert "✗" in text and "no-such-model" in text


def test_trace_unknown_is_no_data(llmtel: Runner) -> None:
    code, rows, err = llmtel("trace", "0" * 32)
    assert (code, rows) == (1, []) and "no trace" in err


def test_traces_lists_roots_with_totals(llmtel: Runner, dataset: Dataset) -> None:
    code, rows, _ = llmtel("traces", "--since", "1h")
    assert code == 0
    assert [row["trace_id"] for row in rows] == dataset.request_trace_ids[::-1]
    for row in rows:
        spans = [s for s in dataset.real if f"{s.context.trace_id:032x}" == row["trace_id"]]
        expected = totals(model_calls(spans))
        assert row["name"] == "invoke_workflow support-request"
        assert (row["llm_calls"], row["input_tokens"], row["output_tokens"], row["spans"]) == (
            expected["calls"], expected["input_tokens"], expected["output_tokens"], len(spans))
        assert row["cost"] == pytest.approx(expected["cost"], abs=1e-9)
        assert row["errors"] == sum(1 for s in spans if s.status.status_code is StatusCode.ERROR)
    code, rows, _ = llmtel("traces", "--user", "bob")
    assert code == 0 and [row["trace_id"] for row in rows] == [dataset.request_trace_ids[1]]


def table_cells(text: str, needle: str) -> dict[str, str]:
    """The row of a printed table that contains ``needle``, as header → cell."""
    lines = text.splitlines()
    header = next(line for line in lines if "┃" in line)
    row = next(line for line in lines if needle in line and "│" in line)
    names = [cell.strip() for cell in header.strip("┃").split("┃")]
    return dict(zip(names, (cell.strip() for cell in row.strip("│").split("│")), strict=True))


def test_unpriced_cost_is_a_dash_in_tables_and_null_in_json(llmtel: Runner, dataset: Dataset) -> None:
    day = ["--since", OLD_DAYS[1].isoformat(), "--until", OLD_DAYS[1].isoformat()]
    cut = ["--since", f"{OLD_DAYS[1].isoformat()}T12:30:00Z"]  # the rollup and the edge day
    for window in (day, day + ["--source", "calls"], cut):
        code, text, _ = llmtel("stats", "--by", "model", *window, fmt="table")
        assert code == 0
        assert table_cells(text, "local-llama")["cost"] == "-"
        assert table_cells(text, "gpt-4o-mini")["cost"].startswith("$")
        code, rows, _ = llmtel("stats", "--by", "model", *window)
        costs = {row["model"]: row["cost"] for row in rows}
        assert costs["local-llama"] is None and costs["gpt-4o-mini"] > 0
    (unpriced,) = [s for s in dataset.spans if response_model(s) == "local-llama"]
    trace_id = f"{unpriced.context.trace_id:032x}"
    code, rows, _ = llmtel("traces", "--service", "batch-svc", *day)
    by_trace = {row["trace_id"]: row for row in rows}
    expected = [s for s in dataset.spans if in_days(s, OLD_DAYS[1], OLD_DAYS[1])
                and s.resource.attributes["service.name"] == "batch-svc"]
    assert code == 0 and set(by_trace) == {f"{s.context.trace_id:032x}" for s in expected} and len(expected) == 4
    assert (by_trace[trace_id]["cost"], by_trace[trace_id]["unpriced_calls"]) == (None, 1)
    assert all(row["cost"] > 0 and row["unpriced_calls"] == 0 for row in rows if row["trace_id"] != trace_id)
    code, text, _ = llmtel("traces", "--service", "batch-svc", *day, fmt="table")
    assert code == 0 and table_cells(text, trace_id[:20])["cost"] == "-"
    # In a span tree: a subtree of unpriced calls only has no cost; one with a priced call sums those.
    code, roots, _ = llmtel("trace", dataset.request_trace_ids[0])
    failed = next(node for node in _all_nodes(roots) if node["name"] == "chat no-such-model")
    assert failed["cost"] is None and failed["totals"]["cost"] is None and failed["totals"]["llm_calls"] == 1
    assert roots[0]["totals"]["cost"] > 0


def _all_nodes(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [found for node in nodes for found in (node, *_all_nodes(node["children"]))]


# --- search ---------------------------------------------------------------------------------


def test_search_captured_content_case_insensitive(llmtel: Runner, dataset: Dataset) -> None:
    code, rows, _ = llmtel("search", "refund")
    assert code == 0
    expected = {f"{s.context.span_id:016x}" for s in dataset.real
                if "refund" in str(attribute(s, "gen_ai.input.messages", "")).lower()}
    assert expected and {row["span_id"] for row in rows} == expected
    assert all("REFUND" in row["snippet"] for row in rows)
    code, rows, _ = llmtel("search", 'say "HI" to grüße')
    assert code == 0 and rows and all(row["trace_id"] == dataset.request_trace_ids[2] for row in rows)
    code, rows, _ = llmtel("search", "support agent")
    assert code == 0 and {row["field"] for row in rows} == {"gen_ai.system_instructions"}
    code, rows, _ = llmtel("search", "nothing like this anywhere")
    assert (code, rows) == (1, [])


# --- hostile values -------------------------------------------------------------------------


def test_hostile_values_are_bound_parameters(llmtel: Runner, dataset: Dataset) -> None:
    spans_before = dataset_rows(llmtel)
    by_value = {attribute(s, "user.id"): f"{s.context.span_id:016x}" for s in dataset.spans
                if attribute(s, "user.id") in HOSTILE}
    for value in HOSTILE:
        for option in ("--service", "--model", "--agent", "--user", "--tag"):
            code, rows, err = llmtel("calls", option, value)
            assert code == 0, (option, value, err)
            assert [row["span_id"] for row in rows] == [by_value[value]], (option, value)
        code, rows, _ = llmtel("stats", "--service", value, "--model", value, "--agent", value, "--user", value,
                               "--tag", value, "--tag", "common")
        assert code == 0 and rows[0]["calls"] == 1
        code, rows, _ = llmtel("search", value, "--limit", "100")
        assert code == 0 and by_value[value] in {row["span_id"] for row in rows}
        # The snippet is the stored JSON text, where quotes, backslashes and tabs are escaped.
        (snippet,) = [row["snippet"] for row in rows if row["span_id"] == by_value[value]]
        assert json.dumps(f"prefix {value} suffix", ensure_ascii=False)[1:-1] in snippet
        assert llmtel("trace", value)[0] == 1
        if value.startswith("'"):
            code, rows, _ = llmtel("traces", "--service", value, "--user", value)
            assert code == 0 and [row["trace_id"] for row in rows] == [
                f"{s.context.trace_id:032x}" for s in dataset.spans if attribute(s, "user.id") == value]
    assert dataset_rows(llmtel) == spans_before == len(dataset.spans)


def dataset_rows(llmtel: Runner, database: str = "default") -> int:
    code, checks, _ = llmtel("doctor", "--database", database)
    assert code == 0
    detail = next(check["detail"] for check in checks if check["check"] == "table otel_traces")
    return int(detail.split()[0].replace(",", ""))


# --- prune / schema / backfill / doctor ----------------------------------------------------


def test_prune_drops_whole_days_and_deletes_part_of_one(llmtel: Runner, dataset: Dataset) -> None:
    older_than = f"{int(dataset.prune_cutoff_seconds)}s"
    code, out, _ = llmtel("prune", "--older-than", older_than, "--database", "prune_db", "--dry-run", fmt="")
    old = [s for s in dataset.spans if s.start_time < time.time_ns() - dataset.prune_cutoff_seconds * 1e9]
    assert code == 0 and f"otel_traces: {len(old)} rows older than" in out
    assert dataset_rows(llmtel, "prune_db") == len(dataset.spans)  # a dry run deletes nothing
    code, _, err = llmtel("prune", "--older-than", older_than, "--database", "prune_db", fmt="")
    assert code == 2 and "--yes" in err  # stdin is not a terminal: no silent deletion
    code, out, _ = llmtel("prune", "--older-than", older_than, "--database", "prune_db", "--yes", fmt="")
    assert code == 0 and "partitions dropped whole, 1 rows deleted" in out
    assert dataset_rows(llmtel, "prune_db") == len(dataset.spans) - len(old)
    code, rows, _ = llmtel("stats", "--database", "prune_db", "--source", "calls")
    assert code == 0 and rows[0]["calls"] == len(model_calls([s for s in dataset.spans if s not in old]))
    code, _, _ = llmtel("calls", "--database", "prune_db", "--service", "batch-svc")
    assert code == 1


def test_schema_print_and_apply(llmtel: Runner, capsys: pytest.CaptureFixture[str]) -> None:
    code, text, _ = llmtel("schema", "print", "--database", "otel", fmt="")
    # Exactly what the exporter's schema step runs with these options.
    assert code == 0 and text == ";\n\n".join(schema.render(schema.SchemaOptions(database="otel"))) + ";\n"
    code, text, _ = llmtel("schema", "print", "--cluster", "analytics", "--database", "otel", fmt="")
    assert code == 0 and "CREATE TABLE IF NOT EXISTS `otel`.`otel_traces_local` ON CLUSTER analytics" in text
    statements = [statement for statement in text.split(";\n\n") if statement.strip()]
    assert all("ON CLUSTER analytics" in statement for statement in statements)
    assert "ENGINE = Distributed('analytics', `otel`, `otel_traces_local`, cityHash64(TraceId))" in text
    code, _, err = llmtel("schema", "print", "--cluster", "bad;name", fmt="")
    assert code == 2 and "cluster" in err
    code, checks, _ = llmtel("doctor", "--database", "fresh_db")
    assert code == 1 and any(check["status"] == "FAIL" for check in checks)
    code, out, _ = llmtel("schema", "apply", "--database", "fresh_db", fmt="")
    assert code == 0 and "schema ready" in out
    code, checks, _ = llmtel("doctor", "--database", "fresh_db")
    assert code == 0 and next(c for c in checks if c["check"] == "last span")["status"] == "warn"


def test_backfill_fills_llm_calls_from_stored_spans(llmtel: Runner, dataset: Dataset, store: str) -> None:
    truncate = ["TRUNCATE TABLE backfill_db.llm_calls", "TRUNCATE TABLE backfill_db.llm_usage_daily"]
    if store == dataset.embedded:
        import clickhouse_connect

        client = clickhouse_connect.get_client(interface="chdb", path=store.removeprefix("chdb://"))
        for statement in truncate:
            client.command(statement)
        client.close()
    else:
        for statement in truncate:
            dataset.http.query(statement)
    assert llmtel("stats", "--database", "backfill_db")[0] == 1
    code, out, _ = llmtel("backfill", "--database", "backfill_db", "--since", "2026-01-11", "--until", "2026-01-11",
                          fmt="")
    day_spans = [s for s in dataset.spans if operation(s) and in_days(s, OLD_DAYS[1], OLD_DAYS[1])]
    assert code == 0 and f"added {len(day_spans)} llm_calls rows" in out
    code, rows, _ = llmtel("stats", "--database", "backfill_db")
    assert code == 0
    assert_totals(rows[0], model_calls(day_spans))
    code, out, _ = llmtel("backfill", "--database", "backfill_db", fmt="")
    other_days = [s for s in dataset.spans if operation(s) and s not in day_spans]
    assert code == 0 and f"added {len(other_days)} llm_calls rows" in out


def test_doctor_reports_tables_counts_and_entry_points(llmtel: Runner, dataset: Dataset) -> None:
    code, checks, _ = llmtel("doctor")
    assert code == 0
    by_name = {check["check"]: check for check in checks}
    assert by_name["entry point llmtel_openai"]["status"] == by_name["entry point clickhouse"]["status"] == "ok"
    assert by_name["table otel_traces"]["detail"] == f"{len(dataset.spans):,} rows"
    assert by_name["table llm_calls"]["detail"] == f"{sum(1 for s in dataset.spans if operation(s)):,} rows"
    assert by_name["view llm_calls_mv"]["status"] == "ok" and "26." in by_name["store"]["detail"]
    newest = max(s.start_time for s in dataset.spans)
    assert by_name["last span"]["detail"][:19] == datetime.fromtimestamp(newest // 10**9, UTC).strftime(
        "%Y-%m-%dT%H:%M:%S")


# --- connection errors, console script ------------------------------------------------------


def test_unreachable_server_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = main(["stats", "--endpoint", f"http://127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert code == 2 and "connection refused" in err and len(err.strip().splitlines()) == 1


def test_locked_store_names_the_path_and_llmtel_serve(dataset: Dataset, capsys: pytest.CaptureFixture[str]) -> None:
    path = dataset.embedded.removeprefix("chdb://")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import clickhouse_connect, sys; c = clickhouse_connect.get_client(interface='chdb', "
         f"path={path!r}); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code = main(["stats", "--endpoint", dataset.embedded])
        err = capsys.readouterr().err
        assert code == 2 and path in err and "llmtel serve" in err and len(err.strip().splitlines()) == 1
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def test_console_script_and_module(dataset: Dataset) -> None:
    environment = {**os.environ, "OTEL_EXPORTER_CLICKHOUSE_ENDPOINT": dataset.http.url}
    script = Path(sys.executable).parent / "llmtel"
    result = subprocess.run([str(script), "stats", "--format", "json"], env=environment, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["calls"] == len(model_calls(dataset.spans))
    result = subprocess.run([sys.executable, "-m", "llmtel.exporter_clickhouse.cli", "calls", "--top", "cost",
                             "--limit", "1", "--format", "json", "--endpoint", dataset.embedded],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["cost"] == pytest.approx(
        max(attribute(s, "gen_ai.usage.cost") or 0 for s in dataset.spans))
    result = subprocess.run([str(script), "stats", "--by", "nope"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1


def test_demo_and_serve_are_wired_lazily(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real_import = importlib.import_module

    def missing(name: str, *args: Any) -> Any:
        if name == "llmtel.exporter_clickhouse.serve":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", missing)
    assert main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "llmtel serve" in err and len(err.strip().splitlines()) == 1
