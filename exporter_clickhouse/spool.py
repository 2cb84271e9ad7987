"""A bounded on-disk queue of encoded batches waiting for the store: one file per batch.

``SpoolDirectory(path, max_bytes)`` keeps each batch as one file: a one-line JSON header (the
batch's ``insert_deduplication_token``, row count, columns, CRC-32) and the batch's Native bytes,
exactly as they are inserted. Files are named by creation time, so ``pending()`` lists them
oldest first for an in-order drain, and written as a temporary file renamed into place, so a
reader sees the whole batch or nothing.

Durability: ``put()`` does not fsync. A crashed or killed process (SIGKILL, OOM) leaves its
written files in the kernel's page cache, which survives it, so the rename alone makes a batch
safe from everything but a power loss or kernel crash. An fsync per batch costs ~7-12 ms (more
than encoding 512 spans), and a healthy drain deletes the file a few milliseconds later, so
``sync()`` fsyncs the files written since the last call (and the directory) instead: the
exporter calls it when the store fails (batches may then wait for a while) and at shutdown.
After a power loss a file written in the last moments may be truncated: its CRC catches that and
the drain moves it aside (``quarantine``).

Groups: the drainer inserts several consecutive batches as one insert, under one token. Before
the first attempt it writes a group intent (``begin_group``: the member names and the group
token), so that whoever drains next (after a crash, or another process) retries exactly that
group, with the same bytes and token, and the store's deduplication can drop a repeat. After
the insert succeeded, ``finish_group`` marks the intent done (a rename), deletes the members,
then the marker; a crash in between leaves a done marker, whose leftover members are deleted.

Past ``max_bytes`` the oldest batches are dropped (counted; at most one warning a minute): a
store that stays away must not fill the disk. A batch that belongs to a group intent is dropped
with the whole group, never alone. Several processes may share one directory (the workers of
one app): writes never collide (pid + counter in the name) and ``drain_lock()`` (``flock``)
lets one of them drain at a time.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import logging
import os
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

__all__ = ["GroupIntent", "SpoolCorrupt", "SpoolDirectory", "SpooledBatch", "group_token"]

_logger = logging.getLogger(__name__)

_MAGIC = "llmtel-spool-1"
_SUFFIX = ".batch"
_GROUP_SUFFIX = ".group"
_DONE_SUFFIX = ".done"
_TEMPORARY_PREFIX = ".tmp-"
# A temporary file this old belongs to a writer that died mid-write (SIGKILL, power loss).
_STALE_TEMPORARY_SECONDS = 600.0
_WARNING_INTERVAL = 60.0
# How long put() trusts its estimate of the spool's size (the last listing plus what it wrote
# since) instead of listing the directory again: a listing stats every file, which with a few
# hundred batches waiting costs more than writing one. Drains only shrink the spool, so the
# estimate errs high; other processes' writes are seen at the next listing.
_SIZE_ESTIMATE_SECONDS = 1.0


class SpoolCorrupt(Exception):
    """A spooled file that cannot be read back as a batch (truncated, damaged, not ours)."""


class SpooledBatch(NamedTuple):
    """One batch in the spool, as listed: enough to drain it in order and account for it."""

    path: Path
    token: str
    rows: int
    size: int


class GroupIntent(NamedTuple):
    """Batches that are (or were) inserted together under ``token``; ``done``: stored already."""

    path: Path
    token: str
    members: tuple[str, ...]  # file names of the member batches, oldest first
    done: bool


def group_token(tokens: Sequence[str]) -> str:
    """The insert_deduplication_token of a group: a batch alone keeps its own, several get a hash of theirs."""
    if len(tokens) == 1:
        return tokens[0]
    return hashlib.sha256("\n".join(tokens).encode()).hexdigest()[:32]


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
        # Files written and not yet fsynced; the export thread adds, the drain thread removes.
        self._unsynced: set[str] = set()
        self._unsynced_lock = threading.Lock()
        self._lock_descriptor: int | None = None  # the drain lock's file, while this process holds it
        self._estimated_bytes = 0
        self._listed_at = -_SIZE_ESTIMATE_SECONDS

    # --- writing ----------------------------------------------------------------------------

    def put(self, native: bytes, rows: int, token: str, columns: Sequence[str]) -> SpooledBatch | None:
        """Write one batch (atomically, not fsynced: see ``sync()``); None (counted as dropped)
        when it can never fit the cap.

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
            return None
        self.path.mkdir(parents=True, exist_ok=True)
        self._make_room(size)
        # Name: creation time first, so names sort oldest first across processes; token last.
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._counter):06d}-{rows}-{token}{_SUFFIX}"
        self._write_atomically(name, (header, native))
        return SpooledBatch(self.path / name, token, rows, size)

    def _write_atomically(self, name: str, chunks: Sequence[bytes]) -> None:
        temporary = self.path / f"{_TEMPORARY_PREFIX}{name}"
        try:
            with open(temporary, "wb") as file:
                for chunk in chunks:
                    file.write(chunk)
            os.rename(temporary, self.path / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        with self._unsynced_lock:
            if len(self._unsynced) >= 4096:
                # Drained by another process, or by a drainer that does not tell this object.
                self._unsynced = {known for known in self._unsynced if (self.path / known).exists()}
            self._unsynced.add(name)

    def _synced(self, name: str) -> None:
        with self._unsynced_lock:
            self._unsynced.discard(name)

    def sync(self) -> None:
        """Make the files written since the last call durable (fsync each still there, then the directory)."""
        with self._unsynced_lock:
            names, self._unsynced = self._unsynced, set()
        if not names:
            return
        for name in names:
            try:
                descriptor = os.open(self.path / name, os.O_RDONLY)
            except OSError:
                continue  # drained (or renamed to a done marker) meanwhile
            try:
                os.fsync(descriptor)
            except OSError:
                pass
            finally:
                os.close(descriptor)
        self._sync_directory()

    def _make_room(self, incoming: int) -> None:
        now = time.monotonic()
        if now - self._listed_at < _SIZE_ESTIMATE_SECONDS and self._estimated_bytes + incoming <= self.max_bytes:
            self._estimated_bytes += incoming
            return
        batches = self.pending()
        total = sum(batch.size for batch in batches)
        self._listed_at = now
        self._estimated_bytes = total + incoming
        if total + incoming <= self.max_bytes:
            return
        by_name = {batch.path.name: batch for batch in batches}
        # A member of an unfinished group is dropped with its whole group: a retry must send the
        # group's exact bytes, which a half-dropped group no longer has.
        groups = {name: intent for intent in self.groups() if not intent.done for name in intent.members}
        for batch in batches:
            if total + incoming <= self.max_bytes:
                break
            if not batch.path.exists():
                continue
            intent = groups.get(batch.path.name)
            victims = [by_name[name] for name in intent.members if name in by_name] if intent else [batch]
            for victim in victims:
                with contextlib.suppress(FileNotFoundError):  # another process drained or dropped it
                    os.unlink(victim.path)
                    self._count_drop(1, victim.rows)
                total -= victim.size
            if intent is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(intent.path)
        self._estimated_bytes = max(0, total) + incoming

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
        # A rename is durable only once the directory entry is.
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

    def _entries(self) -> list[os.DirEntry]:
        """The spool directory's entries; none when it is not made yet, or not a directory."""
        try:
            return list(os.scandir(self.path))
        except OSError:
            return []

    def pending(self) -> list[SpooledBatch]:
        """The spooled batches, oldest first (stale temporary files of dead writers are removed)."""
        batches = []
        entries = self._entries()
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
        except OSError:  # not made yet, or not a directory (a broken spool holds nothing)
            return False

    def read(self, batch: SpooledBatch) -> tuple[bytes, tuple[str, ...]]:
        """(Native bytes, their columns) of a spooled batch; ``SpoolCorrupt`` when it does not check out.

        ``FileNotFoundError`` when another process drained or dropped it meanwhile.
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
        self._synced(batch.path.name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(batch.path)

    def quarantine(self, batch: SpooledBatch) -> Path:
        """Move a batch that cannot be sent out of the queue (kept for inspection, not retried)."""
        target = self.path / "corrupt"
        target.mkdir(exist_ok=True)
        destination = target / batch.path.name
        with contextlib.suppress(FileNotFoundError):
            os.rename(batch.path, destination)
        return destination

    # --- groups: several batches, one insert ---------------------------------------------------

    def begin_group(self, members: Sequence[SpooledBatch]) -> GroupIntent:
        """Record, before the first attempt, that ``members`` are inserted together (token: ``group_token``)."""
        names = tuple(member.path.name for member in members)
        token = group_token([member.token for member in members])
        body = json.dumps({"spool": _MAGIC, "token": token, "members": names}, separators=(",", ":")).encode()
        # Named after the oldest member, so intents sort like the batches they hold.
        name = names[0][: -len(_SUFFIX)] + _GROUP_SUFFIX
        self._write_atomically(name, (body,))
        return GroupIntent(self.path / name, token, names, False)

    def groups(self) -> list[GroupIntent]:
        """Group intents and done markers left in the spool, oldest first (unreadable ones are moved aside)."""
        intents = []
        entries = self._entries()
        for entry in sorted(entries, key=lambda entry: entry.name):
            done = entry.name.endswith(_DONE_SUFFIX)
            if entry.name.startswith(".") or not (done or entry.name.endswith(_GROUP_SUFFIX)):
                continue
            try:
                content = json.loads(Path(entry.path).read_bytes())
                if content.get("spool") != _MAGIC:
                    raise ValueError("not a spool file")
                members = tuple(str(name) for name in content["members"])
                intents.append(GroupIntent(Path(entry.path), str(content["token"]), members, done))
            except FileNotFoundError:
                continue
            except (ValueError, KeyError, TypeError) as error:
                _logger.warning("ClickHouse spool: unreadable group intent %s (%s); moved aside", entry.path, error)
                target = self.path / "corrupt"
                target.mkdir(exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    os.rename(entry.path, target / entry.name)
        return intents

    def batch(self, name: str) -> SpooledBatch | None:
        """The batch of that file name (a group member) as ``pending()`` lists it; None when it is gone."""
        path = self.path / name
        try:
            size = path.stat().st_size
            _, _, _, rows, token = name[: -len(_SUFFIX)].split("-", 4)
            return SpooledBatch(path, token, int(rows), size)
        except (FileNotFoundError, ValueError):
            return None

    def is_live(self, intent: GroupIntent) -> bool:
        """Whether the intent is still there (the cap may drop a waiting group whole)."""
        return intent.path.exists()

    def finish_group(self, intent: GroupIntent) -> None:
        """The group is stored: mark it done, delete its members, then the marker."""
        marker = intent.path
        if not intent.done:
            marker = intent.path.with_suffix(_DONE_SUFFIX)
            try:
                os.rename(intent.path, marker)
            except FileNotFoundError:
                marker = None  # dropped by the cap meanwhile (members with it)
        for name in intent.members:
            self._synced(name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path / name)
        self._synced(intent.path.name)
        if marker is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(marker)

    def discard_group(self, intent: GroupIntent) -> None:
        """Forget an intent whose insert can no longer be repeated exactly (members lost); its other
        members wait as plain batches again."""
        self._synced(intent.path.name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(intent.path)

    # --- one drainer at a time --------------------------------------------------------------

    @contextlib.contextmanager
    def drain_lock(self) -> Iterator[bool]:
        """Yields True when this caller may drain (no other process or thread is), else False."""
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
            self._lock_descriptor = descriptor
            try:
                yield True
            finally:
                self._lock_descriptor = None
                fcntl.flock(descriptor, fcntl.LOCK_UN)
        finally:
            os.close(descriptor)

    def after_fork_in_child(self) -> None:
        """Drop this process's copy of a drain lock held at the fork (by the parent's drain thread).

        A flock belongs to the open file, which the child shares: were the parent killed, the
        child's copy would keep the spool locked for every process. Closing the copy (no unlock:
        the parent still drains) leaves the lock to the parent alone.
        """
        descriptor, self._lock_descriptor = self._lock_descriptor, None
        self._unsynced_lock = threading.Lock()
        if descriptor is not None:
            with contextlib.suppress(OSError):
                os.close(descriptor)
