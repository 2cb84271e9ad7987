"""Faults: the store down at start, down for 30 s, slow, failing, dropping connections; the exporting
process killed; the embedded store held by another process. Afterwards every accepted span is
stored exactly once, and the application's calls never waited on the store.

The 30-second outage runs in the background from the start of this module (an application thread
keeps making spans all along); the other tests run meanwhile, and the last one ends the outage and
checks the result.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_http import ChdbHttpEndpoint
from exporter_spans import span_batch
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

from llmtel.exporter_clickhouse import ClickHouseSpanExporter

TESTS = Path(__file__).parent
OUTAGE_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stored(endpoint: ChdbHttpEndpoint, database: str, where: str = "1") -> tuple[int, int]:
    """(rows, distinct span ids) in ``database``.otel_traces."""
    count, distinct = endpoint.query(
        f"SELECT count(), uniqExact(SpanId) FROM `{database}`.otel_traces WHERE {where}"
    ).split()
    return int(count), int(distinct)


# --- the 30-second outage, in the background ---------------------------------------------------


@dataclass
class Outage:
    endpoint: ChdbHttpEndpoint
    exporter: ClickHouseSpanExporter
    provider: TracerProvider
    started_down: float = 0.0
    made: int = 0
    span_ids: list[str] = field(default_factory=list)
    slowest: float = 0.0
    slowest_while_down: float = 0.0
    down: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)
    thread: threading.Thread | None = None

    def stop_application(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(10)

    def run_application(self) -> None:
        """An application thread: a span every 20 ms, each timed from start to end."""
        tracer = self.provider.get_tracer("outage-app")
        try:
            while not self.stop.is_set():
                started = time.perf_counter()
                with tracer.start_as_current_span("request") as span:
                    span.set_attribute("seq", self.made)
                took = time.perf_counter() - started
                self.span_ids.append(f"{span.get_span_context().span_id:016x}")
                self.made += 1
                self.slowest = max(self.slowest, took)
                if self.down:
                    self.slowest_while_down = max(self.slowest_while_down, took)
                time.sleep(0.02)
        except BaseException as error:  # surfaces in the checking test
            self.errors.append(error)


@pytest.fixture(scope="module", autouse=True)
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    endpoint = ChdbHttpEndpoint(tmp_path_factory.mktemp("outage-store"))
    endpoint.start()
    exporter = ClickHouseSpanExporter(endpoint=endpoint.url, database="outage", retry_max_elapsed="2s",
                                      timeout="2s", data_dir=str(tmp_path_factory.mktemp("outage-data")))
    provider = TracerProvider(resource=Resource({"service.name": "outage-app"}))
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=500, max_export_batch_size=512, max_queue_size=65536)
    )
    state = Outage(endpoint, exporter, provider)
    state.thread = threading.Thread(target=state.run_application, name="outage-app", daemon=True)
    state.thread.start()
    deadline = time.monotonic() + 30
    while stored_or_zero(endpoint) < 20 and time.monotonic() < deadline:  # data flows before the outage
        time.sleep(0.1)
    endpoint.kill()
    state.down = True
    state.started_down = time.monotonic()
    yield state
    state.stop_application()
    provider.shutdown()
    endpoint.stop()


def stored_or_zero(endpoint: ChdbHttpEndpoint) -> int:
    try:
        return stored(endpoint, "outage")[0]
    except RuntimeError:  # no table yet
        return 0


# --- faults on a store that stays up ---------------------------------------------------------


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbHttpEndpoint]:
    with ChdbHttpEndpoint(tmp_path_factory.mktemp("faults-store")) as running:
        yield running


@pytest.fixture
def exporter_for(endpoint: ChdbHttpEndpoint, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    endpoint.reset()
    made: list[ClickHouseSpanExporter] = []

    def make(**settings: Any) -> ClickHouseSpanExporter:
        settings = {"endpoint": endpoint.url, "database": request.node.name[:60], "data_dir": str(tmp_path),
                    "retry_max_elapsed": "3s", "timeout": "1s", **settings}
        made.append(ClickHouseSpanExporter(**settings))
        return made[-1]

    yield make
    endpoint.reset()
    for exporter in made:
        exporter.shutdown()


def test_500s_are_retried_and_the_batch_stored_once(endpoint: ChdbHttpEndpoint, exporter_for: Any) -> None:
    exporter = exporter_for()
    exporter.export(span_batch(1, seed=1))  # schema in place
    assert exporter.force_flush()
    endpoint.faults(fail_next=2, status=500)
    assert exporter.export(span_batch(40)) is SpanExportResult.SUCCESS
    assert exporter.force_flush()
    assert exporter.spool.pending() == []
    last = endpoint.requests()[-3:]
    assert [(r["status"], r["fault"]) for r in last] == [(500, "fail"), (500, "fail"), (200, "")]
    assert last[-1]["statement"].startswith("INSERT INTO")
    assert stored(endpoint, exporter.config.database) == (41, 41)


def test_500s_past_the_retry_budget_go_to_the_spool_and_come_back(
    endpoint: ChdbHttpEndpoint, exporter_for: Any
) -> None:
    exporter = exporter_for(retry_max_elapsed="1s")
    exporter.export(span_batch(1, seed=1))
    assert exporter.force_flush()
    endpoint.faults(fail_next=1000, status=503)
    assert exporter.export(span_batch(30)) is SpanExportResult.SUCCESS
    assert exporter.force_flush() is False  # once the budget (1 s) is spent: the drainer backs off
    assert exporter.store_failing
    assert sum(r["fault"] == "fail" for r in endpoint.requests()) >= 2  # retried within the budget
    assert [item.rows for item in exporter.spool.pending()] == [30]
    endpoint.faults()
    assert exporter.force_flush()
    assert stored(endpoint, exporter.config.database) == (31, 31)


def test_a_store_slower_than_the_timeout_gets_the_batch_once(endpoint: ChdbHttpEndpoint, exporter_for: Any) -> None:
    # The server answers after the client gave up: it may well have stored the batch (an
    # ambiguous failure). The replay carries the same token, so the batch is stored once.
    exporter = exporter_for(timeout="1s", retry_max_elapsed="0s")
    exporter.export(span_batch(1, seed=1))
    assert exporter.force_flush()
    endpoint.faults(delay_seconds=1.5)
    assert exporter.export(span_batch(25)) is SpanExportResult.SUCCESS
    assert exporter.force_flush() is False  # the client gave up on the insert
    assert len(exporter.spool.pending()) == 1
    time.sleep(1.0)  # let the slow server finish what it was given
    endpoint.faults()
    assert exporter.force_flush()
    assert stored(endpoint, exporter.config.database) == (26, 26)


def test_dropped_connections_are_retried(endpoint: ChdbHttpEndpoint, exporter_for: Any) -> None:
    exporter = exporter_for()
    exporter.export(span_batch(1, seed=1))
    assert exporter.force_flush()
    endpoint.faults(drop_next=2)
    assert exporter.export(span_batch(15)) is SpanExportResult.SUCCESS
    assert exporter.force_flush()
    assert exporter.spool.pending() == []
    assert stored(endpoint, exporter.config.database) == (16, 16)


def test_down_at_start_then_up(tmp_path: Path) -> None:
    late = ChdbHttpEndpoint(tmp_path / "late-store", port=free_port())
    exporter = ClickHouseSpanExporter(endpoint=late.url, database="late", data_dir=str(tmp_path),
                                      retry_max_elapsed="0.5s")
    try:
        started = time.monotonic()
        assert exporter.export(span_batch(10)) is SpanExportResult.SUCCESS
        assert exporter.export(span_batch(5, seed=2)) is SpanExportResult.SUCCESS
        assert time.monotonic() - started < 5
        assert [item.rows for item in exporter.spool.pending()] == [10, 5]
        late.start()
        assert exporter.force_flush()
        assert exporter.export(span_batch(3, seed=3)) is SpanExportResult.SUCCESS
        assert exporter.force_flush()
        assert stored(late, "late") == (18, 18)
    finally:
        exporter.shutdown()
        late.stop()


EXITING_APP = """
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from llmtel.exporter_clickhouse import ClickHouseSpanExporter
provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(ClickHouseSpanExporter()))
for number in range(5):
    with provider.get_tracer("exiting").start_as_current_span("work"):
        pass
