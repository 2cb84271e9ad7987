"""How fast the `llmtel` command answers over 10 million LLM spans in the embedded store.

Prints figures; it is a report, not a test (it always exits 0 once the store is built). Usage::

    python bench/query.py                            # 10M spans into a temp store (minutes), then the queries
    python bench/query.py --store /tmp/q10m          # the same, keeping the store
    python bench/query.py --store /tmp/q10m --reuse  # the queries again, on that store
    python bench/query.py --spans 1000000 --runs 3   # a quick look

Ingest: ClickHouse itself generates the spans (``INSERT INTO otel_traces SELECT ... FROM numbers()``,
``bench/query_spans.sql``) in chunks of ``--chunk`` spans, so memory stays bounded; every chunk goes
through the same views as the exporter's inserts (the trace-id lookup, ``llm_calls``,
``llm_usage_daily``). The spans: 8-span traces (workflow → agents → chats, a tool, embeddings) of
5 services and 20 models, 2% failed calls, spread evenly over the last ``--days`` days, ending now.

Queries (targets from the issue, on the reference 2-core machine), run in this process through
``llmtel.exporter_clickhouse.cli.main`` with ``--format json`` (one warm-up, then the median of
``--runs``):

    stats --by model,day --since 30d     ≤ 0.3 s   (whole days from the rollup, the cut day from llm_calls)
    stats --by model,day --since <date>  ≤ 0.3 s   (the same days from the llm_usage_daily rollup)
    calls --top cost --since 7d          ≤ 0.5 s
    trace <a random trace id>            ≤ 0.1 s

Each figure is the whole command (open the store, query, render); "in ClickHouse" is the part
spent in the client's query calls. On a missed target, the plans (``EXPLAIN indexes = 1``) of the
command's queries are printed, to see which keys and partitions they could skip.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect

from llmtel.exporter_clickhouse import schema

SPANS_PER_TRACE = 8
TABLES = ("otel_traces", "otel_traces_trace_id_ts", "llm_calls", "llm_usage_daily")
GENERATE_SQL = (Path(__file__).parent / "query_spans.sql").read_text()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=None, help="the chDB store directory (default: a temp dir)")
    parser.add_argument("--reuse", action="store_true", help="query the spans already in --store, generate none")
    parser.add_argument("--spans", type=int, default=10_000_000, help="spans to generate (default: 10M)")
    parser.add_argument("--chunk", type=int, default=1_000_000, help="spans per INSERT (default: 1M)")
    parser.add_argument("--days", type=int, default=30, help="the spans cover this many days up to now")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per query, after one warm-up")
    parser.add_argument("--seed", type=int, default=7, help="picks the random trace")
    args = parser.parse_args(argv)
    if args.reuse and args.store is None:
        parser.error("--reuse needs --store PATH")
    return args


# --- ingest --------------------------------------------------------------------------------


def generate(client: Any, options: schema.SchemaOptions, spans: int, chunk: int, days: int) -> None:
    """Insert ``spans`` spans in chunks; prints spans/s (the views' work included)."""
    spans -= spans % SPANS_PER_TRACE
    chunk = max(SPANS_PER_TRACE, chunk - chunk % SPANS_PER_TRACE)
    traces = spans // SPANS_PER_TRACE
    window_ns = days * 86_400 * 10**9
    step_ns = window_ns // max(1, traces)
    # The last trace starts 10 minutes ago, so the spans never lie in the future.
    first_ns = time.time_ns() - window_ns - 600 * 10**9 + step_ns
    began = time.perf_counter()
    for first in range(0, spans, chunk):
        count = min(chunk, spans - first)
        client.command(GENERATE_SQL, parameters={
            "database": options.database, "traces_table": options.traces_table,
            "first": first, "count": count, "first_ns": first_ns, "step_ns": step_ns,
        })
        done = first + count
        elapsed = time.perf_counter() - began
        print(f"  {done:>12,} spans  {elapsed:7.1f} s  {done / elapsed:>10,.0f} spans/s", flush=True)
    elapsed = time.perf_counter() - began
    print(f"generated {spans:,} spans ({traces:,} traces) in {elapsed:.1f} s: {spans / elapsed:,.0f} spans/s "
          f"(otel_traces and its three views)")


def print_sizes(client: Any, database: str) -> None:
    rows = client.query(
        "SELECT table, count() AS parts, sum(rows), sum(bytes_on_disk), sum(data_compressed_bytes), "
        "sum(data_uncompressed_bytes) FROM system.parts "
        "WHERE active AND database = {database:String} AND table IN {tables:Array(String)} "
        "GROUP BY table ORDER BY table",
        parameters={"database": database, "tables": list(TABLES)},
    ).result_rows
    print(f"\n{'table':<26}{'parts':>7}{'rows':>14}{'on disk':>12}{'uncompressed':>14}{'ratio':>8}"
          f"{'bytes/row':>11}")
    for table, parts, count, on_disk, _compressed, raw in rows:
        ratio = raw / on_disk if on_disk else 0.0
        per_row = on_disk / count if count else 0.0
        print(f"{table:<26}{parts:>7}{count:>14,}{_mib(on_disk):>12}{_mib(raw):>14}{ratio:>7.1f}x{per_row:>11.1f}")
    total_disk = sum(row[3] for row in rows)
    total_raw = sum(row[5] for row in rows)
    print(f"{'total':<26}{'':>7}{'':>14}{_mib(total_disk):>12}{_mib(total_raw):>14}"
          f"{total_raw / max(1, total_disk):>7.1f}x")


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


# --- the queries ---------------------------------------------------------------------------


class QueryClock:
    """Time spent in the CLI's query calls (the reader's ``rows``), and the SQL they ran."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.queries: list[tuple[str, dict[str, Any]]] = []

    @contextlib.contextmanager
    def watching(self) -> Any:
        from llmtel.exporter_clickhouse import reader

        original = reader.StoreReader.rows
        clock = self

        def timed_rows(self: Any, name: str, parameters: dict[str, Any] | None = None, **fragments: str) -> Any:
            clock.queries.append((reader.query_text(name, self.options, **fragments), dict(parameters or {})))
            began = time.perf_counter()
            try:
                return original(self, name, parameters, **fragments)
            finally:
                clock.seconds += time.perf_counter() - began

        reader.StoreReader.rows = timed_rows
        try:
            yield self
        finally:
            reader.StoreReader.rows = original


def run_cli(argv: list[str]) -> tuple[int, str, float, float, list[tuple[str, dict[str, Any]]]]:
    """``llmtel <argv>`` in this process: exit code, output, seconds in all, seconds in queries, the queries."""
    from llmtel.exporter_clickhouse import cli

    output = io.StringIO()
    clock = QueryClock()
    with clock.watching(), contextlib.redirect_stdout(output):
        began = time.perf_counter()
        code = cli.main(argv)
        elapsed = time.perf_counter() - began
    return code, output.getvalue(), elapsed, clock.seconds, clock.queries


def time_query(label: str, argv: list[str], runs: int, target: float) -> dict:
    code, output, _, _, queries = run_cli(argv)  # warm-up: caches, the first open of the store
    if code != 0:
        print(f"{label}: `llmtel {' '.join(argv)}` exited {code}: {output.strip()[:500]}")
        return {"label": label, "failed": True}
    totals, in_queries = [], []
    for _ in range(runs):
        _, _, total, querying, queries = run_cli(argv)
        totals.append(total)
        in_queries.append(querying)
    median = statistics.median(totals)
    verdict = "ok" if median <= target else "MISSED"
    print(f"{label:<38}{median:>8.3f} s{statistics.median(in_queries):>10.3f} s{min(totals):>9.3f} s"
          f"{target:>9.2f} s  {verdict}")
    return {"label": label, "median": median, "target": target, "queries": queries, "missed": median > target}


def explain_plans(client: Any, queries: list[tuple[str, dict[str, Any]]]) -> None:
    for sql, parameters in queries:
        print("\n" + sql)
        try:
            plan = client.query(f"EXPLAIN indexes = 1 {sql}", parameters=parameters).result_rows
        except Exception as error:  # a plan is a diagnosis: print what went wrong and go on
            print(f"  (no plan: {str(error).strip().splitlines()[0]})")
            continue
        print("\n".join(f"  {row[0]}" for row in plan))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    store = (args.store or Path(tempfile.mkdtemp(prefix="llmtel-bench-query-")) / "store").resolve()
    options = schema.SchemaOptions()
    if not args.reuse and store.exists() and any(store.iterdir()):
        print(f"error: {store} is not empty: pass --reuse to query it, or another --store", file=sys.stderr)
        return 2
    print(f"store: {store}")
    client = clickhouse_connect.get_client(interface="chdb", path=str(store))
    if not args.reuse:
        schema.apply(client, options)
        generate(client, options, args.spans, args.chunk, args.days)
    newest = client.query("SELECT max(Timestamp) FROM llm_calls").result_rows[0][0]
    print(f"newest span: {newest} (the windows below count back from now)")
    print_sizes(client, options.database)

    trace_count = client.query("SELECT count() FROM otel_traces_trace_id_ts").result_rows[0][0]
    trace_number = random.Random(args.seed).randrange(max(1, trace_count))
    trace_id = hashlib.md5(f"trace{trace_number}".encode()).hexdigest()  # as query_spans.sql names traces
    endpoint = ["--endpoint", f"chdb://{store}", "--format", "json"]
    # --since 30d starts mid-day: whole days from the rollup, the cut day from llm_calls; a date: the rollup.
    first_day = (datetime.now(UTC).date() - timedelta(days=args.days)).isoformat()
    checks = [
        ("stats --by model,day --since 30d", ["stats", "--by", "model,day", "--since", f"{args.days}d"], 0.3),
        ("stats --by model,day --since <date>", ["stats", "--by", "model,day", "--since", first_day], 0.3),
        ("calls --top cost --since 7d", ["calls", "--top", "cost", "--since", "7d"], 0.5),
        (f"trace {trace_id[:8]}…", ["trace", trace_id], 0.1),
    ]
    print(f"\n{'command (in-process, --format json)':<38}{'median':>10}{'in queries':>12}{'best':>11}{'target':>11}")
    results = [time_query(label, [*command, *endpoint], args.runs, target)
               for label, command, target in checks]
    for result in results:
        if result.get("missed"):
            print(f"\n--- {result['label']}: {result['median']:.3f} s > {result['target']} s; the plans:")
            explain_plans(client, result["queries"])
    client.close()
    if args.store is None:
        print(f"\n(the store stays at {store} for --reuse; remove it with: rm -r {store.parent})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
