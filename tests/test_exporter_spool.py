"""spool: the on-disk queue, and the exporter's use of it (with a recording fake of the store)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
from exporter_spans import decode_native, span_batch
from opentelemetry.sdk.trace.export import SpanExportResult

from llmtel.exporter_clickhouse import ClickHouseSpanExporter
from llmtel.exporter_clickhouse.columns import INSERT_COLUMN_NAMES, encode_spans
from llmtel.exporter_clickhouse.spool import SpoolCorrupt, SpoolDirectory
from llmtel.exporter_clickhouse.store import StoreError

COLUMNS = ("a", "b")


def test_batches_come_back_oldest_first_byte_for_byte(tmp_path: Path) -> None:
    spool = SpoolDirectory(tmp_path / "spool", 10_000)
    for number in range(5):
        assert spool.put(f"payload {number}".encode(), rows=number + 1, token=f"token{number}", columns=COLUMNS)
    pending = spool.pending()
    assert [item.token for item in pending] == [f"token{n}" for n in range(5)]
    assert [item.rows for item in pending] == [1, 2, 3, 4, 5]
    assert [spool.read(item) for item in pending] == [(f"payload {n}".encode(), COLUMNS) for n in range(5)]
    assert not [name for name in os.listdir(spool.path) if name.startswith(".tmp-")]
    spool.remove(pending[0])
    assert [item.token for item in spool.pending()] == [f"token{n}" for n in range(1, 5)]


def test_past_the_cap_the_oldest_batches_are_dropped_counted_and_warned_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = SpoolDirectory(tmp_path / "spool", 2_000)
    payload = b"x" * 400
    with caplog.at_level(logging.WARNING, logger="llmtel.exporter_clickhouse.spool"):
        for number in range(10):
            assert spool.put(payload, rows=10, token=f"t{number}", columns=COLUMNS)
    pending = spool.pending()
    assert sum(item.size for item in pending) <= 2_000
    assert [item.token for item in pending] == [f"t{n}" for n in range(10 - len(pending), 10)]
    assert spool.dropped_batches == 10 - len(pending) and spool.dropped_spans == 10 * spool.dropped_batches
    warnings = [record for record in caplog.records if "is full" in record.getMessage()]
    assert len(warnings) == 1  # at most one a minute


def test_a_batch_larger_than_the_cap_is_refused_and_counted(tmp_path: Path) -> None:
    spool = SpoolDirectory(tmp_path / "spool", 100)
    assert not spool.put(b"y" * 200, rows=3, token="big", columns=COLUMNS)
    assert spool.pending() == [] and spool.dropped_spans == 3


def test_damaged_files_are_detected_and_moved_aside(tmp_path: Path) -> None:
    spool = SpoolDirectory(tmp_path / "spool", 10_000)
    spool.put(b"intact payload", rows=1, token="t1", columns=COLUMNS)
    (item,) = spool.pending()
    item.path.write_bytes(item.path.read_bytes()[:-3])  # truncated
    with pytest.raises(SpoolCorrupt):
        spool.read(item)
    moved = spool.quarantine(item)
    assert moved.exists() and spool.pending() == []


def test_stale_temporary_files_of_dead_writers_are_cleaned(tmp_path: Path) -> None:
    spool = SpoolDirectory(tmp_path / "spool", 10_000)
    spool.put(b"p", rows=1, token="t", columns=COLUMNS)
    stale = spool.path / ".tmp-stale.batch"
    fresh = spool.path / ".tmp-fresh.batch"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert len(spool.pending()) == 1
    assert not stale.exists() and fresh.exists()


def test_one_replayer_at_a_time(tmp_path: Path) -> None:
    first, second = SpoolDirectory(tmp_path / "spool", 100), SpoolDirectory(tmp_path / "spool", 100)
    with first.drain_lock() as mine:
        assert mine
        with second.drain_lock() as theirs:
            assert not theirs
    with second.drain_lock() as theirs:
        assert theirs


# --- the exporter and its spool, over a fake store --------------------------------------------


class RecordingStore:
    """Stands in for Store: records (token, rows) of each insert; fails while told to."""

    where = "fake-store (default.otel_traces)"

    def __init__(self) -> None:
        self.stored: list[tuple[str, int]] = []
        self.attempts: list[str] = []
        self.down: StoreError | None = None
        self.closed = False

    def insert(self, native: bytes, token: str, columns: tuple[str, ...]) -> None:
        self.attempts.append(token)
        assert tuple(columns) == INSERT_COLUMN_NAMES
        if self.down is not None:
            raise self.down
        self.stored.append((token, len(decode_native(native)[1])))

    def close(self) -> None:
        self.closed = True


def make_exporter(tmp_path: Path, store: RecordingStore, **settings: object) -> ClickHouseSpanExporter:
    settings = {"data_dir": str(tmp_path / "data"), "endpoint": "http://127.0.0.1:1", "retry_max_elapsed": "0.2s",
                **settings}
    exporter = ClickHouseSpanExporter(**settings)
    exporter._store = store  # type: ignore[assignment]  # the fake, for the exporter's own logic
    return exporter


def test_while_the_store_is_down_batches_queue_and_replay_in_order_with_their_first_tokens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RecordingStore()
    exporter = make_exporter(tmp_path, store)
    store.down = StoreError("cannot reach ClickHouse at http://127.0.0.1:1: connection refused", retryable=True)
    with caplog.at_level(logging.WARNING, logger="llmtel.exporter_clickhouse"):
        for size in (3, 4, 5):
            assert exporter.export(span_batch(size)) is SpanExportResult.SUCCESS
    spooled = exporter.spool.pending()
    assert [item.rows for item in spooled] == [3, 4, 5]
    assert store.stored == []
    # The first batch was tried (with retries: one token), the others went straight to the spool.
    assert set(store.attempts) == {spooled[0].token}
    problem_lines = [r for r in caplog.records if "connection refused" in r.getMessage()]
    assert len(problem_lines) == 1 and str(exporter.spool.path) in problem_lines[0].getMessage()

    store.down = None
    assert exporter.force_flush(5_000)
    assert store.stored == [(item.token, item.rows) for item in spooled]
    assert exporter.export(span_batch(2)) is SpanExportResult.SUCCESS
    assert [rows for _, rows in store.stored] == [3, 4, 5, 2]
    assert any("storing in" in r.getMessage() and "replayed 12" in r.getMessage() for r in caplog.records)


def test_a_new_batch_waits_behind_the_spool_when_the_store_comes_back(tmp_path: Path) -> None:
    store = RecordingStore()
    exporter = make_exporter(tmp_path, store)
    store.down = StoreError("down", retryable=True)
    exporter.export(span_batch(1))
    exporter.export(span_batch(2))
    store.down = None
    exporter._probe.succeeded()  # the backoff has passed
    assert exporter.export(span_batch(3)) is SpanExportResult.SUCCESS
    assert [rows for _, rows in store.stored] == [1, 2, 3]
    assert exporter.spool.pending() == []


def test_a_restarted_exporter_replays_the_previous_runs_spool_first(tmp_path: Path) -> None:
    store = RecordingStore()
    store.down = StoreError("down", retryable=True)
    first = make_exporter(tmp_path, store)
    first.export(span_batch(6))
    first.shutdown(timeout_millis=500)
    tokens = [item.token for item in first.spool.pending()]
    assert len(tokens) == 1

    store.down = None
    second = make_exporter(tmp_path, store)
    assert second.spool.path == first.spool.path
    second.export(span_batch(2))
    assert store.stored[0] == (tokens[0], 6) and [rows for _, rows in store.stored] == [6, 2]


def test_failures_that_cannot_pass_are_not_retried_and_spool_the_batch(tmp_path: Path) -> None:
    store = RecordingStore()
    exporter = make_exporter(tmp_path, store, retry_max_elapsed="5s")
    store.down = StoreError("refused the credentials", retryable=False)
    started = time.monotonic()
    assert exporter.export(span_batch(2)) is SpanExportResult.SUCCESS
    assert time.monotonic() - started < 2  # no backoff loop for a permanent failure
    assert len(store.attempts) == 1 and len(exporter.spool.pending()) == 1


def test_passing_failures_are_retried_with_the_same_token(tmp_path: Path) -> None:
    store = RecordingStore()
    exporter = make_exporter(tmp_path, store, retry_max_elapsed="5s")

    failures = iter([StoreError("blip", retryable=True)] * 2)

    def flaky(native: bytes, token: str, columns: tuple[str, ...]) -> None:
        store.attempts.append(token)
        error = next(failures, None)
        if error:
            raise error
        store.stored.append((token, len(decode_native(native)[1])))

    store.insert = flaky  # type: ignore[method-assign]
    assert exporter.export(span_batch(4)) is SpanExportResult.SUCCESS
    assert len(store.attempts) == 3 and len(set(store.attempts)) == 1
    assert store.stored == [(store.attempts[0], 4)] and exporter.spool.pending() == []


def test_without_a_spool_an_unstorable_batch_is_dropped_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RecordingStore()
    exporter = make_exporter(tmp_path, store, spool_max_bytes=0)
    store.down = StoreError("down", retryable=True)
    with caplog.at_level(logging.WARNING, logger="llmtel.exporter_clickhouse"):
        assert exporter.export(span_batch(3)) is SpanExportResult.FAILURE
        exporter.shutdown()
    assert exporter.dropped_spans == 3
    assert any("3 spans were dropped" in r.getMessage() for r in caplog.records)


def test_an_unwritable_spool_drops_with_a_warning_and_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the spool should be")
    store = RecordingStore()
    exporter = make_exporter(tmp_path, store, spool_dir=str(blocker))
    store.down = StoreError("down", retryable=True)
    assert exporter.export(span_batch(2)) is SpanExportResult.FAILURE
    assert exporter.dropped_spans == 2


def test_a_batch_that_cannot_be_encoded_is_dropped_not_raised(tmp_path: Path) -> None:
    exporter = make_exporter(tmp_path, RecordingStore())
    assert exporter.export([object()]) is SpanExportResult.FAILURE  # type: ignore[list-item]
    assert exporter.dropped_spans == 1


def test_a_replayed_batch_is_the_first_attempts_bytes(tmp_path: Path) -> None:
    spans = span_batch(5)
    native = encode_spans(spans).native
    store = RecordingStore()
    seen: list[bytes] = []
    exporter = make_exporter(tmp_path, store)
    store.down = StoreError("down", retryable=True)
    exporter.export(spans)
    store.down = None
    store.insert = lambda data, token, columns: seen.append(data)  # type: ignore[method-assign]
    exporter.force_flush()
    assert seen == [native]


def test_a_child_forked_mid_export_starts_with_a_free_exporter(tmp_path: Path) -> None:
    store = RecordingStore()
    exporter = make_exporter(tmp_path, store)
    with exporter._lock:  # as if the processor's thread were exporting when the app forks
        pid = os.fork()
        if pid == 0:  # the child: it must be able to export, not wait forever
            ok = exporter.export(span_batch(2)) is SpanExportResult.SUCCESS and len(store.stored) == 1
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