"""


def test_an_app_exits_promptly_with_the_store_down_and_its_spans_spooled(tmp_path: Path) -> None:
    # The spans are exported only by the SDK's exit hook; with the store down, that last export
    # must not back off for the whole retry budget (30 s here) before the process may end.
    environment = {**os.environ, "XDG_DATA_HOME": str(tmp_path),
                   "OTEL_EXPORTER_CLICKHOUSE_ENDPOINT": f"http://127.0.0.1:{free_port()}",
                   "OTEL_EXPORTER_CLICKHOUSE_RETRY_MAX_ELAPSED_TIME": "30s"}
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", EXITING_APP], env=environment, check=True, capture_output=True,
                   timeout=60)
    assert time.monotonic() - started < 15
    (spooled,) = tmp_path.glob("llmtel/spool/*/*.batch")
    assert spooled.name.split("-")[3] == "5"  # rows


def test_an_app_exits_promptly_and_its_last_spans_are_stored(tmp_path: Path, endpoint: ChdbHttpEndpoint) -> None:
    # The SDK's exit hook exports the last batch (into the spool) and shuts the exporter down,
    # which drains the spool before the process ends.
    endpoint.reset()
    environment = {**os.environ, "XDG_DATA_HOME": str(tmp_path), "OTEL_EXPORTER_CLICKHOUSE_ENDPOINT": endpoint.url,
                   "OTEL_EXPORTER_CLICKHOUSE_DATABASE": "exiting"}
    subprocess.run([sys.executable, "-c", EXITING_APP], env=environment, check=True, capture_output=True,
                   timeout=60)
    assert stored(endpoint, "exiting") == (5, 5)
    assert not list(tmp_path.glob("llmtel/spool/*/*.batch"))


MID_RUN_EXITING_APP = """
import sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from llmtel.exporter_clickhouse import ClickHouseSpanExporter
provider = TracerProvider()
exporter = ClickHouseSpanExporter()
provider.add_span_processor(BatchSpanProcessor(exporter))
tracer = provider.get_tracer("exiting")
for number in range(5):
    with tracer.start_as_current_span("early"):
        pass
