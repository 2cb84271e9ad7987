"""``ClickHouseSpanExporter``: spans → Native block → the spool → a drain thread → ClickHouse.

The SDK's ``BatchSpanProcessor`` calls ``export()`` on its own thread. ``export()``:

1. encodes the batch once (``columns.encode_spans``; a large one in slices of 2048 spans, one
   Native block each) and gives it a fresh ``insert_deduplication_token``;
2. writes it to the spool (``spool.put``: a temporary file renamed into place; no fsync, see
   ``spool``: a killed process keeps its page cache) and wakes the drain thread;
3. returns SUCCESS. It never talks to ClickHouse on this path, never waits for it, never raises.

The drain thread (one per exporter, started at the first export, again after a fork) takes the
spool's drain lock (``flock``: the workers of one app may share a spool) and inserts what waits
there OLDEST FIRST, several consecutive batches in one insert (their Native blocks one after
the other in one INSERT body) up to ``OTEL_EXPORTER_CLICKHOUSE_INSERT_MAX_ROWS`` /
``_INSERT_MAX_BYTES``. Batching is natural: while one insert runs the next batches accumulate,
and the next insert takes them all, so small batches do not each pay ClickHouse's fixed cost
per insert, and encoding (the processor's thread) overlaps inserting (chDB releases the GIL in
a query). Under a steady stream inserts start at most once per
``OTEL_EXPORTER_CLICKHOUSE_INSERT_INTERVAL`` (1 s, ClickHouse's guidance) unless a full insert
waits; a batch after a quiet spell, a flush and a shutdown do not wait.

Exactly once: before the first attempt of a group the drainer writes a group intent (member
names + token) into the spool; whoever drains next (this thread, or after a crash the next run,
or another process) first finishes the intents it finds, with the same members, bytes and token,
so ClickHouse's deduplication (``schema.INSERT_SETTINGS``; a multi-block insert gets per-block
tokens derived from the one token) drops a repeat of an insert whose answer was lost. The server
squashes a group (at most 100k rows by default, under its ~1M-row insert block) into one block
per day partition, so a group takes one or two of the deduplication window's 10,000 hashes.

Failures: a passing one (server down, timeout, 5xx) is retried with capped exponential backoff
and jitter for the retry budget (``OTEL_EXPORTER_CLICKHOUSE_RETRY_MAX_ELAPSED_TIME``), then the
drainer backs off (probes at growing intervals, at most 30 s apart) while batches wait in the
spool (fsynced then: they may wait a while). A failure that cannot pass (refused credentials, a
missing table without ``create_schema``, a schema that refuses the rows) is not retried: the
batches wait for the next probe, as they did before the drain thread, so the queue waits for
the fix (the spool cap drops the oldest meanwhile) rather than dropping what a fix would store.
The spool cap still applies (oldest dropped, one warning a minute; a group is dropped whole).

``force_flush()`` wakes the drain and waits until the spool is empty; ``shutdown()`` stops
accepting, drains within its (bounded) timeout and closes the store; what is left waits in the
spool for the next run. The SDK's own ``force_flush()`` does not reach the exporter: after it,
spans are accepted (in the spool), not necessarily stored yet.

Spool off (``OTEL_EXPORTER_CLICKHOUSE_SPOOL_MAX_BYTES=0``), or the spool unwritable (disk full,
read-only): ``export()`` inserts synchronously as before (retries within the budget without a
spool, one attempt with a broken one) and drops the batch when that fails, counted and logged.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import random
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from llmtel.exporter_clickhouse.columns import INSERT_COLUMN_NAMES, EncodedBatch, encode_spans
from llmtel.exporter_clickhouse.config import ExporterConfig
from llmtel.exporter_clickhouse.spool import GroupIntent, SpoolCorrupt, SpoolDirectory, SpooledBatch
from llmtel.exporter_clickhouse.store import Store, StoreError

__all__ = ["ClickHouseSpanExporter"]

_logger = logging.getLogger(__name__)

# Backoff between the attempts of one insert (from 0.25 s, doubling, at most 5 s) and between
# probes of a store that is away (from 0.5 s, doubling, at most 30 s: the Collector's
# retry_on_failure max_interval). Each delay is drawn from [d/2, d] so that the workers of one
# app, which failed together, do not come back together.
_RETRY_FIRST, _RETRY_MAX = 0.25, 5.0
_PROBE_FIRST, _PROBE_MAX = 0.5, 30.0
# How often a drainer looks again when another process holds the drain lock (it may stop
# draining, or die, while batches of ours wait), and how often force_flush() looks at the spool.
_LOCK_BUSY_POLL = 0.25
_FLUSH_POLL = 0.05
# A large batch is encoded in slices of this many spans, one Native block each, one after the
# other in the batch's body (an INSERT takes several blocks; the server squashes them into one
# part): the column lists of a slice stay in the CPU caches, which makes 8192 spans encode ~15%
# faster than as one block (bench/export.py's spans: ~100k spans/s of CPU against ~85k).
_ENCODE_SLICE = 2048


def _jittered(first: float, cap: float, failures: int) -> float:
    delay = min(cap, first * 2 ** max(0, failures - 1))
    return random.uniform(delay / 2, delay)


def _encode(spans: Sequence[ReadableSpan]) -> EncodedBatch:
    if len(spans) <= _ENCODE_SLICE:
        return encode_spans(spans)
    starts = range(0, len(spans), _ENCODE_SLICE)
    blocks = [encode_spans(spans[start : start + _ENCODE_SLICE]).native for start in starts]
    return EncodedBatch(b"".join(blocks), len(spans))


def _at_exit(reference: weakref.ref) -> None:
    exporter = reference()
    if exporter is not None:
        exporter._exiting()


def _after_fork_in_child(reference: weakref.ref) -> None:
    exporter = reference()
    if exporter is not None:
        exporter._after_fork()


class _Probe:
    """When the store may be tried again after it failed (the exporter's circuit breaker)."""

    def __init__(self) -> None:
        self.failures = 0
        self.next_try = 0.0

    def open(self) -> bool:
        return time.monotonic() >= self.next_try

    def wait(self) -> float:
        return max(0.0, self.next_try - time.monotonic())

    def failed(self) -> None:
        self.failures += 1
        self.next_try = time.monotonic() + _jittered(_PROBE_FIRST, _PROBE_MAX, self.failures)

    def succeeded(self) -> None:
        self.failures = 0
        self.next_try = 0.0


class _Group(NamedTuple):
    """A group intent with its insert body (the members' Native blocks in order), read and checked."""

    intent: GroupIntent
    body: bytes
    columns: tuple[str, ...]
    rows: int


class ClickHouseSpanExporter(SpanExporter):
    """Exports spans into the OpenTelemetry Collector's ClickHouse tables.

    Registered as ``clickhouse`` under ``opentelemetry_traces_exporter``, so
    ``OTEL_TRACES_EXPORTER=clickhouse`` selects it. The SDK constructs it without arguments: the
    ``OTEL_EXPORTER_CLICKHOUSE_*`` variables configure it; keyword arguments (the fields of
    :class:`ExporterConfig`, e.g. ``endpoint="https://ch:8443"``, ``timeout="2s"``) override them.
    A configuration problem is logged once; the exporter then keeps spans in the spool (or drops
    them, counted, without one) and never raises into the application.
    """

    def __init__(self, **settings: Any) -> None:
        self.config = ExporterConfig.from_environment(**settings)
        self.problems = self.config.validate()
        self.spool = (
            SpoolDirectory(self.config.spool_path, self.config.spool_max_bytes)
            if self.config.spool_max_bytes > 0 else None
        )
        self._store: Store | None = None
        if not self.problems:
            try:
                self._store = Store(self.config)
            except ValueError as error:  # validate() should have said so; never crash the app
                self.problems = [str(error)]
        self.dropped_spans = 0
        self._closed = False
        self._reported: str | None = None
        self._reset_threads()
        # At interpreter exit the SDK's own atexit hook flushes the processor and shuts the
        # exporter down. atexit runs hooks last-registered first, and the exporter is made after
        # its TracerProvider, so this runs before that: from then on a failed insert is not
        # retried after a backoff, and the app exits within one attempt.
        atexit.register(functools.partial(_at_exit, weakref.ref(self)))
        if hasattr(os, "register_at_fork"):
            # A child forked while the drain thread was inserting would inherit held locks and no
            # thread (the SDK restarts its processor thread in the child; this restarts ours).
            os.register_at_fork(after_in_child=functools.partial(_after_fork_in_child, weakref.ref(self)))
        if self.problems:
            kept = f"spans are kept in the spool at {self.spool.path}" if self.spool else "spans are dropped"
            _logger.error(
                "ClickHouse span exporter is not sending (%s until the configuration is fixed): %s",
                kept, "; ".join(self.problems),
            )

    def _reset_threads(self) -> None:
        """The thread state: fresh in a new exporter and in a forked child."""
        self._store_lock = threading.Lock()  # the Store is not thread-safe
        self._send_lock = threading.Lock()  # synchronous exports (no spool), one at a time
        self._wake = threading.Event()  # a batch was spooled, or a flush / the end was asked for
        self._hurry = threading.Event()  # cut a backoff short (flush, shutdown, exit)
        self._progress = threading.Condition()
        self._flush_requested = False
        # Insert attempts started, and the number of the last one after which the drainer backed
        # off: force_flush() stops waiting when an attempt made after its request failed.
        self._attempts = 0
        self._failed_attempt = 0
        self._stopping = False
        self._exit_started = False
        self._shutdown_deadline = 0.0
        self._probe = _Probe()
        self._lock_busy = False
        self._last_insert_at = 0.0  # when the last new group was formed (monotonic)
        self._next_insert_at = 0.0  # when the drainer comes back for a group it waits to fill
        self._deferred_rows = self._deferred_bytes = 0  # what waits for that group (an estimate)
        self._drain_thread: threading.Thread | None = None
        self._drain_pid = os.getpid()

    # --- the SpanExporter interface ---------------------------------------------------------

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            batch = _encode(spans)
        except Exception:
            self.dropped_spans += len(spans)
            _logger.exception("ClickHouse span exporter could not encode %d spans; they are dropped", len(spans))
            return SpanExportResult.FAILURE
        return self.export_encoded(batch)

    def export_encoded(self, batch: EncodedBatch) -> SpanExportResult:
        """``export()`` after its encoding step: ``batch`` is Native (one block, or several in a row,
        of the ``INSERT_COLUMNS``), e.g. spans received over OTLP by ``llmtel serve``."""
        token = uuid.uuid4().hex
        try:
            if self._closed:
                # A processor still exporting after shutdown (its own wait timed out): not sent, as
                # the SDK's contract says, but kept for the next run rather than lost.
                self._spool_or_drop(batch, token)
                return SpanExportResult.FAILURE
            if self.spool is None:
                return self._export_synchronously(batch, token)
            return self._spool_and_wake(batch, token)
        except Exception:
            self.dropped_spans += batch.rows
            _logger.exception("ClickHouse span exporter failed unexpectedly; %d spans are dropped", batch.rows)
            return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Insert what waits in the spool now (whatever the backoff says); True once the spool is empty.

        False at the timeout, or as soon as the store failed and the drainer backs off again.
        """
        if self._closed:
            return False
        if self.spool is None:
            return True  # export() stored or dropped each batch before it returned
        deadline = time.monotonic() + max(0, timeout_millis) / 1000
        if self._store is None:
            return not self.spool.has_pending()
        with self._progress:
            attempts_before = self._attempts
            self._flush_requested = True
        self._ensure_drain_thread()
        self._hurry.set()
        self._wake.set()
        while True:
            if not self.spool.has_pending():
                return True
            with self._progress:
                remaining = deadline - time.monotonic()
                if self._failed_attempt > attempts_before or remaining <= 0:
                    return False
                self._progress.wait(min(remaining, _FLUSH_POLL))

    def shutdown(self, timeout_millis: float = 30000) -> None:
        """Stop accepting; insert what waits while time allows (one attempt each); close the store.

        Whatever is not stored in time stays in the spool for the next run.
        """
        if self._closed:
            return
        self._closed = True
        # Bounded as an export once was: the retry budget (at least 1 s), never past the timeout.
        budget = min(max(0.0, timeout_millis / 1000), max(self.config.retry_budget, 1.0))
        self._shutdown_deadline = time.monotonic() + budget
        thread = self._drain_thread if self._drain_pid == os.getpid() else None
        if thread is None and self._store is not None and self.spool is not None and self.spool.has_pending():
            thread = self._ensure_drain_thread()
        if thread is not None and thread.is_alive():
            with self._progress:
                self._stopping = True
            self._hurry.set()
            self._wake.set()
            thread.join(max(0.0, self._shutdown_deadline - time.monotonic()))
            if thread.is_alive():
                # Still inside an insert (a store slower than the timeout): it ends by itself and
                # closes the store then; the process may exit meanwhile (a daemon thread).
                _logger.debug("ClickHouse span exporter: shutdown did not wait for an insert in flight")
        elif self._store is not None:
            with self._store_lock:
                self._store.close()
        if self.spool is not None:
            self.spool.sync()
        self._report_at_exit()

    # --- state for health checks ------------------------------------------------------------

    def backlog(self) -> tuple[int, int]:
        """(batches, spans) waiting in the spool to be inserted (a few are normal: the drain is asynchronous)."""
        if self.spool is None:
            return 0, 0
        waiting = self.spool.pending()
        return len(waiting), sum(item.rows for item in waiting)

    @property
    def store_failing(self) -> bool:
        """Whether the last insert failed (the drainer is retrying or backing off)."""
        return self._probe.failures > 0

    # --- the hooks --------------------------------------------------------------------------

    def _exiting(self) -> None:
        self._exit_started = True
        self._hurry.set()

    def _after_fork(self) -> None:
        self._reset_threads()
        if self.spool is not None:
            self.spool.after_fork_in_child()

    # --- export(): the spool, or synchronously ------------------------------------------------

    def _spool_and_wake(self, batch: EncodedBatch, token: str) -> SpanExportResult:
        assert self.spool is not None
        try:
            kept = self.spool.put(batch.native, batch.rows, token, INSERT_COLUMN_NAMES)
        except OSError as error:
            # The disk refuses (full, read-only): one attempt straight to the store, as it was
            # before the spool existed, then the batch is dropped.
            problem = f"the spool at {self.spool.path} cannot be written: {error}"
            refused = self._insert_once(batch, token) if self._store is not None else "no store configured"
            if refused is None:
                self._report(problem, "inserting each batch directly (one attempt)")
                return SpanExportResult.SUCCESS
            self._drop(batch.rows, f"{problem}; the direct attempt failed too: {refused}")
            return SpanExportResult.FAILURE
        if kept is None:
            self._drop(batch.rows, f"the batch is larger than the spool ({self.spool.max_bytes} bytes)")
            return SpanExportResult.FAILURE
        if self._store is not None:
            self._ensure_drain_thread()
            if self._next_insert_at > time.monotonic():
                # The drainer waits out the insert interval and comes back by itself; wake it
                # only when a full insert is waiting (a lost update here costs a wake, no more).
                self._deferred_rows += kept.rows
                self._deferred_bytes += kept.size
                if (self._deferred_rows < self.config.insert_max_rows
                        and self._deferred_bytes < self.config.insert_max_bytes):
                    return SpanExportResult.SUCCESS
            self._wake.set()
        return SpanExportResult.SUCCESS

    def _insert_once(self, batch: EncodedBatch, token: str) -> str | None:
        """One direct attempt; the store's problem, or None when stored."""
        assert self._store is not None
        try:
            with self._store_lock:
                self._store.insert(batch.native, token, INSERT_COLUMN_NAMES)
        except StoreError as error:
            return str(error)
        return None

    def _export_synchronously(self, batch: EncodedBatch, token: str) -> SpanExportResult:
        """No spool: insert now, retrying passing failures within the budget; drop on failure."""
        if self._store is None:
            self._drop(batch.rows, "the exporter is not configured and the spool is off")
            return SpanExportResult.FAILURE
        deadline = time.monotonic() + self.config.retry_budget
        with self._send_lock:
            if not self._probe.open():
                self._drop(batch.rows, "the store is failing and the spool is off")
                return SpanExportResult.FAILURE
            if self._insert_with_retries(batch.native, token, INSERT_COLUMN_NAMES, deadline):
                return SpanExportResult.SUCCESS
        self._drop(batch.rows, "the store cannot take them and the spool is off")
        return SpanExportResult.FAILURE

    def _spool_or_drop(self, batch: EncodedBatch, token: str) -> None:
        if self.spool is None:
            self._drop(batch.rows, "the exporter is shut down and the spool is off")
            return
        try:
            kept = self.spool.put(batch.native, batch.rows, token, INSERT_COLUMN_NAMES)
        except OSError as error:
            self._drop(batch.rows, f"the spool at {self.spool.path} cannot be written: {error}")
            return
        if kept is None:
            self._drop(batch.rows, f"the batch is larger than the spool ({self.spool.max_bytes} bytes)")

    # --- the drain thread -------------------------------------------------------------------

    def _ensure_drain_thread(self) -> threading.Thread | None:
        if self._store is None or self.spool is None:
            return None
        if self._drain_pid != os.getpid():
            self._reset_threads()  # a child the fork hook missed
        thread = self._drain_thread
        if thread is not None and thread.is_alive():
            return thread
        with self._progress:
            thread = self._drain_thread
            if thread is None or not thread.is_alive():
                thread = threading.Thread(target=self._drain_forever, name="llmtel-clickhouse-drain", daemon=True)
                self._drain_thread = thread
                thread.start()
        return thread

    def _drain_forever(self) -> None:
        try:
            while not self._stopping:
                self._wake.wait(self._next_wake())
                self._wake.clear()
                if self._stopping:
                    break
                with self._progress:
                    flush, self._flush_requested = self._flush_requested, False
                if not flush and not self._probe.open():
                    continue  # backing off; the timer brings us back
                self._drain_safely(final=False, now=flush)
            self._drain_safely(final=True, now=True)
        finally:
            if self._store is not None:
                with self._store_lock:
                    self._store.close()
            with self._progress:
                self._progress.notify_all()

    def _next_wake(self) -> float | None:
        if self._probe.failures:
            return max(0.01, self._probe.wait())
        if self._lock_busy:
            return _LOCK_BUSY_POLL
        if self._next_insert_at:
            return max(0.0, self._next_insert_at - time.monotonic())
        return None  # until the next export, flush or shutdown

    def _drain_safely(self, *, final: bool, now: bool) -> None:
        try:
            self._drain(final=final, now=now)
        except Exception:
            # A bug or an unexpected OS error must not end the thread: back off and try later.
            _logger.exception("ClickHouse span exporter: the drain failed unexpectedly")
            self._gave_up_for_now()

    def _drain(self, *, final: bool, now: bool) -> None:
        """Insert what waits in the spool, group by group, oldest first, until it is empty or an insert fails.

        ``final``: the last pass at shutdown: one attempt per group, stop at the deadline.
        ``now``: a flush: no waiting for the insert interval.
        """
        assert self.spool is not None
        with self.spool.drain_lock() as mine:
            self._lock_busy = not mine
            if not mine:
                return  # another process (or exporter) drains this spool
            while True:
                if (final and time.monotonic() >= self._shutdown_deadline) or (self._stopping and not final):
                    return  # (a shutdown: its final pass, bounded by its deadline, takes over)
                group = self._next_group(now=now or final or self._exit_started)
                if group is None:
                    return
                if not self._insert_group(group, final=final):
                    return
                self.spool.finish_group(group.intent)
                with self._progress:
                    self._progress.notify_all()

    def _next_group(self, *, now: bool) -> _Group | None:
        """The group to insert next: an intent left by an earlier attempt first, else a new one."""
        assert self.spool is not None
        for intent in self.spool.groups():
            if intent.done:
                self.spool.finish_group(intent)  # stored; its deletion was cut short
                continue
            group = self._read_group(intent)
            if group is not None:
                return group
        return self._plan_group(now=now)

    def _plan_group(self, *, now: bool) -> _Group | None:
        """A new group: the oldest waiting batches that fit one insert, read and checked, then the intent.

        None when nothing waits, or when less than a full insert waits and the last insert started
        less than the insert interval ago (then ``_next_insert_at`` says when to come back).
        """
        assert self.spool is not None
        waiting = self.spool.pending()
        self._next_insert_at = 0.0
        if not now and waiting and self._last_insert_at:
            due = self._last_insert_at + self.config.insert_interval
            rows, size = sum(batch.rows for batch in waiting), sum(batch.size for batch in waiting)
            if time.monotonic() < due and rows < self.config.insert_max_rows and size < self.config.insert_max_bytes:
                self._deferred_rows, self._deferred_bytes = rows, size
                self._next_insert_at = due
                return None
        members: list[SpooledBatch] = []
        bodies: list[bytes] = []
        columns: tuple[str, ...] = ()
        rows = size = 0
        for batch in waiting:
            if members and (rows + batch.rows > self.config.insert_max_rows
                            or size + batch.size > self.config.insert_max_bytes):
                break
            read = self._read_batch(batch)
            if read is None:
                continue
            native, batch_columns = read
            if members and batch_columns != columns:
                break  # written by another version: an insert of its own
            members.append(batch)
            bodies.append(native)
            columns = batch_columns
            rows += batch.rows
            size += batch.size
        if not members:
            return None
        intent = self.spool.begin_group(members)
        self._last_insert_at = time.monotonic()
        return _Group(intent, b"".join(bodies), columns, rows)

    def _read_group(self, intent: GroupIntent) -> _Group | None:
        """The body of an intent found in the spool; a group that lost members becomes a new group."""
        assert self.spool is not None
        present: list[SpooledBatch] = []
        bodies: list[bytes] = []
        columns: tuple[str, ...] = ()
        for name in intent.members:
            batch = self.spool.batch(name)
            read = self._read_batch(batch) if batch is not None else None
            if read is None:
                continue
            native, columns = read
            present.append(batch)
            bodies.append(native)
        if len(present) == len(intent.members):
            return _Group(intent, b"".join(bodies), columns, sum(batch.rows for batch in present))
        # Members went missing (damaged after a power loss, deleted by hand, the cap cut short):
        # the exact insert cannot be repeated. The rest goes as a new group; should the first
        # attempt have reached the store, those spans are stored twice (logged).
        if present:
            _logger.warning(
                "ClickHouse span exporter: a group of %d spooled batches lost %d; the other %d are inserted "
                "under a new token (stored twice if the first attempt had reached the store)",
                len(intent.members), len(intent.members) - len(present), len(present),
            )
        self.spool.discard_group(intent)
        return None  # the caller plans anew from what is pending (the survivors come first)

    def _read_batch(self, batch: SpooledBatch) -> tuple[bytes, tuple[str, ...]] | None:
        """A spooled batch's Native bytes and columns; None when it is gone, or damaged (then moved aside)."""
        assert self.spool is not None
        try:
            return self.spool.read(batch)
        except FileNotFoundError:
            return None
        except SpoolCorrupt as error:
            moved = self.spool.quarantine(batch)
            _logger.warning("ClickHouse span exporter: a spooled batch is damaged (%s); moved to %s", error, moved)
            return None

    def _insert_group(self, group: _Group, *, final: bool) -> bool:
        """Insert one group, with retries while they can help; False when the drainer should back off."""
        assert self.spool is not None
        deadline = self._shutdown_deadline if final else time.monotonic() + self.config.retry_budget
        stored = self._insert_with_retries(group.body, group.intent.token, group.columns, deadline,
                                           final=final, still_wanted=lambda: self.spool.is_live(group.intent))
        if not stored:
            self.spool.sync()  # the batches may wait a while now: make them survive a power loss
            self._gave_up_for_now()
        return stored

    def _insert_with_retries(
        self, body: bytes, token: str, columns: Sequence[str], deadline: float, *,
        final: bool = False, still_wanted: Callable[[], bool] | None = None,
    ) -> bool:
        """Insert (the same body and token each time), retrying passing failures until the deadline.

        ``final``: one attempt (shutdown). ``still_wanted``: checked before each retry (the spool
        cap may have dropped the group meanwhile).
        """
        assert self._store is not None
        failures = 0
        while True:
            self._hurry.clear()  # a flush asked for during this attempt cuts the next backoff short
            with self._progress:
                self._attempts += 1
            try:
                with self._store_lock:
                    self._store.insert(body, token, columns)
            except StoreError as error:
                failures += 1
                delay = _jittered(_RETRY_FIRST, _RETRY_MAX, failures)
                hurry = final or self._exit_started or self._stopping
                if not error.retryable or hurry or time.monotonic() + delay >= deadline:
                    self._probe.failed()
                    self._report(str(error))
                    return False
                self._hurry.wait(delay)
                if still_wanted is not None and not still_wanted():
                    return True  # the spool cap dropped the group meanwhile: nothing left to store
                continue
            self._stored()
            return True

    def _gave_up_for_now(self) -> None:
        if not self._probe.failures:
            self._probe.failed()
        with self._progress:
            self._failed_attempt = self._attempts
            self._progress.notify_all()

    # --- telling the user -------------------------------------------------------------------

    def _report(self, problem: str, consequence: str = "") -> None:
        """Log a problem once (again only when it changes), with what it means for the spans."""
        if problem == self._reported:
            return
        self._reported = problem
        if not consequence:
            consequence = (f"spans wait in the spool at {self.spool.path}" if self.spool
                           else "the spool is off: spans are dropped")
        _logger.warning("ClickHouse span exporter: %s; %s", problem, consequence)

    def _stored(self) -> None:
        recovering = self._reported is not None
        self._probe.succeeded()
        if recovering:
            assert self._store is not None
            _logger.warning("ClickHouse span exporter: storing in %s again", self._store.where)
            self._reported = None

    def _drop(self, rows: int, reason: str) -> None:
        self.dropped_spans += rows
        self._report(reason, "spans are dropped")

    def _report_at_exit(self) -> None:
        waiting = self.spool.pending() if self.spool is not None else []
        if waiting:
            _logger.warning(
                "ClickHouse span exporter: %d spans wait in the spool at %s; they are sent at the next start",
                sum(item.rows for item in waiting), self.spool.path if self.spool else "",
            )
        if self.dropped_spans:
            _logger.warning("ClickHouse span exporter: %d spans were dropped in all (see the warnings above)",
                            self.dropped_spans)
