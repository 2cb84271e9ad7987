"""spool: the on-disk queue, and the exporter's drain thread over it (with a recording fake of the store)."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from exporter_spans import decode_native, span_batch
from opentelemetry.sdk.trace.export import SpanExportResult

from llmtel.exporter_clickhouse import ClickHouseSpanExporter
from llmtel.exporter_clickhouse.columns import INSERT_COLUMN_NAMES, EncodedBatch, encode_spans
from llmtel.exporter_clickhouse.spool import SpoolCorrupt, SpoolDirectory, group_token
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


def test_put_does_not_fsync_and_sync_makes_what_was_written_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = SpoolDirectory(tmp_path / "spool", 10_000)
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(descriptor)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    for number in range(3):
        spool.put(b"payload", rows=1, token=f"t{number}", columns=COLUMNS)
    assert synced == []  # a killed process keeps the page cache: no fsync per batch
    spool.remove(spool.pending()[0])
    spool.sync()
    assert len(synced) == 2 + 1  # the two batches still there, then the directory
    spool.sync()
    assert len(synced) == 3  # nothing written since


def test_a_group_intent_names_its_members_and_a_done_group_is_cleaned_up(tmp_path: Path) -> None:
    spool = SpoolDirectory(tmp_path / "spool", 10_000)
    for number in range(4):
        spool.put(f"p{number}".encode(), rows=number + 1, token=f"t{number}", columns=COLUMNS)
    first_three = spool.pending()[:3]
    intent = spool.begin_group(first_three)
    assert intent.token == group_token(["t0", "t1", "t2"]) and len(intent.token) == 32
    assert spool.begin_group(spool.pending()[3:]).token == "t3"  # alone: its own token
    (found, alone) = spool.groups()
    assert found == intent and alone.members == (spool.pending()[3].path.name,)
    # A crash after the insert and the done mark, before the members were all deleted:
    os.rename(intent.path, intent.path.with_suffix(".done"))
    os.unlink(first_three[0].path)
    (done, _) = spool.groups()
    assert done.done and done.members == intent.members
    spool.finish_group(done)
    assert [item.token for item in spool.pending()] == ["t3"]
    assert [group.members for group in spool.groups()] == [alone.members]


def test_past_the_cap_a_pending_group_is_dropped_whole_never_half(tmp_path: Path) -> None:
    spool = SpoolDirectory(tmp_path / "spool", 10_000)
    payload = b"x" * 400
    for number in range(3):
        spool.put(payload, rows=10, token=f"t{number}", columns=COLUMNS)
    size = spool.pending()[0].size
    spool.max_bytes = 3 * size + size // 2  # room for three batches
    intent = spool.begin_group(spool.pending()[:2])
    spool.put(payload, rows=10, token="t3", columns=COLUMNS)  # needs the room of one batch
    # The oldest batch is in the group: the group goes whole (two batches), not one of its members.
    assert [item.token for item in spool.pending()] == ["t2", "t3"]
    assert spool.groups() == [] and not intent.path.exists()
    assert spool.dropped_batches == 2 and spool.dropped_spans == 20


# --- the exporter, its spool and its drain thread, over a fake store ----------------------------


class RecordingStore:
    """Stands in for Store: records (token, span ids) of each insert; fails while told to; can hold
    an insert until the test releases it."""

    where = "fake-store (default.otel_traces)"

    def __init__(self) -> None:
        self.stored: list[tuple[str, list[str]]] = []
        self.bodies: list[bytes] = []
        self.attempts: list[str] = []
        self.down: StoreError | None = None
        self.closed = False
        self.hold = threading.Event()
        self.hold.set()
        self.inserting = threading.Event()

    def insert(self, native: bytes, token: str, columns: tuple[str, ...]) -> None:
        self.attempts.append(token)
        assert tuple(columns) == INSERT_COLUMN_NAMES
        self.inserting.set()
        assert self.hold.wait(30)
        if self.down is not None:
            raise self.down
        self.bodies.append(native)
        self.stored.append((token, [row[2] for row in decode_native(native)[1]]))

    def close(self) -> None:
        self.closed = True

    def rows(self) -> list[int]:
        return [len(ids) for _, ids in self.stored]

    def span_ids(self) -> list[str]:
        return [span_id for _, ids in self.stored for span_id in ids]


def ids(spans: list) -> list[str]:
    return [f"{span.context.span_id:016x}" for span in spans]


def make_exporter(tmp_path: Path, store: RecordingStore, **settings: object) -> ClickHouseSpanExporter:
    settings = {"data_dir": str(tmp_path / "data"), "endpoint": "http://127.0.0.1:1", "retry_max_elapsed": "0.2s",
                **settings}
    exporter = ClickHouseSpanExporter(**settings)
    exporter._store = store  # type: ignore[assignment]  # the fake, for the exporter's own logic
    return exporter


def test_export_returns_once_the_batch_is_spooled_and_the_drain_thread_stores_it(tmp_path: Path) -> None:
    store = RecordingStore()
    store.hold.clear()  # the store takes its time
    exporter = make_exporter(tmp_path, store)
    spans = span_batch(4)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert store.inserting.wait(10)  # the drain thread is inside the insert, export() has returned
    assert store.stored == [] and exporter.backlog() == (1, 4)
    store.hold.set()
    assert exporter.force_flush(10_000)
    assert store.span_ids() == ids(spans) and exporter.backlog() == (0, 0)
    exporter.shutdown()
    assert store.closed


def test_while_one_insert_runs_the_next_batches_accumulate_and_go_in_one_insert_in_order(tmp_path: Path) -> None:
    store = RecordingStore()
    store.hold.clear()
    exporter = make_exporter(tmp_path, store)
    batches = [span_batch(3, seed=seed) for seed in range(10)]
    exporter.export(batches[0])
    assert store.inserting.wait(10)
    for batch in batches[1:]:
        assert exporter.export(batch) is SpanExportResult.SUCCESS
    spooled = exporter.spool.pending()
    store.hold.set()
    assert exporter.force_flush(10_000)
    assert store.rows() == [3, 27]  # two inserts for ten batches
    assert store.span_ids() == [span_id for batch in batches for span_id in ids(batch)]
    # The group's token is made from its members' tokens (the same group always gets the same one).
    assert store.stored[1][0] == group_token([item.token for item in spooled[1:]])
    exporter.shutdown()


def test_a_group_stops_at_the_insert_cap(tmp_path: Path) -> None:
    store = RecordingStore()
    store.hold.clear()
    exporter = make_exporter(tmp_path, store, insert_max_rows=10)
    batches = [span_batch(3, seed=seed) for seed in range(8)]
    exporter.export(batches[0])
    assert store.inserting.wait(10)
    for batch in batches[1:]:
        exporter.export(batch)
    store.hold.set()
    assert exporter.force_flush(10_000)
    assert store.rows() == [3, 9, 9, 3]
    assert store.span_ids() == [span_id for batch in batches for span_id in ids(batch)]
    exporter.shutdown()


def test_while_the_store_is_down_every_attempt_repeats_one_group_and_order_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RecordingStore()
    store.down = StoreError("cannot reach ClickHouse at http://127.0.0.1:1: connection refused", retryable=True)
    exporter = make_exporter(tmp_path, store)
    batches = [span_batch(size, seed=size) for size in (3, 4, 5)]
    with caplog.at_level(logging.WARNING, logger="llmtel.exporter_clickhouse"):
        for batch in batches:
            assert exporter.export(batch) is SpanExportResult.SUCCESS
        assert exporter.force_flush(10_000) is False  # the store failed: no waiting out the timeout
    assert exporter.store_failing and exporter.backlog() == (3, 12)
    assert store.stored == [] and len(set(store.attempts)) == 1  # one group, tried again and again
    first_group = store.attempts[0]
    problem_lines = [r for r in caplog.records if "connection refused" in r.getMessage()]
    assert len(problem_lines) == 1 and str(exporter.spool.path) in problem_lines[0].getMessage()

    store.down = None
    with caplog.at_level(logging.WARNING, logger="llmtel.exporter_clickhouse"):
        assert exporter.force_flush(10_000)
    assert store.stored[0][0] == first_group
    assert store.span_ids() == [span_id for batch in batches for span_id in ids(batch)]
    assert not exporter.store_failing and exporter.backlog() == (0, 0)
    assert any("storing in" in r.getMessage() for r in caplog.records)
    exporter.shutdown()


def test_a_restarted_exporter_finishes_the_previous_runs_group_first_with_its_token(tmp_path: Path) -> None:
    store = RecordingStore()
    store.down = StoreError("down", retryable=True)
    first = make_exporter(tmp_path, store)
    old = span_batch(6)
    first.export(old)
    assert first.force_flush(5_000) is False
    first.shutdown(timeout_millis=500)
    assert [item.rows for item in first.spool.pending()] == [6] and len(first.spool.groups()) == 1
    tried = set(store.attempts)

    store.down = None
    second = make_exporter(tmp_path, store)
    assert second.spool.path == first.spool.path
    new = span_batch(2, seed=2)
    second.export(new)
    assert second.force_flush(10_000)
    assert {store.stored[0][0]} == tried  # the same insert as before the restart
    assert store.span_ids() == ids(old) + ids(new)
    second.shutdown()


def test_a_group_marked_done_before_a_crash_is_not_inserted_again(tmp_path: Path) -> None:
    store = RecordingStore()
    exporter = make_exporter(tmp_path, store)
    spool = exporter.spool
    for seed in (1, 2):
        batch = encode_spans(span_batch(3, seed=seed))
        spool.put(batch.native, batch.rows, f"token{seed}", INSERT_COLUMN_NAMES)
    intent = spool.begin_group(spool.pending())
    os.rename(intent.path, intent.path.with_suffix(".done"))  # stored, then killed mid-cleanup
    os.unlink(spool.path / intent.members[0])
    assert exporter.force_flush(10_000)
    assert store.attempts == [] and spool.pending() == [] and spool.groups() == []
    exporter.shutdown()


def test_failures_that_cannot_pass_are_not_retried_and_the_batches_wait(tmp_path: Path) -> None:
    store = RecordingStore()
    exporter = make_exporter(tmp_path, store, retry_max_elapsed="5s")
    store.down = StoreError("refused the credentials", retryable=False)
    assert exporter.export(span_batch(2)) is SpanExportResult.SUCCESS
    assert exporter.force_flush(10_000) is False  # at once: no backoff loop for a permanent failure
    # One attempt (two when the drain thread tried before the flush asked): retries within the
    # 5 s budget would have made several.
    assert len(store.attempts) <= 2 and len(exporter.spool.pending()) == 1
    store.down = None  # fixed (say, the password)
    assert exporter.force_flush(10_000)
    assert store.rows() == [2]
    exporter.shutdown()


def test_passing_failures_are_retried_with_the_same_token(tmp_path: Path) -> None:
    store = RecordingStore()
    exporter = make_exporter(tmp_path, store, retry_max_elapsed="5s")
    failures = iter([StoreError("blip", retryable=True)] * 2)
    real_insert = store.insert

    def flaky(native: bytes, token: str, columns: tuple[str, ...]) -> None:
        error = next(failures, None)
        if error:
            store.attempts.append(token)
            raise error
        real_insert(native, token, columns)

    store.insert = flaky  # type: ignore[method-assign]
    assert exporter.export(span_batch(4)) is SpanExportResult.SUCCESS
    assert exporter.force_flush(10_000)
    assert len(store.attempts) == 3 and len(set(store.attempts)) == 1
    assert store.rows() == [4] and store.stored[0][0] == store.attempts[0] and exporter.spool.pending() == []
    exporter.shutdown()


def test_a_replayed_batch_is_the_first_attempts_bytes(tmp_path: Path) -> None:
    spans = span_batch(5)
    native = encode_spans(spans).native
    store = RecordingStore()
    exporter = make_exporter(tmp_path, store)
    store.down = StoreError("down", retryable=True)
    exporter.export(spans)
    assert exporter.force_flush(5_000) is False
    store.down = None
    assert exporter.force_flush(10_000)
    assert store.bodies == [native]
    exporter.shutdown()


def test_without_a_spool_export_inserts_synchronously_and_drops_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RecordingStore()
    exporter = make_exporter(tmp_path, store, spool_max_bytes=0)
    spans = span_batch(2)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert store.span_ids() == ids(spans)  # stored when export() returned
    store.down = StoreError("down", retryable=True)
    with caplog.at_level(logging.WARNING, logger="llmtel.exporter_clickhouse"):
        assert exporter.export(span_batch(3)) is SpanExportResult.FAILURE
        exporter.shutdown()
    assert exporter.dropped_spans == 3
    assert any("3 spans were dropped" in r.getMessage() for r in caplog.records)


def test_an_unwritable_spool_falls_back_to_one_direct_attempt_then_drops(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the spool should be")
    store = RecordingStore()
    exporter = make_exporter(tmp_path, store, spool_dir=str(blocker), retry_max_elapsed="5s")
    spans = span_batch(2)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert store.span_ids() == ids(spans)
    store.down = StoreError("down", retryable=True)
    assert exporter.export(span_batch(3)) is SpanExportResult.FAILURE
    assert len(store.attempts) == 2  # one attempt, no retries
    assert exporter.dropped_spans == 3
    exporter.shutdown()


def test_a_batch_that_cannot_be_encoded_is_dropped_not_raised(tmp_path: Path) -> None:
    exporter = make_exporter(tmp_path, RecordingStore())
    assert exporter.export([object()]) is SpanExportResult.FAILURE  # type: ignore[list-item]
    assert exporter.dropped_spans == 1


def test_two_exporters_sharing_a_spool_store_every_batch_once(tmp_path: Path) -> None:
    # Two instances (as two processes would) over one spool: the drain lock lets one drain at a
    # time, and each group is inserted by whoever holds it, once.
    store = RecordingStore()
    exporters = [make_exporter(tmp_path, store) for _ in range(2)]
    assert exporters[0].spool.path == exporters[1].spool.path
    exported: list[list[str]] = [[], []]

    def run(number: int) -> None:
        for seed in range(15):
            spans = span_batch(4, seed=100 * number + seed)
            exported[number].extend(ids(spans))
            exporters[number].export(spans)

    threads = [threading.Thread(target=run, args=(number,)) for number in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(exporter.force_flush(10_000) for exporter in exporters)
    stored = store.span_ids()
    assert sorted(stored) == sorted(exported[0] + exported[1])  # all, once
    for mine in exported:  # each exporter's batches in the order it exported them
        assert [span_id for span_id in stored if span_id in set(mine)] == mine
    for exporter in exporters:
        exporter.shutdown()


def test_shutdown_leaves_what_the_store_refused_in_the_spool_for_the_next_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RecordingStore()
    store.down = StoreError("down", retryable=True)
    exporter = make_exporter(tmp_path, store, retry_max_elapsed="30s")
    exporter.export(span_batch(7))
    with caplog.at_level(logging.WARNING, logger="llmtel.exporter_clickhouse"):
        exporter.shutdown(timeout_millis=30_000)  # one attempt, not the 30 s budget
    assert exporter.spool.pending()[0].rows == 7 and store.closed
    assert any("7 spans wait in the spool" in r.getMessage() for r in caplog.records)
    assert exporter.export(span_batch(1)) is SpanExportResult.FAILURE  # after shutdown: kept, not sent
    assert [item.rows for item in exporter.spool.pending()] == [7, 1]


def test_a_child_forked_mid_insert_starts_with_a_free_exporter(tmp_path: Path) -> None:
    store = RecordingStore()
    exporter = make_exporter(tmp_path, store)
    with exporter._store_lock:  # as if the drain thread were inserting when the app forks
        pid = os.fork()
        if pid == 0:  # the child: it must be able to export and drain, not wait forever
            ok = exporter.export(span_batch(2)) is SpanExportResult.SUCCESS and exporter.force_flush(10_000)
            os._exit(0 if ok and store.rows() == [2] else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    exporter.shutdown()


def test_export_encoded_takes_native_blocks_made_elsewhere(tmp_path: Path) -> None:
    # llmtel serve encodes received spans itself and may join the blocks of several requests.
    store = RecordingStore()
    exporter = make_exporter(tmp_path, store)
    first, second = span_batch(2, seed=1), span_batch(3, seed=2)
    joined = encode_spans(first).native + encode_spans(second).native
    assert exporter.export_encoded(EncodedBatch(joined, 5)) is SpanExportResult.SUCCESS
    assert exporter.force_flush(10_000)
    assert store.span_ids() == ids(first) + ids(second)
    exporter.shutdown()


def test_the_cap_drops_a_waiting_group_whole_and_the_drain_goes_on_with_the_rest(tmp_path: Path) -> None:
    store = RecordingStore()
    size = len(encode_spans(span_batch(3)).native) + 300  # a batch's file, header included
    exporter = make_exporter(tmp_path, store, spool_max_bytes=int(3.5 * size))
    spool = exporter.spool
    batches = [span_batch(3, seed=seed) for seed in range(5)]
    for batch in batches[:2]:  # as left by a run whose grouped insert failed: two batches, one intent
        encoded = encode_spans(batch)
        spool.put(encoded.native, encoded.rows, uuid.uuid4().hex, INSERT_COLUMN_NAMES)
    intent = spool.begin_group(spool.pending())
    store.down = StoreError("down", retryable=True)
    for batch in batches[2:]:  # the third batch past the cap makes room: the whole group goes
        assert exporter.export(batch) is SpanExportResult.SUCCESS
    assert not intent.path.exists() and [item.rows for item in spool.pending()] == [3, 3, 3]
    assert spool.dropped_batches == 2
    store.down = None
    assert exporter.force_flush(10_000)
    assert store.span_ids() == [span_id for batch in batches[2:] for span_id in ids(batch)]
    exporter.shutdown()


def test_a_child_forked_while_the_drain_lock_is_held_lets_go_of_its_copy(tmp_path: Path) -> None:
    # The lock belongs to the open file, shared with the child: a child keeping its copy would keep
    # the spool locked for everyone once the parent is gone.
    exporter = make_exporter(tmp_path, RecordingStore())
    with exporter.spool.drain_lock() as mine:
        assert mine
        descriptor = exporter.spool._lock_descriptor
        assert descriptor is not None
        pid = os.fork()
        if pid == 0:
            try:
                os.fstat(descriptor)
            except OSError:
                os._exit(0)  # closed by the exporter's fork hook
            os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.fstat(descriptor)  # the parent still holds it
    assert os.waitstatus_to_exitcode(status) == 0
    exporter.shutdown()


def test_within_the_insert_interval_batches_wait_to_go_together_unless_flushed(tmp_path: Path) -> None:
    store = RecordingStore()
    exporter = make_exporter(tmp_path, store, insert_interval="60s")
    exporter.export(span_batch(3, seed=1))  # after a quiet spell: inserted at once
    wait_until(lambda: store.rows() == [3])
    exporter.export(span_batch(2, seed=2))
    exporter.export(span_batch(4, seed=3))
    wait_until(lambda: exporter._next_insert_at > 0)  # the drainer saw them and waits for more
    assert store.rows() == [3] and exporter.backlog() == (2, 6)
    assert exporter.force_flush(10_000)  # a flush does not wait
    assert store.rows() == [3, 6]
    exporter.shutdown()


def test_within_the_insert_interval_a_full_insert_goes_at_once(tmp_path: Path) -> None:
    store = RecordingStore()
    exporter = make_exporter(tmp_path, store, insert_interval="60s", insert_max_rows=10)
    exporter.export(span_batch(3, seed=1))
    wait_until(lambda: store.rows() == [3])
    for seed, size in ((2, 3), (3, 3)):
        exporter.export(span_batch(size, seed=seed))
    wait_until(lambda: exporter._next_insert_at > 0)
    exporter.export(span_batch(4, seed=4))  # ten rows wait now: a full insert
    wait_until(lambda: store.rows() == [3, 10])
    exporter.shutdown()

def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_large_batch_is_encoded_in_slices_of_blocks_holding_every_span_in_order(tmp_path: Path) -> None:
    store = RecordingStore()
    exporter = make_exporter(tmp_path, store)
    spans = span_batch(5000)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.force_flush(10_000)
    (body,) = store.bodies
    slices = [encode_spans(spans[start : start + 2048]).native for start in (0, 2048, 4096)]
    assert body == b"".join(slices)  # three blocks, each what encode_spans makes of its slice
    assert store.span_ids() == ids(spans)
    exporter.shutdown()