provider.force_flush()  # exported mid-run: the embedded store opens now, not in the exit hook
assert exporter.force_flush()
for number in range(7):
    with tracer.start_as_current_span("late"):
        pass
"""


def test_an_app_on_the_embedded_store_exits_and_its_last_spans_are_stored(tmp_path: Path) -> None:
    # clickhouse-connect closes an embedded client from a weakref finalizer at interpreter exit,
    # and that finalizer's exit hook (registered when the store opened) runs before the SDK's,
    # which exports the last spans. They must be stored all the same, and nothing left behind.
    store = tmp_path / "store"
    environment = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"),
                   "OTEL_EXPORTER_CLICKHOUSE_ENDPOINT": f"chdb://{store}"}
    done = subprocess.run([sys.executable, "-c", MID_RUN_EXITING_APP], env=environment, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "could not insert" not in done.stderr and "wait in the spool" not in done.stderr, done.stderr
    assert not list(tmp_path.glob("data/llmtel/spool/*/*.batch"))
    reader = clickhouse_connect.get_client(interface="chdb", path=str(store))
    try:
        assert reader.query("SELECT countIf(SpanName = 'early'), countIf(SpanName = 'late') "
                            "FROM default.otel_traces").result_rows == [(5, 7)]
    finally:
        reader.close()


def test_an_app_exporting_over_http_mid_run_exits_and_its_last_spans_are_stored(
    tmp_path: Path, endpoint: ChdbHttpEndpoint
) -> None:
    # The same over HTTP: clickhouse-connect's own exit hook (closing its connection pools) is
    # registered when the client is first imported, here mid-run, and so runs before the SDK's.
    endpoint.reset()
    environment = {**os.environ, "XDG_DATA_HOME": str(tmp_path), "OTEL_EXPORTER_CLICKHOUSE_ENDPOINT": endpoint.url,
                   "OTEL_EXPORTER_CLICKHOUSE_DATABASE": "exiting_mid_run"}
    done = subprocess.run([sys.executable, "-c", MID_RUN_EXITING_APP], env=environment, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "could not insert" not in done.stderr, done.stderr
    assert stored(endpoint, "exiting_mid_run") == (12, 12)
    assert not list(tmp_path.glob("llmtel/spool/*/*.batch"))


# --- the exporting process killed ------------------------------------------------------------


class CrashApp:
    """tests/exporter_crash_app.py in a subprocess, with its ``accepted`` lines read as they come."""

    def __init__(self, endpoint: str, database: str, data_dir: Path, service: str, count: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(TESTS / "exporter_crash_app.py"), endpoint, database, str(data_dir), service,
             str(count)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self.accepted = 0
        self.slowest_ms = 0.0
        self.done = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            words = line.split()
            if words[:1] == ["accepted"]:
                self.accepted, self.slowest_ms = int(words[1]), max(self.slowest_ms, float(words[2]))
            elif words == ["done"]:
                self.done = True

    def wait_accepted(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.accepted < count:
            assert self.process.poll() is None, "the application exited early"
            assert time.monotonic() < deadline, f"only {self.accepted} spans accepted"
            time.sleep(0.05)

    def kill(self) -> int:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._reader.join(5)
        return self.accepted

    def wait(self, timeout: float = 60) -> None:
        self.process.wait(timeout)
        self._reader.join(5)


def test_a_process_killed_mid_run_loses_no_accepted_span_and_duplicates_none(tmp_path: Path) -> None:
    with ChdbHttpEndpoint(tmp_path / "crash-store") as server:
        data_dir = tmp_path / "app-data"
        first = CrashApp(server.url, "crash", data_dir, "crash-1", 0)
        try:
            first.wait_accepted(100)
            server.faults(delay_seconds=0.3)  # inserts in flight when the kill comes
            first.wait_accepted(first.accepted + 60)
            server.kill()  # then the store goes away: batches go to the spool
            first.wait_accepted(first.accepted + 200)
            accepted = first.kill()
        finally:
            if first.process.poll() is None:
                first.process.kill()
        assert list(data_dir.glob("spool/*/*.batch")), "the outage left batches in the spool"
        server.restart()

        second = CrashApp(server.url, "crash", data_dir, "crash-2", 60)
        second.wait()
        assert second.done

        count, distinct = stored(server, "crash", "ServiceName = 'crash-1'")
        assert count == distinct  # no span stored twice
        covered = int(server.query(
            "SELECT count() FROM crash.otel_traces WHERE ServiceName = 'crash-1' "
            f"AND toUInt64OrNull(SpanAttributes['seq']) < {accepted}"
        ))
        assert covered == accepted  # every accepted span is there
        assert stored(server, "crash", "ServiceName = 'crash-2'") == (60, 60)
        assert not list(data_dir.glob("spool/*/*.batch"))
        assert first.slowest_ms < 1000 and second.slowest_ms < 1000


# --- the embedded store held by another process ------------------------------------------------

HOLDER = """
import sys, time, clickhouse_connect
client = clickhouse_connect.get_client(interface="chdb", path=sys.argv[1])
print("held", flush=True)
sys.stdin.readline()
client.close()
"""


def test_an_embedded_store_held_elsewhere_is_one_line_and_spans_wait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    store = data_dir / "store"  # the default store: no endpoint configured
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(store)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    exporter = ClickHouseSpanExporter(data_dir=str(data_dir), database="held")
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with caplog.at_level(logging.WARNING, logger="llmtel.exporter_clickhouse"):
            started = time.monotonic()
            assert exporter.export(span_batch(8)) is SpanExportResult.SUCCESS
            assert exporter.export(span_batch(4, seed=2)) is SpanExportResult.SUCCESS
            assert time.monotonic() - started < 5
            assert exporter.force_flush(10_000) is False  # held elsewhere: not retried in a loop
        (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert str(store) in line and "llmtel serve" in line
        assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318" in line and "\n" not in line
        assert [item.rows for item in exporter.spool.pending()] == [8, 4]

        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(30)
        # The drain thread's backoff timer may open the store as soon as the holder is gone, before
        # this flush: the announcement is looked for in everything logged during the test.
        with caplog.at_level(logging.WARNING, logger="llmtel.exporter_clickhouse"):
            assert exporter.force_flush()
        assert any(f"embedded ClickHouse store at {store}" in r.getMessage() for r in caplog.records)
        assert exporter._store is not None
        with exporter._store_lock:  # the drain thread's store
            assert exporter._store._client.command("SELECT count() FROM held.otel_traces") == 12
    finally:
        exporter.shutdown()
        if holder.poll() is None:
            holder.kill()
    # The store is free again for other processes (and other paths in this one).
    reopened = clickhouse_connect.get_client(interface="chdb", path=str(store))
    assert reopened.command("SELECT count() FROM held.otel_traces") == 12
    reopened.close()


# --- the end of the outage ---------------------------------------------------------------------


def test_after_a_30s_outage_every_span_is_stored_once_and_the_app_never_waited(outage: Outage) -> None:
    remaining = outage.started_down + OUTAGE_SECONDS - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    spooled = outage.exporter.spool.pending()
    assert spooled, "the outage put batches in the spool"
    outage.endpoint.restart()
    outage.down = False
    time.sleep(1.0)  # the application goes on making spans with the store back
    outage.stop_application()
    assert outage.provider.force_flush()
    assert outage.exporter.force_flush(60_000)
    assert not outage.errors
    assert stored(outage.endpoint, "outage") == (outage.made, outage.made)
    assert sorted(outage.endpoint.query("SELECT SpanId FROM outage.otel_traces").split()) == sorted(outage.span_ids)
    # Generous on purpose: making a span is microseconds; a wait on ClickHouse would be seconds.
    assert outage.slowest_while_down < 1.0, outage.slowest_while_down
    assert os.path.isdir(outage.exporter.spool.path)
