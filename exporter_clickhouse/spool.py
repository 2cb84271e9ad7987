"""A bounded on-disk queue of batches the store could not take yet: one file per batch.

``SpoolDirectory(path, max_bytes)`` keeps each batch as one file: a one-line JSON header (the
batch's ``insert_deduplication_token``, row count, columns, CRC-32) and the batch's Native bytes,
exactly as they would have been inserted. Files are written atomically (temporary file, fsync,
rename, fsync of the directory), so a crash leaves either the whole batch or nothing, and named
by creation time, so ``pending()`` lists them oldest first for an in-order replay.

Past ``max_bytes`` the oldest batches are dropped (counted; at most one warning a minute): a
store that stays away must not fill the disk. Several processes may share one directory (the
workers of one app): writes never collide (pid + counter in the name) and ``drain_lock()``
(``flock``) lets one of them replay at a time.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import logging
import os
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

__all__ = ["SpoolCorrupt", "SpoolDirectory", "SpooledBatch"]

_logger = logging.getLogger(__name__)

_MAGIC = "llmtel-spool-1"
_SUFFIX = ".batch"
_TEMPORARY_PREFIX = ".tmp-"
# A temporary file this old belongs to a writer that died mid-write (SIGKILL, power loss).
_STALE_TEMPORARY_SECONDS = 600.0
_WARNING_INTERVAL = 60.0


class SpoolCorrupt(Exception):
    """A spooled file that cannot be read back as a batch (truncated, damaged, not ours)."""


class SpooledBatch(NamedTuple):
    """One batch in the spool, as listed: enough to replay it in order and account for it."""

    path: Path
    token: str
    rows: int
    size: int


class SpoolDirectory:
    """The spool of one store and table (the caller picks the directory)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.dropped_batches = 0
        self.dropped_spans = 0
        self._counter = itertools.count()
        self._unwarned_drops = 0
        self._last_warning = -_WARNING_INTERVAL

    # --- writing ----------------------------------------------------------------------------

    def put(self, native: bytes, rows: int, token: str, columns: Sequence[str]) -> bool:
        """Store one batch durably; False (counted as dropped) when it can never fit the cap.

        Raises ``OSError`` when the disk refuses the write (full, read-only): the caller decides.
        """
        header = json.dumps(
            {"spool": _MAGIC, "token": token, "rows": rows, "columns": list(columns),
             "crc32": zlib.crc32(native), "bytes": len(native)},
            separators=(",", ":"),
        ).encode() + b"\n"
        size = len(header) + len(native)
        if size > self.max_bytes:
            self._count_drop(1, rows)
            return False
        self.path.mkdir(parents=True, exist_ok=True)
        self._make_room(size)
        # Name: creation time first, so names sort oldest first across processes; token last.
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._counter):06d}-{rows}-{token}{_SUFFIX}"
        temporary = self.path / f"{_TEMPORARY_PREFIX}{name}"
        try:
            with open(temporary, "wb") as file:
                file.write(header)
                file.write(native)
                file.flush()
                os.fsync(file.fileno())
            os.rename(temporary, self.path / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._sync_directory()
        return True

    def _make_room(self, incoming: int) -> None:
        batches = self.pending()
        total = sum(batch.size for batch in batches)
        for batch in batches:
            if total + incoming <= self.max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):  # another process replayed or dropped it
                os.unlink(batch.path)
                self._count_drop(1, batch.rows)
            total -= batch.size

    def _count_drop(self, batches: int, rows: int) -> None:
        self.dropped_batches += batches
        self.dropped_spans += rows
        self._unwarned_drops += rows
        now = time.monotonic()
        if now - self._last_warning >= _WARNING_INTERVAL:
            _logger.warning(
                "ClickHouse spool %s is full (%d bytes): dropped the oldest %d spans (%d in all); "
                "raise OTEL_EXPORTER_CLICKHOUSE_SPOOL_MAX_BYTES or bring the store back",
                self.path, self.max_bytes, self._unwarned_drops, self.dropped_spans,
            )
            self._last_warning = now
            self._unwarned_drops = 0

    def _sync_directory(self) -> None:
        # The rename is durable only once the directory entry is.
        try:
            descriptor = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(descriptor)
        except OSError:
            pass
        finally:
            os.close(descriptor)

    # --- reading ----------------------------------------------------------------------------

    def pending(self) -> list[SpooledBatch]:
        """The spooled batches, oldest first (stale temporary files of dead writers are removed)."""
        batches = []
        try:
            entries = list(os.scandir(self.path))
        except FileNotFoundError:
            return []
        now = time.time()
        for entry in entries:
            name = entry.name
            try:
                if name.endswith(_SUFFIX) and not name.startswith("."):
                    _, _, _, rows, token = name[: -len(_SUFFIX)].split("-", 4)
                    batches.append(SpooledBatch(Path(entry.path), token, int(rows), entry.stat().st_size))
                elif name.startswith(_TEMPORARY_PREFIX) and now - entry.stat().st_mtime > _STALE_TEMPORARY_SECONDS:
                    os.unlink(entry.path)
            except (FileNotFoundError, ValueError):
                continue
        batches.sort(key=lambda batch: batch.path.name)
        return batches

    def has_pending(self) -> bool:
        try:
            with os.scandir(self.path) as entries:
                return any(entry.name.endswith(_SUFFIX) and not entry.name.startswith(".") for entry in entries)
        except FileNotFoundError:
            return False

    def read(self, batch: SpooledBatch) -> tuple[bytes, tuple[str, ...]]:
        """(Native bytes, their columns) of a spooled batch; ``SpoolCorrupt`` when it does not check out.

        ``FileNotFoundError`` when another process replayed or dropped it meanwhile.
        """
        data = batch.path.read_bytes()
        end = data.find(b"\n")
        try:
            header = json.loads(data[:end])
            if header.get("spool") != _MAGIC:
                raise ValueError("not a spool file")
            native = data[end + 1 :]
            if len(native) != header["bytes"] or zlib.crc32(native) != header["crc32"]:
                raise ValueError("checksum mismatch")
            return native, tuple(header["columns"])
        except (ValueError, KeyError, TypeError) as error:
            raise SpoolCorrupt(f"{batch.path}: {error}") from None

    def remove(self, batch: SpooledBatch) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(batch.path)

    def quarantine(self, batch: SpooledBatch) -> Path:
        """Move a batch that cannot be replayed out of the queue (kept for inspection, not retried)."""
        target = self.path / "corrupt"
        target.mkdir(exist_ok=True)
        destination = target / batch.path.name
        with contextlib.suppress(FileNotFoundError):
            os.rename(batch.path, destination)
        return destination

    # --- one replayer at a time ------------------------------------------------------------

    @contextlib.contextmanager
    def drain_lock(self) -> Iterator[bool]:
        """Yields True when this caller may replay (no other process or thread is), else False."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path / ".drain.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            yield False
            return
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    yield False
                    return
                raise
            try:
                yield True
            finally:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
        finally:
            os.close(descriptor)
