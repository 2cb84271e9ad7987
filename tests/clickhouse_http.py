"""A ClickHouse HTTP endpoint backed by chDB, for testing clients of a ClickHouse server without one.

The endpoint speaks the part of the ClickHouse HTTP interface that ``clickhouse-connect`` uses, so a
client under test builds its requests, compresses its inserts, retries and decodes Native results
exactly as it would against a server. Queries run in an embedded ClickHouse (chDB) that owns a data
directory; the server runs in a subprocess because a process can hold only one chDB path, and the
test process may hold its own store.

Usage::

    import clickhouse_connect
    from clickhouse_http import ChdbHttpEndpoint

    with ChdbHttpEndpoint(tmp_path / "store", username="llmtel", password="secret") as endpoint:
        client = clickhouse_connect.get_client(**endpoint.client_kwargs(), compress="lz4")
        client.command("CREATE TABLE t (n UInt64) ENGINE = MergeTree ORDER BY n")
        client.insert("t", [[1], [2]], column_names=["n"])
        assert endpoint.query("SELECT count() FROM t") == "2\\n"

        endpoint.faults(fail_next=2)          # the next 2 requests answer 500 with a ClickHouse error
        endpoint.faults(status=503, fail_next=1, code=439)
        endpoint.faults(drop_next=1)          # the next request gets no answer: the socket closes
        endpoint.faults(delay_seconds=5)      # every request waits 5 s first (client timeouts)
        endpoint.faults()                     # back to normal
        endpoint.kill()                       # SIGKILL, like a crashed server; the data stays on disk
        endpoint.restart()                    # same path, same port
        endpoint.requests()                   # what the endpoint received, oldest first

As a script (prints ``listening http://127.0.0.1:PORT`` once it accepts connections)::

    python tests/clickhouse_http.py --path DIR --port 8123 [--user U --password P] [--log]

In pytest: ``chdb_http = make_chdb_http_fixture()`` in a conftest gives a ``chdb_http`` fixture.

What the endpoint does, as ClickHouse does it (src/Server/HTTPHandler.cpp):

- The query is the ``query`` URL parameter, a newline, then the request body; for ``INSERT ... FORMAT
  X`` the data starts after the format name and one newline. ``clickhouse-connect`` puts the INSERT
  statement at the start of the (compressed) body, or in ``query=`` when it sends raw or Arrow data.
- Request bodies may be chunked and compressed (``Content-Encoding``: lz4, zstd, gzip, deflate; lz4
  and zstd arrive as one frame per block, all of which are read). Insert data streams into chDB's
  ``send_insert`` without being decoded in Python.
- URL parameters that are not HTTP controls are settings for that one query; ``param_<name>`` are
  values for ``{name:Type}`` parameters; ``database`` (or ``X-ClickHouse-Database``) picks the
  database; ``default_format`` the format of a query without a FORMAT clause (TabSeparated otherwise).
- Results are compressed when the request has ``enable_http_compression=1`` and an
  ``Accept-Encoding`` the endpoint knows. Answers carry ``X-ClickHouse-Query-Id``,
  ``X-ClickHouse-Summary`` (with the real ``written_rows``), ``X-ClickHouse-Timezone`` and, for a
  statement that returns rows, ``X-ClickHouse-Format``.
- Errors answer the engine's text, ``Code: N. DB::Exception: ... (NAME) (version V)``, with
  ``X-ClickHouse-Exception-Code`` and ClickHouse's HTTP status for that code (404 for an unknown
  table, 400 for a syntax error, 403 for failed authentication, 500 for most others).
- Authentication: one user, by Basic auth, ``X-ClickHouse-User``/``X-ClickHouse-Key`` or the
  ``user``/``password`` parameters; a wrong or missing password is error 516 (AUTHENTICATION_FAILED).
- GET runs read-only statements only (ClickHouse sets ``readonly=2`` for GET); ``/ping`` and a bare
  ``GET /`` answer ``Ok.``.

Not emulated: HTTP sessions (a ``SET`` statement lasts for the whole endpoint, not for its
``session_id``), ``client_protocol_version`` (Native results use revision 0, so the client's probe
settles on protocol 0), external data tables, ClickHouse's own ``compress``/``decompress`` block
format, progress headers. Settings are applied with ``SET`` and put back after each query, under
the one lock that serialises every use of the chDB session.

Test controls live under ``/_test/`` (faults, reset, requests, query); they skip faults and
authentication, and only the controller below is meant to call them.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hmac
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.error import HTTPError
from urllib.parse import parse_qsl, urlsplit
from urllib.request import Request, urlopen

import lz4.frame
from backports import zstd

# The protocol pieces the package's read endpoint (llmtel serve) shares with this fixture.
from llmtel.exporter_clickhouse.http_interface import (
    _CONTENT_TYPES,
    _ENGINE_ERROR,
    _RESULT_KEYWORDS,
    _SETTING_NAME,
    _WORD,
    ClickHouseError,
    _form_fields,
    _quote_identifier,
    _quote_string,
)

__all__ = ["READY_PREFIX", "ChdbHttpEndpoint", "ClickHouseError", "main", "make_chdb_http_fixture", "serve"]

READY_PREFIX = "listening "

# URL parameters the HTTP layer consumes; every other parameter is a setting for the query
# (HTTPHandler::processQuery). `param_*` are query parameters.
_HTTP_PARAMETERS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "quota_key",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "close_session",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "role",
        "stacktrace",
    }
)

# ClickHouse's HTTP status for an error code, by error name (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp);
# anything else is 500. Names, not numbers: the engine's errorCodeToName() resolves them.
_STATUS_BY_ERROR_NAME: dict[str, int] = {
    "REQUIRED_PASSWORD": 401,
    **dict.fromkeys(
        ("UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE", "ACCESS_DENIED"), 403
    ),
    **dict.fromkeys(
        (
            "BAD_ARGUMENTS",
            "CANNOT_COMPILE_REGEXP",
            "CANNOT_PARSE_TEXT",
            "CANNOT_PARSE_ESCAPE_SEQUENCE",
            "CANNOT_PARSE_QUOTED_STRING",
            "CANNOT_PARSE_DATE",
            "CANNOT_PARSE_DATETIME",
            "CANNOT_PARSE_NUMBER",
            "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING",
            "CANNOT_PARSE_IPV4",
            "CANNOT_PARSE_IPV6",
            "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
            "CANNOT_PARSE_UUID",
            "DUPLICATE_COLUMN",
            "ILLEGAL_COLUMN",
            "UNKNOWN_ELEMENT_IN_AST",
            "UNKNOWN_TYPE_OF_AST_NODE",
            "THERE_IS_NO_COLUMN",
            "TOO_DEEP_AST",
            "TOO_BIG_AST",
            "UNEXPECTED_AST_STRUCTURE",
            "SYNTAX_ERROR",
            "INCORRECT_DATA",
            "TYPE_MISMATCH",
            "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
        ),
        400,
    ),
    **dict.fromkeys(
        (
            "UNKNOWN_TABLE",
            "UNKNOWN_FUNCTION",
            "UNKNOWN_IDENTIFIER",
            "UNKNOWN_TYPE",
            "UNKNOWN_STORAGE",
            "UNKNOWN_DATABASE",
            "UNKNOWN_SETTING",
            "UNKNOWN_DIRECTION_OF_SORTING",
            "UNKNOWN_AGGREGATE_FUNCTION",
            "UNKNOWN_FORMAT",
            "UNKNOWN_DATABASE_ENGINE",
            "UNKNOWN_TYPE_OF_QUERY",
            "UNKNOWN_ROLE",
        ),
        404,
    ),
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    "SOCKET_TIMEOUT": 503,
    "CANNOT_OPEN_FILE": 503,
    "HTTP_LENGTH_REQUIRED": 411,
    "TIMEOUT_EXCEEDED": 408,
    "CANNOT_SCHEDULE_TASK": 503,
    "UNSUPPORTED_MEDIA_TYPE": 415,
}

# The error an injected failure reports for its HTTP status, unless the test names a code.
_FAULT_ERROR_BY_STATUS = {
    400: "SYNTAX_ERROR",
    401: "REQUIRED_PASSWORD",
    403: "AUTHENTICATION_FAILED",
    404: "UNKNOWN_TABLE",
    408: "TIMEOUT_EXCEEDED",
    429: "TOO_MANY_SIMULTANEOUS_QUERIES",
    500: "TOO_MANY_PARTS",
    503: "CANNOT_SCHEDULE_TASK",
}

# Statements that readonly (and so GET) refuses; anything else goes to the engine, which also reports
# syntax errors before ClickHouse would check readonly.
_WRITE_KEYWORDS = frozenset(
    {
        "INSERT",
        "CREATE",
        "DROP",
        "ALTER",
        "TRUNCATE",
        "RENAME",
        "EXCHANGE",
        "OPTIMIZE",
        "DELETE",
        "UPDATE",
        "SYSTEM",
        "KILL",
        "ATTACH",
        "DETACH",
        "UNDROP",
        "GRANT",
        "REVOKE",
        "BACKUP",
        "RESTORE",
        "MOVE",
    }
)


# Preference order when a client accepts several (ClickHouse prefers zstd, then br, then lz4).
_RESPONSE_ENCODINGS: dict[str, Callable[[bytes], bytes]] = {
    "zstd": zstd.compress,
    "lz4": lz4.frame.compress,
    "gzip": lambda data: zlib.compress(data, wbits=31),
    "deflate": zlib.compress,
}

_REQUEST_DECOMPRESSORS: dict[str, Callable[[], Any]] = {
    "lz4": lz4.frame.LZ4FrameDecompressor,
    "zstd": zstd.ZstdDecompressor,
    "gzip": lambda: zlib.decompressobj(wbits=31),
    "x-gzip": lambda: zlib.decompressobj(wbits=31),
    "deflate": zlib.decompressobj,
}

_READ_SIZE = 1 << 20


# -- SQL text: just enough lexing to find statement kinds and the start of inline insert data ----------


class _NeedMore(Exception):
    """The text ends inside a quoted string or comment."""


def _words(text: str) -> Iterator[tuple[str, int, int, int]]:
    """Bare words of SQL text as (upper-cased word, start, end, parenthesis depth); strings,
    quoted identifiers and comments are skipped. Raises _NeedMore if the text stops inside one."""
    i, depth, size = 0, 0, len(text)
    while i < size:
        char = text[i]
        if char in "'\"`":
            i += 1
            while True:
                if i >= size:
                    raise _NeedMore
                if text[i] == "\\":
                    i += 2
                elif text[i] == char:
                    # A doubled quote is an escaped quote, not the end.
                    if i + 1 < size and text[i + 1] == char:
                        i += 2
                    elif i + 1 >= size:
                        raise _NeedMore
                    else:
                        i += 1
                        break
                else:
                    i += 1
        elif text.startswith(("--", "# ", "#!"), i):
            end = text.find("\n", i)
            if end < 0:
                raise _NeedMore
            i = end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise _NeedMore
            i = end + 2
        elif char == "(":
            depth += 1
            i += 1
        elif char == ")":
            depth -= 1
            i += 1
        elif char.isalpha() or char == "_":
            match = _WORD.match(text, i)
            assert match is not None
            yield match.group().upper(), i, match.end(), depth
            i = match.end()
        else:
            i += 1


def _first_keyword(sql: str) -> str:
    try:
        return next(_words(sql), ("", 0, 0, 0))[0]
    except _NeedMore:
        return ""


def _format_clause(sql: str, formats: Mapping[str, str]) -> str | None:
    """The format named by the last top-level ``FORMAT <name>`` clause, if any (``formats`` maps
    lower-case names to the engine's spelling, which tells the clause from a column named format)."""
    found = None
    previous = ""
    try:
        for word, _, _, depth in _words(sql):
            if previous == "FORMAT" and depth == 0 and word.lower() in formats:
                found = formats[word.lower()]
            previous = word if depth == 0 else ""
    except _NeedMore:
        pass
    return found


@dataclass(frozen=True)
class _InlineInsert:
    statement: str  # "INSERT INTO t (cols) [SETTINGS ...]" without the FORMAT clause
    format: str
    data_offset: int  # where the data starts in the request text


def _inline_insert(head: bytes, formats: Mapping[str, str], at_end: bool) -> _InlineInsert | None | bool:
    """Split ``INSERT ... FORMAT X<newline>data``: an _InlineInsert, None if the request is not an
    insert with inline data (run it as a query), or False if the head is too short to tell."""
    # latin-1 maps bytes to characters one to one, so offsets stay byte offsets.
    text = head.decode("latin-1")
    words = _words(text)
    try:
        first = next(words, None)
        if first is None:
            return None if at_end else False
        if first[0] != "INSERT":
            return None if at_end or first[2] < len(text) else False
        previous: tuple[str, int, int, int] | None = None
        for word in words:
            name, start, end, depth = word
            if depth:
                continue
            if name in ("VALUES", "SELECT", "WITH", "INFILE"):
                return None
            if previous is not None and previous[0] == "FORMAT" and name.lower() in formats:
                if end == len(text) and not at_end:
                    return False
                # "Data starts after the first newline, if there is one, or after all the whitespace
                # characters, otherwise" (ParserInsertQuery).
                data = end
                while data < len(text) and text[data] in " \t\f":
                    data += 1
                if data == len(text) and not at_end:
                    return False
                if text.startswith("\r", data):
                    data += 1
                if text.startswith("\n", data):
                    data += 1
                statement = text[: previous[1]].strip().encode("latin-1").decode("utf-8", "replace")
                return _InlineInsert(statement, formats[name.lower()], data)
            previous = word
    except _NeedMore:
        pass
    return None if at_end else False


# -- request bodies ----------------------------------------------------------------------------------


class _Decompressed:
    """Decompresses a body of one or more concatenated frames (lz4 and zstd: one per insert block;
    a decompressor stops at the end of its first frame, which would silently drop the rest)."""

    def __init__(self, chunks: Iterable[bytes], encoding: str, error: Callable[[str, str], ClickHouseError]) -> None:
        self._chunks = chunks
        self._encoding = encoding
        self._error = error
        self.frames = 0

    def __iter__(self) -> Iterator[bytes]:
        new_decompressor = _REQUEST_DECOMPRESSORS.get(self._encoding)
        if new_decompressor is None:
            raise self._error("BAD_ARGUMENTS", f"Unknown HTTP Content-Encoding: {self._encoding}")
        decompressor, pending = new_decompressor(), False
        try:
            for chunk in self._chunks:
                while chunk:
                    out = decompressor.decompress(chunk)
                    pending = True
                    if out:
                        yield out
                    if not decompressor.eof:
                        break
                    self.frames += 1
                    chunk, decompressor, pending = decompressor.unused_data, new_decompressor(), False
        except (RuntimeError, zlib.error, zstd.ZstdError) as exc:
            raise self._error("CANNOT_DECOMPRESS", f"Cannot decompress the {self._encoding} body: {exc}") from None
        if pending:
            raise self._error("CANNOT_DECOMPRESS", f"The {self._encoding} body ends inside a frame")


# -- the engine ----------------------------------------------------------------------------------------


class _Engine:
    """One chDB session on the store path, used by one request at a time."""

    def __init__(self, path: Path) -> None:
        from chdb import session  # imported here: the controller side never needs the engine

        self._session = session.Session(str(path))
        self._lock = threading.Lock()
        rows = self._rows("SELECT version(), timezone()")
        self.version, self.timezone = rows[0]
        self._names: dict[int, str] = dict(
            self._rows("SELECT number, errorCodeToName(number) FROM numbers(2000) WHERE errorCodeToName(number) != ''")
        )
        self._codes = {name: code for code, name in self._names.items()}
        self.input_formats: dict[str, str] = {}
        self.output_formats: dict[str, str] = {}
        for name, is_input, is_output in self._rows("SELECT name, is_input, is_output FROM system.formats"):
            if is_input:
                self.input_formats[name.lower()] = name
            if is_output:
                self.output_formats[name.lower()] = name
        # What a setting goes back to after a query that changed it: the session's own start value
        # (chDB changes a few at start) or the engine default.
        self._settings: dict[str, str] = {}
        self.setting_values: dict[str, str] = {}
        for name, value, changed in self._rows("SELECT name, value, changed FROM system.settings"):
            self._settings[name] = _quote_string(value) if changed else "DEFAULT"
            self.setting_values[name] = value

    def _rows(self, sql: str) -> list[list[Any]]:
        text = self._session.query(sql, "JSONCompactEachRow").bytes().decode()
        return [json.loads(line) for line in text.splitlines()]

    def error(self, name: str, message: str, code: int | None = None) -> ClickHouseError:
        """An error of the shim's own, worded as the engine words its errors."""
        if code is None:
            code = self._codes.get(name, 1002)
        return ClickHouseError(code, f"Code: {code}. DB::Exception: {message}. ({name})")

    def error_name(self, code: int) -> str:
        return self._names.get(code, "")

    def _engine_error(self, exc: Exception) -> ClickHouseError:
        text = str(exc)
        match = _ENGINE_ERROR.search(text)
        if match is None:
            return self.error("UNKNOWN_EXCEPTION", text)
        return ClickHouseError(int(match.group(1)), text[match.start() :].strip())

    @contextlib.contextmanager
    def _query_context(self, settings: Mapping[str, str], database: str) -> Iterator[None]:
        """Switch to the request's database and settings (the lock is held), and put the settings back."""
        for name in settings:
            if not _SETTING_NAME.fullmatch(name) or name not in self._settings:
                raise self.error("UNKNOWN_SETTING", f"Unknown setting '{name}'")
        # Every time: a client's own USE statement may have moved the session since the last request.
        self._session.query(f"USE {_quote_identifier(database)}", "TabSeparated")
        if not settings:
            yield
            return
        try:
            self._session.query("SET " + ", ".join(f"{k} = {_quote_string(v)}" for k, v in settings.items()))
            yield
        finally:
            self._session.query("SET " + ", ".join(f"{k} = {self._settings[k]}" for k in settings))

    def query(
        self, sql: str, fmt: str, params: Mapping[str, str], settings: Mapping[str, str], database: str
    ) -> tuple[bytes, dict[str, str]]:
        started = time.perf_counter_ns()
        try:
            with self._lock, self._query_context(settings, database):
                result = self._session.query(sql, fmt, params=dict(params))
        except ClickHouseError:
            raise
        except Exception as exc:
            raise self._engine_error(exc) from None
        out = result.bytes() or b""
        summary = {
            "read_rows": str(result.rows_read()),
            "read_bytes": str(result.bytes_read()),
            "written_rows": str(result.rows_written()),
            "written_bytes": str(result.bytes_written()),
            "total_rows_to_read": "0",
            "result_bytes": str(len(out)),
            "elapsed_ns": str(time.perf_counter_ns() - started),
        }
        return out, summary

    def insert(
        self, statement: str, fmt: str, data: Iterable[bytes], settings: Mapping[str, str], database: str
    ) -> dict[str, str]:
        """Stream ``data`` (in ``fmt``) into ``statement``; the engine parses it, Python never does."""
        started = time.perf_counter_ns()
        try:
            with self._lock, self._query_context(settings, database):
                inserter = self._session.send_insert(statement, fmt)
                try:
                    for chunk in data:
                        if chunk:
                            inserter.append(chunk)
                    result = inserter.finish()
                finally:
                    # No-op after finish(); otherwise the engine drops the partial insert. A failing
                    # cancel must not hide the error that got us here.
                    with contextlib.suppress(Exception):
                        inserter.cancel()
        except (ClickHouseError, ConnectionError, TimeoutError):
            raise
        except Exception as exc:
            raise self._engine_error(exc) from None
        rows, size = str(result.rows_written), str(result.bytes_written)
        return {
            "read_rows": "0",
            "read_bytes": "0",
            "written_rows": rows,
            "written_bytes": size,
            "total_rows_to_read": "0",
            "result_rows": rows,
            "result_bytes": size,
            "elapsed_ns": str(time.perf_counter_ns() - started),
        }

    def close(self) -> None:
        with self._lock:
            self._session.close()


# -- faults and the request log -------------------------------------------------------------------------


@dataclass
class _Faults:
    fail_next: int = 0
    status: int = 500
    code: int | None = None
    delay_seconds: float = 0.0
    drop_next: int = 0


@dataclass
class _Record:
    """One request, as ``ChdbHttpEndpoint.requests()`` reports it."""

    method: str
    path: str
    statement: str = ""
    settings: dict[str, str] | None = None
    content_type: str = ""
    content_encoding: str = ""
    frames: int = 0
    response_encoding: str = ""
    status: int = 0
    written_rows: int = 0
    fault: str = ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Rebinding the same port right after a kill must not wait for TIME_WAIT.
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], engine: _Engine, user: str, password: str, log: bool) -> None:
        super().__init__(address, _Handler)
        self.engine = engine
        self.user = user
        self.password = password
        self.log = log
        self.state_lock = threading.Lock()
        self.faults = _Faults()
        self.records: deque[_Record] = deque(maxlen=2000)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as clickhouse-connect's connection pool expects
    server_version = "chdb-http"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    # -- body -----------------------------------------------------------------------------------------

    def _raw_body(self) -> Iterator[bytes]:
        """The request body as it arrives (chunked transfer decoded); marks itself consumed at the end."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline(65537).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                remaining = size
                while remaining:
                    piece = self.rfile.read(min(remaining, _READ_SIZE))
                    if not piece:
                        raise ConnectionError("the client closed the connection inside a chunk")
                    remaining -= len(piece)
                    yield piece
                self.rfile.readline(65537)
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                piece = self.rfile.read(min(remaining, _READ_SIZE))
                if not piece:
                    raise ConnectionError("the client closed the connection inside the body")
                remaining -= len(piece)
                yield piece
        self._body_read = True

    def _drain(self) -> None:
        """Read what is left of the request body, so the connection can serve the next request."""
        with contextlib.suppress(ConnectionError, TimeoutError, ValueError):
            for _ in self._body:
                pass

    # -- answers --------------------------------------------------------------------------------------

    def _answer(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self._record.status = status
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if not self._body_read:
            # Part of the request body is still on the socket: this connection cannot be reused.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _answer_error(self, error: ClickHouseError, query_id: str = "", status: int | None = None) -> None:
        engine = self.server.engine
        self._drain()
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(error.code),
            "X-ClickHouse-Server-Display-Name": "chdb-http",
        }
        if query_id:
            headers["X-ClickHouse-Query-Id"] = query_id
        if status is None:
            status = _STATUS_BY_ERROR_NAME.get(engine.error_name(error.code), 500)
        self._answer(status, f"{error.text} (version {engine.version})\n".encode(), headers)

    # -- requests -------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        self._body_read = False
        self._body = self._raw_body()
        self._record = _Record(self.command, url.path)
        try:
            if url.path.startswith("/_test/"):
                self._control(url.path)
                return
            with self.server.state_lock:
                self.server.records.append(self._record)
            if self._injected_fault():
                return
            if url.path in ("/ping", "/replicas_status") or (
                url.path == "/" and self.command != "POST" and "query" not in params
            ):
                self._drain()
                self._answer(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
                return
            self._run(params)
        except (ConnectionError, TimeoutError):
            # The client went away (for instance after its own timeout): nothing left to answer.
            self.close_connection = True
        except Exception as exc:
            # A bug of the endpoint: answer it like a server would, rather than drop the connection.
            self.log_error("%s", traceback.format_exc())
            self._answer_error(self.server.engine.error("UNKNOWN_EXCEPTION", f"chdb-http: {exc!r}"))

    def _injected_fault(self) -> bool:
        with self.server.state_lock:
            faults = self.server.faults
            delay = faults.delay_seconds
            action = ""
            if faults.drop_next > 0:
                faults.drop_next -= 1
                action = "drop"
            elif faults.fail_next > 0:
                faults.fail_next -= 1
                action = "fail"
            status, code, left = faults.status, faults.code, faults.fail_next
        if delay:
            self._record.fault = f"delay {delay:g}s"
            time.sleep(delay)
        if not action:
            return False
        self._record.fault = action
        self._drain()
        if action == "drop":
            # No status line at all: the client sees the connection close, as when a server dies.
            self.close_connection = True
            return True
        if code == 0:
            # Something in front of ClickHouse (a proxy, a load balancer): no ClickHouse headers.
            self._answer(status, f"{status} injected by the test endpoint\n".encode(), {"Content-Type": "text/plain"})
            return True
        engine = self.server.engine
        name = _FAULT_ERROR_BY_STATUS.get(status, "UNKNOWN_EXCEPTION") if code is None else engine.error_name(code)
        message = f"Injected by the test endpoint ({left} more to come)"
        self._answer_error(engine.error(name or "UNKNOWN_EXCEPTION", message, code), status=status)
        return True

    def _authenticate(self, params: Mapping[str, str]) -> None:
        """Credentials the way ClickHouse takes them (src/Server/HTTP/authenticateUserByHTTP.cpp)."""
        engine = self.server.engine
        header_user = self.headers.get("X-ClickHouse-User", "")
        header_key = self.headers.get("X-ClickHouse-Key", "")
        authorization = self.headers.get("Authorization")
        in_params = "user" in params or "password" in params
        methods = [
            name
            for name, used in (
                ("X-ClickHouse HTTP headers", bool(header_user or header_key)),
                ("Authorization HTTP header", authorization is not None),
                ("authentication via parameters", in_params),
            )
            if used
        ]
        if len(methods) > 1:
            raise engine.error(
                "AUTHENTICATION_FAILED",
                f"Invalid authentication: it is not allowed to use {methods[0]} and {methods[1]} simultaneously",
            )
        if header_user or header_key:
            user, password = header_user, header_key
        elif authorization is not None:
            scheme, _, credentials = authorization.partition(" ")
            if scheme.lower() != "basic":
                message = f"Invalid authentication: '{scheme}' HTTP Authorization scheme is not supported"
                raise engine.error("AUTHENTICATION_FAILED", message)
            try:
                user, _, password = base64.b64decode(credentials.strip()).decode().partition(":")
            except ValueError:
                user, password = "", ""
        else:
            user, password = params.get("user", "default"), params.get("password", "")
        if not user:
            raise engine.error("AUTHENTICATION_FAILED", f"Got an empty user name from {methods[0]}")
        if user != self.server.user or not hmac.compare_digest(password.encode(), self.server.password.encode()):
            raise engine.error(
                "AUTHENTICATION_FAILED",
                f"{user}: Authentication failed: password is incorrect, or there is no user with such name",
            )

    def _run(self, params: dict[str, str]) -> None:
        engine = self.server.engine
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            self._authenticate(params)
            if params.get("compress") == "1" or params.get("decompress") == "1":
                raise engine.error("NOT_IMPLEMENTED", "ClickHouse's compress/decompress block format is not emulated")
            content_type = self._record.content_type = self.headers.get("Content-Type", "")
            if content_type.startswith("multipart/form-data"):
                fields, has_files = _form_fields(content_type, b"".join(self._body))
                if has_files:
                    raise engine.error("NOT_IMPLEMENTED", "External data tables are not emulated")
                params.update(fields)
            settings = {k: v for k, v in params.items() if k not in _HTTP_PARAMETERS and not k.startswith("param_")}
            bind = {k[len("param_") :]: v for k, v in params.items() if k.startswith("param_")}
            database = params.get("database") or self.headers.get("X-ClickHouse-Database") or "default"
            readonly = self.command != "POST" or settings.pop("readonly", "0") != "0"
            encoding = self.headers.get("Content-Encoding", "").strip().lower()
            self._record.settings = settings
            self._record.content_encoding = encoding
            body: Iterable[bytes] = self._body
            decompressed = None
            if encoding and encoding != "identity":
                body = decompressed = _Decompressed(self._body, encoding, engine.error)
            stream = iter(body)
            head = params["query"].encode() + b"\n" if params.get("query") else b""
            split: _InlineInsert | None | bool = False
            while split is False:
                chunk = next(stream, None)
                if chunk is not None:
                    head += chunk
                split = _inline_insert(head, engine.input_formats, at_end=chunk is None)
            if split is None:
                head += b"".join(stream)
                self._record.statement = head[:300].decode("utf-8", "replace")
                answer = self._execute(head.decode("utf-8", "replace"), params, bind, settings, database, readonly)
            else:
                assert isinstance(split, _InlineInsert)
                self._record.statement = split.statement[:300]
                if readonly:
                    raise self._readonly_error()
                data = _chain(head[split.data_offset :], stream)
                summary = engine.insert(split.statement, split.format, data, settings, database)
                self._record.written_rows = int(summary["written_rows"])
                answer = (b"", summary, None)
            if decompressed is not None:
                self._record.frames = decompressed.frames
            out, summary, result_format = answer
            self._answer_result(out, summary, result_format, params, query_id)
        except ClickHouseError as error:
            self._answer_error(error, query_id)

    def _readonly_error(self) -> ClickHouseError:
        return self.server.engine.error(
            "READONLY",
            f"{self.server.user}: Cannot execute query in readonly mode. For queries over HTTP, method GET implies "
            "readonly. You should use method POST for modifying queries",
        )

    def _execute(
        self,
        sql: str,
        params: Mapping[str, str],
        bind: Mapping[str, str],
        settings: Mapping[str, str],
        database: str,
        readonly: bool,
    ) -> tuple[bytes, dict[str, str], str | None]:
        engine = self.server.engine
        if not sql.strip():
            raise engine.error("SYNTAX_ERROR", "Empty query")
        keyword = _first_keyword(sql)
        if readonly and keyword in _WRITE_KEYWORDS:
            raise self._readonly_error()
        clause = _format_clause(sql, engine.output_formats)
        fmt = clause or engine.output_formats.get(params.get("default_format", "").lower(), "TabSeparated")
        out, summary = engine.query(sql, fmt, bind, settings, database)
        self._record.written_rows = int(summary["written_rows"])
        returns_rows = bool(out) or clause is not None or keyword in _RESULT_KEYWORDS
        return out, summary, fmt if returns_rows else None

    def _answer_result(
        self,
        out: bytes,
        summary: Mapping[str, str],
        result_format: str | None,
        params: Mapping[str, str],
        query_id: str,
    ) -> None:
        headers = {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.server.engine.timezone,
            "X-ClickHouse-Summary": json.dumps(summary, separators=(",", ":")),
            "X-ClickHouse-Server-Display-Name": "chdb-http",
        }
        if result_format is not None:
            headers["X-ClickHouse-Format"] = result_format
            headers["Content-Type"] = _CONTENT_TYPES.get(result_format, "application/octet-stream")
        else:
            headers["Content-Type"] = "text/plain; charset=UTF-8"
        # The engine's default applies when the client does not send the setting (1 since ClickHouse 25.x).
        engine_default = self.server.engine.setting_values.get("enable_http_compression", "0")
        if out and params.get("enable_http_compression", engine_default) == "1":
            accept = self.headers.get("Accept-Encoding", "")
            accepted = {token.split(";")[0].strip().lower() for token in accept.split(",")}
            for encoding, compress in _RESPONSE_ENCODINGS.items():
                if encoding in accepted:
                    out = compress(out)
                    headers["Content-Encoding"] = self._record.response_encoding = encoding
                    break
        self._answer(200, out, headers)

    # -- test controls --------------------------------------------------------------------------------

    def _control(self, path: str) -> None:
        body = b"".join(self._body)
        server = self.server
        if path == "/_test/faults" and self.command == "POST":
            faults = _Faults(**json.loads(body or b"{}"))
            with server.state_lock:
                server.faults = faults
            self._answer(200, json.dumps(asdict(faults)).encode(), {"Content-Type": "application/json"})
        elif path == "/_test/reset" and self.command == "POST":
            with server.state_lock:
                server.faults = _Faults()
                server.records.clear()
            self._answer(200, b"{}", {"Content-Type": "application/json"})
        elif path == "/_test/requests":
            with server.state_lock:
                records = [asdict(record) for record in server.records]
            self._answer(200, json.dumps(records).encode(), {"Content-Type": "application/json"})
        elif path == "/_test/query" and self.command == "POST":
            try:
                out, _ = server.engine.query(body.decode(), "TabSeparated", {}, {}, "default")
                self._answer(200, out, {"Content-Type": "text/tab-separated-values; charset=UTF-8"})
            except ClickHouseError as error:
                self._answer_error(error)
        else:
            self._answer(404, b"Unknown test control\n", {"Content-Type": "text/plain"})


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


# -- the server process ---------------------------------------------------------------------------------


def serve(
    path: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    user: str = "default",
    password: str = "",
    log: bool = False,
    exit_on_stdin_eof: bool = False,
) -> None:
    """Serve ``path`` until SIGTERM/SIGINT (or the end of stdin, when asked); prints the ready line."""
    path.mkdir(parents=True, exist_ok=True)
    engine = _Engine(path)
    server = _Server((host, port), engine, user, password, log)

    def stop(*_: object) -> None:
        # shutdown() waits for serve_forever() to return, so it cannot run on the thread serving.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if exit_on_stdin_eof:
        # The parent (a test run) holds our stdin: when it dies without stopping us, stdin ends.
        threading.Thread(target=_stop_at_end_of_stdin, args=(stop,), daemon=True).start()
    bound_host, bound_port = server.server_address[:2]
    print(f"{READY_PREFIX}http://{bound_host}:{bound_port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        engine.close()


def _stop_at_end_of_stdin(stop: Callable[[], None]) -> None:
    # os.read, not sys.stdin: a daemon thread blocked inside a buffered reader aborts interpreter shutdown.
    while os.read(0, 4096):
        pass
    stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A ClickHouse HTTP endpoint backed by chDB (a test fixture).")
    parser.add_argument("--path", type=Path, required=True, help="chDB data directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--user", default="default")
    parser.add_argument("--password", default="")
    parser.add_argument("--log", action="store_true", help="log every request to stderr")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="stop when stdin closes")
    args = parser.parse_args(argv)
    serve(
        args.path,
        host=args.host,
        port=args.port,
        user=args.user,
        password=args.password,
        log=args.log,
        exit_on_stdin_eof=args.exit_on_stdin_eof,
    )


# -- the controller, for tests ----------------------------------------------------------------------------


class ChdbHttpEndpoint:
    """Runs the endpoint in a subprocess on ``path`` and drives it for tests.

    ``url`` (``http://127.0.0.1:PORT``) and ``port`` are fixed by the first ``start()`` and kept
    across ``restart()``; ``client_kwargs()`` gives ``clickhouse_connect.get_client`` its host, port
    and credentials. The store survives ``stop()``, ``kill()`` and ``restart()``.
    """

    def __init__(self, path: Path, *, username: str = "default", password: str = "", port: int = 0) -> None:
        self.path = Path(path)
        self.username = username
        self.password = password
        self.host = "127.0.0.1"
        self.port = port
        self._process: subprocess.Popen[str] | None = None
        self._output: deque[str] = deque(maxlen=200)

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the endpoint has not been started")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client_kwargs(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "username": self.username, "password": self.password}

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self, timeout: float = 30) -> None:
        """Spawn the server and wait until it accepts connections."""
        if self.running:
            raise RuntimeError("the endpoint is already running")
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            f"--path={self.path}",
            f"--host={self.host}",
            f"--port={self.port}",
            f"--user={self.username}",
            f"--password={self.password}",
            "--exit-on-stdin-eof",
        ]
        self._output.clear()
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._process = process
        outcome: queue.Queue[bool] = queue.Queue()
        threading.Thread(target=self._read_output, args=(process, outcome), daemon=True).start()
        try:
            ready = outcome.get(timeout=timeout)
        except queue.Empty:
            ready = False
        if not ready:
            self.kill()
            output = "\n".join(self._output)
            raise RuntimeError(f"the chDB HTTP endpoint on {self.path} did not start:\n{output}")

    def _read_output(self, process: subprocess.Popen[str], outcome: queue.Queue[bool]) -> None:
        # Keeps reading after the ready line so the server never blocks on a full pipe.
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            self._output.append(line)
            if line.startswith(READY_PREFIX):
                self.port = urlsplit(line[len(READY_PREFIX) :]).port or self.port
                outcome.put(True)
        outcome.put(False)

    def stop(self, timeout: float = 10) -> None:
        """Graceful: the server finishes, closes the chDB session and exits. No-op if not running."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close(process)

    def kill(self) -> None:
        """SIGKILL, like a crashed server. No-op if not running."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        self._close(process)

    def _close(self, process: subprocess.Popen[str]) -> None:
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._process = None

    def restart(self, timeout: float = 30) -> None:
        """Stop (gracefully, if still running) and start again on the same path and port."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> ChdbHttpEndpoint:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- controls --------------------------------------------------------------------------------------

    def faults(
        self,
        *,
        fail_next: int = 0,
        status: int = 500,
        delay_seconds: float = 0.0,
        drop_next: int = 0,
        code: int | None = None,
    ) -> None:
        """Replace the injected faults (no arguments: none). Each request to the ClickHouse interface
        (``/ping`` included) first waits ``delay_seconds``; then, while ``drop_next`` lasts, the
        connection closes without an answer; else, while ``fail_next`` lasts, it answers ``status``
        with a ClickHouse error: ``code`` (default: one typical of the status, e.g. 500 ->
        TOO_MANY_PARTS, 503 -> CANNOT_SCHEDULE_TASK, 429 -> TOO_MANY_SIMULTANEOUS_QUERIES), or, with
        ``code=0``, a bare HTTP error without ClickHouse headers, as from a proxy."""
        self._control(
            "/_test/faults",
            json.dumps(
                {
                    "fail_next": fail_next,
                    "status": status,
                    "code": code,
                    "delay_seconds": delay_seconds,
                    "drop_next": drop_next,
                }
            ).encode(),
        )

    def reset(self) -> None:
        """No faults, empty request log."""
        self._control("/_test/reset", b"")

    def requests(self) -> list[dict[str, Any]]:
        """The recent requests to the ClickHouse interface, oldest first: ``method``, ``path``,
        ``statement`` (the SQL, without insert data), ``settings``, ``content_type``,
        ``content_encoding``, ``frames`` (compressed frames in the body), ``response_encoding``,
        ``status``, ``written_rows``, ``fault``."""
        return list(json.loads(self._control("/_test/requests", None)))

    def query(self, sql: str) -> str:
        """Run ``sql`` in the default database, skipping faults and authentication; TabSeparated text."""
        return self._control("/_test/query", sql.encode()).decode()

    def _control(self, path: str, body: bytes | None) -> bytes:
        request = Request(self.url + path, data=body, method="GET" if body is None else "POST")
        try:
            with urlopen(request, timeout=60) as response:
                return bytes(response.read())
        except HTTPError as exc:
            raise RuntimeError(exc.read().decode("utf-8", "replace").strip()) from None


def make_chdb_http_fixture(
    *, name: str = "chdb_http", scope: str = "session", username: str = "default", password: str = ""
) -> Any:
    """A pytest fixture that yields a started ``ChdbHttpEndpoint`` on a fresh temporary store.

    In a conftest: ``chdb_http = make_chdb_http_fixture()``. A fixture wider than a test should be
    ``reset()`` by the tests that inject faults.
    """
    import pytest  # here, so the server process does not pay for importing pytest

    @pytest.fixture(scope=scope, name=name)
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbHttpEndpoint]:
        with ChdbHttpEndpoint(tmp_path_factory.mktemp(name), username=username, password=password) as endpoint:
            yield endpoint

    return fixture


if __name__ == "__main__":
    main()
