"""One ClickHouse, through clickhouse-connect: a server over HTTP, or the embedded chDB store.

``Store(config)`` connects lazily (the first ``insert()``, on the exporter's thread), creates the
schema once when ``create_schema`` is on, and inserts Native bytes (one block or several) per
call with the schema's insert settings and the batch's ``insert_deduplication_token``. Every failure comes out as a
``StoreError``: one line a user can act on, and whether trying again can help. The store does
not retry; the exporter does, in one place.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import math
import os
import socket
import threading
import zlib
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any

from llmtel.exporter_clickhouse import environment_variables as env
from llmtel.exporter_clickhouse import schema
from llmtel.exporter_clickhouse.config import Endpoint, ExporterConfig

__all__ = ["Store", "StoreError", "held_by_another_process"]

_logger = logging.getLogger(__name__)

# ClickHouse error codes (src/Common/ErrorCodes.cpp) after which the same insert cannot succeed
# until someone changes something: credentials, rights, the schema, the data. Every other code
# (TOO_MANY_PARTS, MEMORY_LIMIT_EXCEEDED, TIMEOUT_EXCEEDED, KEEPER_EXCEPTION, ...) passes.
_AUTHENTICATION_CODES = frozenset({192, 193, 194, 195, 516})  # UNKNOWN_USER, WRONG_PASSWORD, ..., AUTHENTICATION_FAILED
_ACCESS_CODES = frozenset({164, 497})  # READONLY, ACCESS_DENIED
_MISSING_CODES = frozenset({60, 81})  # UNKNOWN_TABLE, UNKNOWN_DATABASE
_PERMANENT_CODES = frozenset(
    {
        6, 16, 26, 27, 33, 36, 38, 41, 43, 44, 47, 53, 62, 69, 70, 72, 115, 117, 130, 386,
    }  # CANNOT_PARSE_*, NO_SUCH_COLUMN_IN_TABLE, BAD_ARGUMENTS, ILLEGAL_*, TYPE_MISMATCH, SYNTAX_ERROR, ...
) | _AUTHENTICATION_CODES | _ACCESS_CODES | _MISSING_CODES

# Loggers that speak up on every refused connection: clickhouse-connect's transport, and
# urllib3's pool ("Retrying ... after connection broken") during the client's handshake.
_DRIVER_LOGGERS = ("clickhouse_connect.driver._backend.http_sync", "urllib3.connectionpool")

# The attribute indexes of otel_traces (text indexes on the attribute keys and key=value items,
# or their bloom-filter twins on servers before 26.2). An embedded store builds them when a part
# is first merged instead of at every insert: they are most of an insert's cost (an 8192-span
# insert with the whole schema took 145 ms of CPU with them, 65 ms without; with merges running,
# 2x the spans per second and a fifth less CPU in all, since a merge rebuilds them anyway), and
# the engine runs on the application's own cores. Skip indexes only ever skip granules, so a
# query reads the same rows either way; a part not merged yet is read without them. The
# TraceId, Duration and SpanName indexes are still built at once (looking up a fresh trace).
# (ClickHouse settings exclude_materialize_skip_indexes_on_insert, materialize_skip_indexes_on_merge.)
_EMBEDDED_DEFERRED_INDEXES = (
    "idx_res_attr_key", "idx_res_attr_items", "idx_res_attr_value",
    "idx_span_attr_key", "idx_span_attr_items", "idx_span_attr_value",
)
_DEFER_INDEXES_SETTING = "exclude_materialize_skip_indexes_on_insert"

_default_store_announced = False
_announce_lock = threading.Lock()


class StoreError(Exception):
    """A failed connect, schema step or insert: ``str()`` is one line for the user."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Store:
    """The store an :class:`ExporterConfig` names; not thread-safe (the exporter serialises calls)."""

    def __init__(self, config: ExporterConfig) -> None:
        self.config = config
        self.endpoint: Endpoint = config.target()
        self.options = config.schema_options()
        self.table = self.options.qualified(self.options.traces_table)
        self._client: Any = None
        self._schema_ready = not config.create_schema
        self._pid = os.getpid()
        self._insert_settings: dict[str, object] = dict(schema.INSERT_SETTINGS)

    @property
    def client(self) -> Any:
        """The clickhouse-connect client once ``connect()`` ran (readers share how it is built)."""
        return self._client

    @property
    def where(self) -> str:
        """The store and table, for messages."""
        return f"{self.endpoint.url} ({self.options.database}.{self.options.traces_table})"

    # --- connecting -------------------------------------------------------------------------

    def connect(self) -> None:
        """Open the client and create the schema if needed; a no-op when already done."""
        if self._pid != os.getpid():
            # A forked child must not share the parent's sockets or chDB engine; start afresh.
            self._client = None
            self._schema_ready = not self.config.create_schema
            self._pid = os.getpid()
        if self._client is None:
            self._client = self._open()
            self._insert_settings = {**schema.INSERT_SETTINGS, **self._engine_insert_settings()}
        if not self._schema_ready:
            try:
                schema.apply(self._client, self.options)
            except Exception as error:
                raise self._failure("could not create the schema in", error) from error
            self._schema_ready = True

    def _open(self) -> Any:
        import clickhouse_connect

        if self.endpoint.kind == "embedded":
            return self._open_embedded(clickhouse_connect)
        username = self.config.username or self.endpoint.username
        password = self.config.password or (self.endpoint.password if not self.config.username else "")
        # clickhouse-connect takes whole seconds here; the exact timeout is set right after.
        whole_seconds = max(1, math.ceil(self.config.timeout))
        try:
            with _quiet_driver():
                client = clickhouse_connect.get_client(
                    host=self.endpoint.host,
                    port=self.endpoint.port,
                    interface="https" if self.endpoint.secure else "http",
                    username=username or None,
                    password=password,
                    compress=self.config.compress if self.config.compress != "none" else False,
                    connect_timeout=whole_seconds,
                    send_receive_timeout=whole_seconds,
                    query_retries=0,
                    autogenerate_session_id=False,
                )
        except Exception as error:
            raise self._failure("could not connect to", error) from error
        from urllib3 import Timeout

        client.timeout = Timeout(connect=self.config.timeout, read=self.config.timeout)
        # Retry lives in the exporter: no second layer of retries under it.
        client.http_retries = 0
        return client

    def _open_embedded(self, clickhouse_connect: Any) -> Any:
        path = self.endpoint.path
        # Held elsewhere: not something a retry within seconds fixes; the exporter's probes
        # (every half a minute at most) find the store when the other process lets it go.
        if held_by_another_process(path):
            raise StoreError(_locked_message(path), retryable=False)
        try:
            os.makedirs(path, exist_ok=True)
            client = clickhouse_connect.get_client(interface="chdb", path=path)
        except ImportError as error:
            raise StoreError(
                f"the embedded store needs chDB: pip install 'llmtel[embedded]' (or set "
                f"{env.OTEL_EXPORTER_CLICKHOUSE_ENDPOINT} to a ClickHouse server)",
                retryable=False,
            ) from error
        except Exception as error:
            text = str(error)
            if "already initialized with path" in text:
                raise StoreError(
                    f"this process already uses chDB with another path, so it cannot open the store at {path} "
                    f"(chDB allows one path per process): "
                    f"set {env.OTEL_EXPORTER_CLICKHOUSE_ENDPOINT}=chdb://<that path>",
                    retryable=False,
                ) from error
            if held_by_another_process(path):
                raise StoreError(_locked_message(path), retryable=False) from error
            raise self._failure("could not open the embedded store", error) from error
        if self.endpoint.default_store:
            _announce_default_store(path)
        return client

    def _engine_insert_settings(self) -> dict[str, object]:
        """Insert settings for this kind of store beyond the schema's (see _EMBEDDED_DEFERRED_INDEXES)."""
        if self.endpoint.kind != "embedded":
            return {}
        try:
            known = self._client.query(_query("store_known_settings.sql"),
                                       parameters={"names": [_DEFER_INDEXES_SETTING]}).result_rows
        except Exception as error:
            raise self._failure("could not read the settings of", error) from error
        if not known:
            return {}  # an older engine: it builds every index at insert, as before
        return {_DEFER_INDEXES_SETTING: ",".join(_EMBEDDED_DEFERRED_INDEXES)}

    # --- inserting --------------------------------------------------------------------------

    def insert(self, native: bytes, token: str, columns: Sequence[str]) -> None:
        """Insert Native bytes (one block or several in a row); the token makes a repeat of the same insert a no-op."""
        self.connect()
        settings = {**self._insert_settings, "insert_deduplication_token": token}
        compression = None
        body = native
        if self.endpoint.kind == "server" and self.config.compress != "none":
            body = _compress(native, self.config.compress)
            compression = self.config.compress
        for attempt in (1, 2):
            try:
                with _quiet_driver():
                    self._client.raw_insert(self.table, columns, body, settings=settings, fmt="Native",
                                            compression=compression)
                return
            except Exception as error:
                if attempt == 2 or not _closed_by_the_driver(error):
                    raise self._failure("could not insert into", error) from error
            # clickhouse-connect closes an embedded client from a weakref finalizer at interpreter
            # exit, and that finalizer's exit hook (registered when the store was opened) runs
            # before the SDK's, which exports the last spans. Nothing was sent (the driver
            # refused first): open the store again and insert.
            self.close()
            self.connect()

    def close(self) -> None:
        """Close the client (the embedded store's lock is released for other processes)."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    # --- errors -----------------------------------------------------------------------------

    def _failure(self, doing: str, error: Exception) -> StoreError:
        """The one line for ``error`` and whether a retry can help; drops the client when needed."""
        code = getattr(error, "code", None)
        where = self.where
        text = _transport_reason(error, self.config.timeout) or _first_line(str(error))
        if code in _AUTHENTICATION_CODES:
            message = (
                f"ClickHouse at {self.endpoint.url} refused the credentials of user "
                f"{(self.config.username or self.endpoint.username or 'default')!r} (code {code}): "
                f"check {env.OTEL_EXPORTER_CLICKHOUSE_USERNAME} and {env.OTEL_EXPORTER_CLICKHOUSE_PASSWORD}"
            )
        elif code in _ACCESS_CODES:
            user = self.config.username or self.endpoint.username or "default"
            message = f"{doing} {where}: ClickHouse denied user {user!r} the right: {text}"
        elif code in _MISSING_CODES:
            hint = (
                f"set {env.OTEL_EXPORTER_CLICKHOUSE_CREATE_SCHEMA}=true or create it"
                if not self.config.create_schema
                else "it will be created again at the next attempt"
            )
            message = f"{where} does not exist ({hint}): {text}"
        else:
            message = f"{doing} {where}: {text}"
        retryable = _retryable(error, code)
        if not retryable or code in _MISSING_CODES:
            # Start from a fresh connection (and schema step) next time: credentials, rights or
            # tables may have been fixed by then.
            self.close()
            self._schema_ready = not self.config.create_schema
        elif type(error).__name__ == "OperationalError":
            self.close()
        return StoreError(message, retryable=retryable)


@functools.cache
def _query(name: str) -> str:
    return resources.files(__package__).joinpath("queries", name).read_text(encoding="utf-8")


def _compress(data: bytes, method: str) -> bytes:
    """``data`` as the HTTP ``Content-Encoding`` ``method`` wants it (the embedded store takes it plain)."""
    if method == "deflate":
        # HTTP's "deflate" is the zlib format; clickhouse-connect has no writer for it.
        return zlib.compress(data)
    from clickhouse_connect.driver.compression import get_compressor

    compressor = get_compressor(method)
    return bytes(compressor.compress_block(data)) + bytes(compressor.flush() or b"")


def _retryable(error: Exception, code: int | None) -> bool:
    name = type(error).__name__
    if code is not None:
        return code not in _PERMANENT_CODES
    if name == "OperationalError" or isinstance(error, OSError | TimeoutError):
        return True
    status = _http_status(str(error))
    if status is not None:
        return status >= 500 or status in (408, 429)
    return False


def _http_status(text: str) -> int | None:
    marker = "HTTP status "
    position = text.find(marker)
    if position < 0:
        return None
    digits = text[position + len(marker) : position + len(marker) + 3]
    return int(digits) if digits.isdigit() else None


def _transport_reason(error: BaseException, timeout: float) -> str:
    """"connection refused", "no answer within 5 s": the cause under clickhouse-connect's wrapping.

    Its transport errors carry urllib3's whole retry story and the request URL in one line.
    """
    seen = 0
    cause: BaseException | None = error
    while cause is not None and seen < 10:
        name = type(cause).__name__
        if isinstance(cause, TimeoutError) or "Timeout" in name:
            return f"no answer within {timeout:g} s"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (is the server running?)"
        if isinstance(cause, ConnectionResetError) or name in ("ProtocolError", "RemoteDisconnected"):
            return "the server closed the connection"
        if name == "NameResolutionError" or isinstance(cause, socket.gaierror):
            return "unknown host name"
        if name == "SSLError":
            return f"TLS failed: {_first_line(str(cause))}"
        cause = cause.__cause__ or cause.__context__
        seen += 1
    # urllib3 keeps the root cause in the text only ("... Connection refused')").
    text = str(error)
    if "Connection refused" in text:
        return "connection refused (is the server running?)"
    if "timed out" in text:
        return f"no answer within {timeout:g} s"
    return ""


def _closed_by_the_driver(error: Exception) -> bool:
    """The driver refused to use a client closed under us (the store itself is fine)."""
    return type(error).__name__ == "ProgrammingError" and "has been closed" in str(error)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no details"
    return line if len(line) <= 500 else line[:497] + "..."


def _locked_message(path: str) -> str:
    return (
        f"the embedded ClickHouse store {path} is in use by another process (chDB opens a store in one "
        f"process at a time); to share it, run `llmtel serve` and export OTLP to it "
        f"(OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf "
        f"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318), or give each process its own store "
        f"({env.OTEL_EXPORTER_CLICKHOUSE_ENDPOINT}=chdb:///other/path)"
    )


def held_by_another_process(path: str) -> bool:
    """Whether another process holds the chDB store at ``path``.

    ClickHouse locks ``<path>/status`` with ``flock`` for as long as it runs. Probing that lock
    tells "held elsewhere" apart from other failures before chDB is asked (which prints its
    own error to stderr on every try). This process's own engine, if it has the path open,
    holds the lock through a descriptor listed in /proc/self/fd: that is not "another process".
    """
    status = os.path.join(path, "status")
    if not os.path.exists(status):
        return False
    real = os.path.realpath(status)
    with contextlib.suppress(OSError):
        for descriptor in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{descriptor}") == real:
                    return False
    try:
        probe = os.open(status, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(probe, fcntl.LOCK_UN)
        return False
    finally:
        os.close(probe)


class _QuietDriverFilter(logging.Filter):
    """Drops the transport's warnings ("Unexpected Http Driver Exception") raised inside our calls.

    During an outage every attempt would print that line and a traceback; the exporter reports
    the failure itself, once. Only the calling thread is silenced, only while it calls.
    """

    def __init__(self) -> None:
        super().__init__()
        self.active = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.active, "on", False) or record.levelno >= logging.ERROR


_QUIET = _QuietDriverFilter()
for _name in _DRIVER_LOGGERS:
    logging.getLogger(_name).addFilter(_QUIET)


@contextlib.contextmanager
def _quiet_driver() -> Iterator[None]:
    _QUIET.active.on = True
    try:
        yield
    finally:
        _QUIET.active.on = False


def _announce_default_store(path: str) -> None:
    """Say once per process where spans go when no endpoint was configured."""
    global _default_store_announced
    with _announce_lock:
        if _default_store_announced:
            return
        _default_store_announced = True
    _logger.warning(
        "llmtel: storing spans in the embedded ClickHouse store at %s (set %s to use a server)",
        path, env.OTEL_EXPORTER_CLICKHOUSE_ENDPOINT,
    )
