"""``ClickHouseSpanExporter``: spans → Native block → ClickHouse, or → the spool when it cannot.

The SDK's ``BatchSpanProcessor`` calls ``export()`` on its own thread, so nothing here runs on
the application's threads (except an explicit ``force_flush()``/``shutdown()``). One export:

1. encodes the batch once (``columns.encode_spans``) and gives it a fresh
   ``insert_deduplication_token``;
2. when batches wait in the spool, appends this one behind them and replays them oldest first
   (order is kept, also across restarts); otherwise inserts it, retrying passing failures with
   capped exponential backoff and jitter for at most the retry budget
   (``OTEL_EXPORTER_CLICKHOUSE_RETRY_MAX_ELAPSED_TIME``, never past ``OTEL_BSP_EXPORT_TIMEOUT``);
3. when the store stays away, writes the batch to the spool and backs off: the next exports go
   straight to the spool (cheap, so the processor's queue keeps draining and the application's
   spans are never dropped for want of room) until a probe finds the store again.

A replay sends the very bytes and token of the first attempt, so a batch the server stored
before an answer was lost is dropped as a duplicate (``schema.INSERT_SETTINGS``).

``export()`` never raises. It returns SUCCESS when the spans are stored or safely in the spool,
FAILURE only when they were dropped (no spool, spool unwritable, or a batch that cannot be
encoded) — each such drop is logged.
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
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from llmtel.exporter_clickhouse.columns import INSERT_COLUMN_NAMES, EncodedBatch, encode_spans
from llmtel.exporter_clickhouse.config import ExporterConfig
from llmtel.exporter_clickhouse.spool import SpoolCorrupt, SpoolDirectory
from llmtel.exporter_clickhouse.store import Store, StoreError

__all__ = ["ClickHouseSpanExporter"]

_logger = logging.getLogger(__name__)

# Backoff between the attempts of one export (from 0.25 s, doubling, at most 5 s) and between
# probes of a store that is away (from 0.5 s, doubling, at most 30 s: the Collector's
# retry_on_failure max_interval). Each delay is drawn from [d/2, d] so that the workers of one
# app, which failed together, do not come back together.
_RETRY_FIRST, _RETRY_MAX = 0.25, 5.0
_PROBE_FIRST, _PROBE_MAX = 0.5, 30.0


def _jittered(first: float, cap: float, failures: int) -> float:
    delay = min(cap, first * 2 ** max(0, failures - 1))
    return random.uniform(delay / 2, delay)


def _at_exit(reference: weakref.ref) -> None:
    exporter = reference()
    if exporter is not None:
        exporter._closing.set()


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

    def failed(self) -> None:
        self.failures += 1
        self.next_try = time.monotonic() + _jittered(_PROBE_FIRST, _PROBE_MAX, self.failures)

    def succeeded(self) -> None:
        self.failures = 0
        self.next_try = 0.0


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
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._closed = False
        self._probe = _Probe()
        self._reported: str | None = None
        # At interpreter exit the SDK's own atexit hook flushes the processor, which calls export()
        # one last time. atexit runs hooks last-registered first, and the exporter is made after
        # its TracerProvider, so this runs before that flush: the last exports then make one
        # attempt each instead of backing off, and the app exits within one timeout.
        atexit.register(functools.partial(_at_exit, weakref.ref(self)))
        if hasattr(os, "register_at_fork"):
            # A child forked while the processor's thread was exporting would inherit a held lock
            # (the SDK restarts its processor thread in the child; this restarts our state).
            os.register_at_fork(after_in_child=functools.partial(_after_fork_in_child, weakref.ref(self)))
        if self.problems:
            kept = f"spans are kept in the spool at {self.spool.path}" if self.spool else "spans are dropped"
            _logger.error(
                "ClickHouse span exporter is not sending (%s until the configuration is fixed): %s",
                kept, "; ".join(self.problems),
            )

    # --- the SpanExporter interface ---------------------------------------------------------

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            batch = encode_spans(spans)
        except Exception:
            self.dropped_spans += len(spans)
            _logger.exception("ClickHouse span exporter could not encode %d spans; they are dropped", len(spans))
            return SpanExportResult.FAILURE
        token = uuid.uuid4().hex
        if self._closed:
            # A processor still exporting after shutdown (its own wait timed out): not sent, as
            # the SDK's contract says, but kept for the next run rather than lost.
            self._keep(batch, token)
            return SpanExportResult.FAILURE
        deadline = time.monotonic() + self.config.retry_budget
        with self._lock:
            try:
                return self._deliver(batch, token, deadline)
            except Exception:
                _logger.exception("ClickHouse span exporter failed unexpectedly; keeping the batch in the spool")
                return self._keep(batch, token)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Replay the spool now (whatever the backoff says), within the timeout; True when it is empty."""
        if self._closed:
            return False
        deadline = time.monotonic() + max(0, timeout_millis) / 1000
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False
        try:
            if self._store is not None and self.spool is not None:
                self._replay(deadline, probe=True)
            return self.spool is None or not self.spool.has_pending()
        except Exception:
            _logger.debug("ClickHouse span exporter: force_flush failed", exc_info=True)
            return False
        finally:
            self._lock.release()

    def shutdown(self, timeout_millis: float = 30000) -> None:
        """Replay what waits in the spool while time allows, then close the store.

        Whatever is not stored in time stays in the spool for the next run.
        """
        if self._closed:
            return
        self._closed = True
        self._closing.set()  # an export backing off stops waiting and spools its batch
        deadline = time.monotonic() + min(max(0.0, timeout_millis / 1000), max(self.config.retry_budget, 1.0))
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return
        try:
            if self._store is not None and self.spool is not None and self.spool.has_pending():
                self._replay(deadline, probe=True)
        except Exception:
            _logger.debug("ClickHouse span exporter: replay at shutdown failed", exc_info=True)
        finally:
            if self._store is not None:
                self._store.close()
            self._lock.release()
        self._report_at_exit()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._probe = _Probe()

    # --- delivery ---------------------------------------------------------------------------

    def _deliver(self, batch: EncodedBatch, token: str, deadline: float) -> SpanExportResult:
        if self._store is None:
            return self._keep(batch, token)
        if self.spool is not None and self.spool.has_pending():
            # Older batches first: this one queues behind them.
            result = self._keep(batch, token)
            self._replay(deadline)
            return result
        if not self._probe.open():
            return self._keep(batch, token)
        if self._send(batch, token, deadline):
            return SpanExportResult.SUCCESS
        return self._keep(batch, token)

    def _send(self, batch: EncodedBatch, token: str, deadline: float) -> bool:
        """Insert with retries while they can help and the budget lasts."""
        assert self._store is not None
        failures = 0
        while True:
            try:
                self._store.insert(batch.native, token, INSERT_COLUMN_NAMES)
            except StoreError as error:
                failures += 1
                delay = _jittered(_RETRY_FIRST, _RETRY_MAX, failures)
                if not error.retryable or time.monotonic() + delay >= deadline or self._closing.is_set():
                    self._probe.failed()
                    self._report(str(error))
                    return False
                if self._closing.wait(delay):
                    self._probe.failed()
                    self._report(str(error))
                    return False
                continue
            self._stored()
            return True

    def _replay(self, deadline: float, *, probe: bool = False) -> None:
        """Insert spooled batches oldest first until one fails or time is up (one attempt each).

        ``probe``: try even while backing off (an explicit flush, or shutdown).
        """
        assert self._store is not None and self.spool is not None
        if not probe and not self._probe.open():
            return
        with self.spool.drain_lock() as mine:
            if not mine:
                return  # another process (or thread) is replaying this spool
            replayed = 0
            for item in self.spool.pending():
                if replayed and time.monotonic() >= deadline:
                    break
                try:
                    native, columns = self.spool.read(item)
                except FileNotFoundError:
                    continue
                except SpoolCorrupt as error:
                    moved = self.spool.quarantine(item)
                    _logger.warning("ClickHouse span exporter: a spooled batch is damaged (%s); moved to %s",
                                    error, moved)
                    continue
                except OSError as error:
                    self._report(f"cannot read the spool at {self.spool.path}: {error}")
                    return
                try:
                    self._store.insert(native, item.token, columns)
                except StoreError as error:
                    self._probe.failed()
                    self._report(str(error))
                    return
                self.spool.remove(item)
                replayed += item.rows
            if replayed:
                self._stored(replayed)

    def _keep(self, batch: EncodedBatch, token: str) -> SpanExportResult:
        """Put the batch in the spool; when there is none (or it fails) the spans are dropped, loudly."""
        if self.spool is None:
            self._drop(batch.rows, "the store cannot take them and the spool is off")
            return SpanExportResult.FAILURE
        try:
            kept = self.spool.put(batch.native, batch.rows, token, INSERT_COLUMN_NAMES)
        except OSError as error:
            self._drop(batch.rows, f"the spool at {self.spool.path} cannot be written: {error}")
            return SpanExportResult.FAILURE
        if not kept:
            self._drop(batch.rows, f"the batch is larger than the spool ({self.spool.max_bytes} bytes)")
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    # --- telling the user -------------------------------------------------------------------

    def _report(self, problem: str) -> None:
        """Log a store problem once (again only when it changes)."""
        if problem == self._reported:
            return
        self._reported = problem
        where = f"spans wait in the spool at {self.spool.path}" if self.spool else "the spool is off: spans are dropped"
        _logger.warning("ClickHouse span exporter: %s; %s", problem, where)

    def _stored(self, replayed: int = 0) -> None:
        self._probe.succeeded()
        if self._reported is not None or replayed:
            assert self._store is not None
            _logger.warning(
                "ClickHouse span exporter: storing in %s again%s",
                self._store.where, f"; replayed {replayed} spooled spans" if replayed else "",
            )
            self._reported = None

    def _drop(self, rows: int, reason: str) -> None:
        self.dropped_spans += rows
        self._report(f"dropping spans: {reason}")

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
