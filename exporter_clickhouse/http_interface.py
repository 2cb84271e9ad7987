"""The ClickHouse HTTP interface, the part clickhouse-connect and Grafana use, over the embedded store.

``ClickHouseHttpInterface(path, allow_writes=False)`` opens its own chDB handle on the store (chDB
gives any number of handles to the one engine a process hosts) and answers one request at a
time through ``answer(method, params, headers, body)``; ``llmtel serve`` does the HTTP around it
(connections, authentication, body size). What it does, as ClickHouse does it
(src/Server/HTTPHandler.cpp):

- The query is the ``query`` URL parameter, a newline, then the request body (or the fields of a
  multipart form, as clickhouse-connect sends long queries); ``INSERT ... FORMAT X`` takes its data
  from after the format name and one newline.
- The body may be compressed (``Content-Encoding`` lz4, zstd, gzip, deflate; lz4 and zstd come as
  one frame per block, all of which are read). Results are compressed when the request has
  ``enable_http_compression=1`` and an ``Accept-Encoding`` known here.
- URL parameters that are not HTTP controls are settings for that one query; ``param_<name>`` are
  values for ``{name:Type}`` parameters; ``database`` (or ``X-ClickHouse-Database``) picks the
  database; ``default_format`` the format of a query without a FORMAT clause.
- Answers carry ``X-ClickHouse-Query-Id``, ``X-ClickHouse-Summary``, ``X-ClickHouse-Timezone``,
  ``X-ClickHouse-Format``; errors the engine's ``Code: N. DB::Exception: ...`` text with
  ``X-ClickHouse-Exception-Code`` and ClickHouse's HTTP status for that code.

Read-only unless ``allow_writes``: the handle runs with ClickHouse's ``readonly=2`` setting, set
once when it opens, so the engine itself refuses every statement that writes or changes the
schema (and a client cannot turn it off: readonly cannot be lowered in readonly mode), while
per-query settings such as ``max_result_rows`` still work. readonly still lets a query read
outside the store with the process's rights (``file('/etc/passwd')``, ``url(...)``, ``s3(...)``,
``remote(...)``, chDB's ``python(...)``), so read requests are parsed first (``EXPLAIN AST``)
and refused when they call a table function other than those that only compute or read the
store's own tables (``numbers``, ``values``, ``merge``, ...), or the ``file`` function.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import json
import os
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

__all__ = ["Answer", "ClickHouseError", "ClickHouseHttpInterface"]

# URL parameters the HTTP layer consumes; every other parameter is a setting for the query
# (HTTPHandler::processQuery). ``param_*`` are query parameters.
_HTTP_PARAMETERS = frozenset({
    "query", "database", "default_format", "user", "password", "quota_key", "query_id", "session_id",
    "session_timeout", "session_check", "close_session", "compress", "decompress", "buffer_size",
    "wait_end_of_query", "client_protocol_version", "role", "stacktrace", "enable_http_compression",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms",
})

# ClickHouse's HTTP status for an error, by error name (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp);
# anything else is 500.
_STATUS_BY_ERROR_NAME: dict[str, int] = {
    "REQUIRED_PASSWORD": 401,
    **dict.fromkeys(("UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "ACCESS_DENIED"), 403),
    **dict.fromkeys((
        "BAD_ARGUMENTS", "CANNOT_PARSE_TEXT", "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE",
        "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER", "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
        "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN", "THERE_IS_NO_COLUMN", "TOO_DEEP_AST",
        "TOO_BIG_AST", "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH",
        "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE", "CANNOT_DECOMPRESS",
    ), 400),
    **dict.fromkeys((
        "UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE", "UNKNOWN_STORAGE",
        "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_AGGREGATE_FUNCTION", "UNKNOWN_FORMAT",
    ), 404),
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    "TIMEOUT_EXCEEDED": 408,
}

# Statements that return rows, so the answer names its format even when there are none.
# Table functions that compute rows or read only the store's own tables; every other one (files,
# URLs, object stores, other servers and databases, executables, the process's Python objects,
# directory listings) is refused on a read-only handle. Lower case: names match case-insensitively.
_LOCAL_TABLE_FUNCTIONS = frozenset({
    "numbers", "numbers_mt", "zeros", "zeros_mt", "primes", "generaterandom", "generateseries", "generate_series",
    "values", "sqlstandardvalues", "null", "format", "view", "viewifpermitted", "viewexplain", "merge", "loop",
    "dictionary", "fuzzjson", "fuzzquery", "mergetreeindex", "mergetreeprojection",
})
_AST_FUNCTION = re.compile(r"^\s*Function (\S+)", re.MULTILINE)
_RESULT_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXISTS", "EXPLAIN", "CHECK"})

_CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "JSON": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
}

_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_ENGINE_ERROR = re.compile(r"Code: (\d+)\. ")


def _codecs() -> tuple[dict[str, Callable[[bytes], bytes]], dict[str, Callable[[], Any]]]:
    """(response compressors in ClickHouse's order of preference, request decompressor factories)."""
    compressors: dict[str, Callable[[bytes], bytes]] = {}
    decompressors: dict[str, Callable[[], Any]] = {
        "gzip": lambda: zlib.decompressobj(wbits=31),
        "x-gzip": lambda: zlib.decompressobj(wbits=31),
        "deflate": zlib.decompressobj,
    }
    with contextlib.suppress(ImportError):
        from backports import zstd

        compressors["zstd"] = zstd.compress
        decompressors["zstd"] = zstd.ZstdDecompressor
    with contextlib.suppress(ImportError):
        import lz4.frame

        compressors["lz4"] = lz4.frame.compress
        decompressors["lz4"] = lz4.frame.LZ4FrameDecompressor
    compressors["gzip"] = lambda data: zlib.compress(data, wbits=31)
    compressors["deflate"] = zlib.compress
    return compressors, decompressors


_RESPONSE_ENCODINGS, _REQUEST_DECOMPRESSORS = _codecs()


class ClickHouseError(Exception):
    """An error as ClickHouse reports it: the code and the ``Code: N. DB::Exception: ...`` text."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


# --- SQL text: just enough lexing to find the statement kind, a FORMAT clause, inline insert data ---


def _words(text: str) -> Iterator[tuple[str, int, int, int]]:
    """Bare words of SQL as (upper-cased word, start, end, parenthesis depth); strings, quoted
    identifiers and comments are skipped (an unterminated one ends the text)."""
    i, depth, size = 0, 0, len(text)
    while i < size:
        char = text[i]
        if char in "'\"`":
            i += 1
            while i < size:
                if text[i] == "\\":
                    i += 2
                elif text[i] == char:
                    if i + 1 < size and text[i + 1] == char:  # a doubled quote is an escaped quote
                        i += 2
                    else:
                        i += 1
                        break
                else:
                    i += 1
        elif text.startswith(("--", "# ", "#!"), i):
            end = text.find("\n", i)
            i = size if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = size if end < 0 else end + 2
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
    return next(_words(sql), ("", 0, 0, 0))[0]


def _format_clause(sql: str, formats: Mapping[str, str]) -> str | None:
    """The format of the last top-level ``FORMAT <name>`` clause, if any."""
    found, previous = None, ""
    for word, _, _, depth in _words(sql):
        if previous == "FORMAT" and depth == 0 and word.lower() in formats:
            found = formats[word.lower()]
        previous = word if depth == 0 else ""
    return found


def _inline_insert(text: str, formats: Mapping[str, str]) -> tuple[str, str, int] | None:
    """``INSERT ... FORMAT X<newline>data`` → (statement without FORMAT, format, data offset); else None."""
    words = _words(text)
    first = next(words, None)
    if first is None or first[0] != "INSERT":
        return None
    previous: tuple[str, int, int, int] | None = None
    for name, start, end, depth in words:
        if depth:
            continue
        if name in ("VALUES", "SELECT", "WITH", "INFILE"):
            return None
        if previous is not None and previous[0] == "FORMAT" and name.lower() in formats:
            # "Data starts after the first newline, if there is one, or after all the whitespace
            # characters, otherwise" (ParserInsertQuery).
            data = end
            while data < len(text) and text[data] in " \t\f":
                data += 1
            if text.startswith("\r", data):
                data += 1
            if text.startswith("\n", data):
                data += 1
            return text[: previous[1]].strip(), formats[name.lower()], data
        previous = (name, start, end, depth)
    return None


def _quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _form_fields(content_type: str, body: bytes) -> tuple[dict[str, str], bool]:
    """The text fields of a multipart/form-data body, and whether it also holds files (external data)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    fields: dict[str, str] = {}
    has_files = False
    for part in message.iter_parts():
        if part.get_filename() is not None:
            has_files = True
            continue
        payload = part.get_payload(decode=True) or b""
        fields[str(part.get_param("name", header="content-disposition"))] = payload.decode("utf-8", "replace")
    return fields, has_files


class ClickHouseHttpInterface:
    """ClickHouse HTTP requests answered from the embedded store at ``path``; thread-safe (one query at a time)."""

    def __init__(self, path: str, *, allow_writes: bool = False) -> None:
        import chdb

        self.allow_writes = allow_writes
        # The same spelling clickhouse-connect uses: chDB compares engine paths literally.
        self._handle = chdb.connect(os.path.realpath(path))
        self._lock = threading.Lock()
        self.version, self.timezone = self._rows("SELECT version(), timezone()")[0]
        self._names: dict[int, str] = dict(self._rows(
            "SELECT number, errorCodeToName(number) FROM numbers(2000) WHERE errorCodeToName(number) != ''"
        ))
        self._codes = {name: code for code, name in self._names.items()}
        self.input_formats: dict[str, str] = {}
        self.output_formats: dict[str, str] = {}
        for name, is_input, is_output in self._rows("SELECT name, is_input, is_output FROM system.formats"):
            if is_input:
                self.input_formats[name.lower()] = name
            if is_output:
                self.output_formats[name.lower()] = name
        # What a setting goes back to after a query that changed it.
        self._defaults: dict[str, str] = {}
        for name, value, changed in self._rows("SELECT name, value, changed FROM system.settings"):
            self._defaults[name] = _quote_string(value) if changed else "DEFAULT"
        # Functions a read request may not call: they reach outside the store (see the module doc).
        self._outside_functions = frozenset(
            name.lower() for (name,) in self._rows("SELECT name FROM system.table_functions")
        ) - _LOCAL_TABLE_FUNCTIONS
        if not allow_writes:
            self._handle.query("SET readonly = 2", "TabSeparated")

    def _rows(self, sql: str) -> list[list[Any]]:
        text = self._handle.query(sql, "JSONCompactEachRow").bytes().decode()
        return [json.loads(line) for line in text.splitlines()]

    def close(self) -> None:
        with self._lock:
            self._handle.close()

    # --- errors ---------------------------------------------------------------------------------

    def error(self, name: str, message: str) -> ClickHouseError:
        """An error of our own, worded as the engine words its errors."""
        code = self._codes.get(name, 1002)
        return ClickHouseError(code, f"Code: {code}. DB::Exception: {message}. ({name})")

    def error_answer(self, error: ClickHouseError, query_id: str = "", status: int | None = None) -> Answer:
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(error.code),
            "X-ClickHouse-Server-Display-Name": "llmtel-serve",
        }
        if query_id:
            headers["X-ClickHouse-Query-Id"] = query_id
        if status is None:
            status = _STATUS_BY_ERROR_NAME.get(self._names.get(error.code, ""), 500)
        return Answer(status, headers, f"{error.text} (version {self.version})\n".encode())

    def _engine_error(self, exc: Exception) -> ClickHouseError:
        text = str(exc)
        match = _ENGINE_ERROR.search(text)
        if match is None:
            return self.error("UNKNOWN_EXCEPTION", text)
        return ClickHouseError(int(match.group(1)), text[match.start():].strip())

    # --- requests -------------------------------------------------------------------------------

    def answer(self, method: str, params: dict[str, str], headers: Mapping[str, str], body: bytes) -> Answer:
        """The answer to one request to the ClickHouse interface (authentication already checked)."""
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            return self._answer(method, params, headers, body, query_id)
        except ClickHouseError as error:
            return self.error_answer(error, query_id)

    def _answer(
        self, method: str, params: dict[str, str], headers: Mapping[str, str], body: bytes, query_id: str
    ) -> Answer:
        if params.get("compress") == "1" or params.get("decompress") == "1":
            raise self.error("NOT_IMPLEMENTED", "ClickHouse's compress/decompress block format is not supported")
        encoding = headers.get("Content-Encoding", "").strip().lower()
        if encoding and encoding != "identity":
            body = self._decompress(body, encoding)
        content_type = headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            fields, has_files = _form_fields(content_type, body)
            if has_files:
                raise self.error("NOT_IMPLEMENTED", "External data tables are not supported")
            params.update(fields)
            body = b""
        settings = {k: v for k, v in params.items() if k not in _HTTP_PARAMETERS and not k.startswith("param_")}
        # A client's own readonly setting cannot loosen the store's, and ClickHouse refuses to set it
        # in readonly mode at all; GET is read-only as in ClickHouse (it sets readonly=2 for GET).
        readonly = settings.pop("readonly", "0") != "0" or method != "POST" or not self.allow_writes
        bind = {k[len("param_"):]: v for k, v in params.items() if k.startswith("param_")}
        database = params.get("database") or headers.get("X-ClickHouse-Database") or "default"
        query = params.get("query", "")
        raw = (query.encode() + b"\n" if query else b"") + body
        if not raw.strip():
            raise self.error("SYNTAX_ERROR", "Empty query")
        started = time.perf_counter_ns()
        # latin-1 maps bytes to characters one to one, so offsets in the text are offsets in the bytes.
        split = _inline_insert(raw.decode("latin-1"), self.input_formats)
        if split is not None:
            if readonly:
                raise self._readonly_error()
            statement, fmt, offset = split
            statement = statement.encode("latin-1").decode("utf-8", "replace")
            summary = self._insert(statement, fmt, raw[offset:], settings, database)
            out, result_format = b"", None
        else:
            text = raw.decode("utf-8", "replace")
            keyword = _first_keyword(text)
            clause = _format_clause(text, self.output_formats)
            fmt = clause or self.output_formats.get(params.get("default_format", "").lower(), "TabSeparated")
            out, summary = self._query(text, fmt, bind, settings, database, readonly)
            returns_rows = bool(out) or clause is not None or keyword in _RESULT_KEYWORDS
            result_format = fmt if returns_rows else None
        summary["elapsed_ns"] = str(time.perf_counter_ns() - started)
        return self._result(out, summary, result_format, params, headers, query_id)

    def _decompress(self, body: bytes, encoding: str) -> bytes:
        factory = _REQUEST_DECOMPRESSORS.get(encoding)
        if factory is None:
            raise self.error("BAD_ARGUMENTS", f"Unknown HTTP Content-Encoding: {encoding}")
        out: list[bytes] = []
        try:
            # lz4 and zstd bodies hold one frame per block; a decompressor stops after its first.
            while body:
                decompressor = factory()
                out.append(decompressor.decompress(body))
                if not decompressor.eof:
                    raise self.error("CANNOT_DECOMPRESS", f"The {encoding} body ends inside a frame")
                body = decompressor.unused_data
        except ClickHouseError:
            raise
        except Exception as exc:
            raise self.error("CANNOT_DECOMPRESS", f"Cannot decompress the {encoding} body: {exc}") from None
        return b"".join(out)

    def _readonly_error(self) -> ClickHouseError:
        hint = "start `llmtel serve --allow-writes` to write through it" if not self.allow_writes else (
            "method GET implies readonly; use POST for modifying queries"
        )
        return self.error("READONLY", f"Cannot execute query in readonly mode: {hint}")

    @contextlib.contextmanager
    def _query_context(self, settings: Mapping[str, str], database: str) -> Iterator[None]:
        """The request's database and settings on the handle (the lock is held), put back afterwards."""
        for name in settings:
            if not _SETTING_NAME.fullmatch(name) or name not in self._defaults:
                raise self.error("UNKNOWN_SETTING", f"Unknown setting '{name}'")
        # Every time: a client's own USE may have moved the handle since the last request.
        self._handle.query(f"USE {_quote_identifier(database)}", "TabSeparated")
        if not settings:
            yield
            return
        self._handle.query("SET " + ", ".join(f"{k} = {_quote_string(v)}" for k, v in settings.items()))
        try:
            yield
        finally:
            self._handle.query("SET " + ", ".join(f"{k} = {self._defaults[k]}" for k in settings))

    def _query(
        self, sql: str, fmt: str, bind: Mapping[str, str], settings: Mapping[str, str], database: str, readonly: bool
    ) -> tuple[bytes, dict[str, str]]:
        try:
            with self._lock, self._query_context(settings, database):
                if readonly and self.allow_writes:
                    # A writable handle still answers GET and readonly=1 requests read-only.
                    sql = sql.rstrip().rstrip(";")
                    if _first_keyword(sql) not in _RESULT_KEYWORDS:
                        raise self._readonly_error()
                if readonly:
                    self._refuse_reads_outside_the_store(sql, bind)
                result = self._handle.query(sql, fmt, params=dict(bind))
        except ClickHouseError:
            raise
        except Exception as exc:
            raise self._engine_error(exc) from None
        out = result.bytes() or b""
        return out, {
            "read_rows": str(result.rows_read()),
            "read_bytes": str(result.bytes_read()),
            "written_rows": "0",
            "written_bytes": "0",
            "total_rows_to_read": "0",
            "result_bytes": str(len(out)),
        }

    def _refuse_reads_outside_the_store(self, sql: str, bind: Mapping[str, str]) -> None:
        """ACCESS_DENIED when the query calls a function that reads outside the store (the lock is held)."""
        tree = self._handle.query("EXPLAIN AST " + sql, "TSVRaw", params=dict(bind)).bytes().decode()
        for name in _AST_FUNCTION.findall(tree):
            if name.lower() in self._outside_functions:
                raise self.error(
                    "ACCESS_DENIED",
                    f"llmtel serve's read endpoint does not run {name}(): it reads outside the store, with the "
                    "rights of the serve process (query the store's tables; start serve with --allow-writes "
                    "to lift this for trusted clients)",
                )

    def _insert(
        self, statement: str, fmt: str, data: bytes, settings: Mapping[str, str], database: str
    ) -> dict[str, str]:
        try:
            with self._lock, self._query_context(settings, database):
                inserter = self._handle.send_insert(statement, fmt)
                try:
                    if data:
                        inserter.append(data)
                    result = inserter.finish()
                finally:
                    # No-op after finish(); otherwise the engine drops the partial insert.
                    with contextlib.suppress(Exception):
                        inserter.cancel()
        except ClickHouseError:
            raise
        except Exception as exc:
            raise self._engine_error(exc) from None
        rows, size = str(result.rows_written), str(result.bytes_written)
        return {
            "read_rows": "0", "read_bytes": "0", "written_rows": rows, "written_bytes": size,
            "total_rows_to_read": "0", "result_rows": rows, "result_bytes": size,
        }

    def _result(
        self,
        out: bytes,
        summary: Mapping[str, str],
        result_format: str | None,
        params: Mapping[str, str],
        headers: Mapping[str, str],
        query_id: str,
    ) -> Answer:
        answer_headers = {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.timezone,
            "X-ClickHouse-Summary": json.dumps(summary, separators=(",", ":")),
            "X-ClickHouse-Server-Display-Name": "llmtel-serve",
        }
        if result_format is not None:
            answer_headers["X-ClickHouse-Format"] = result_format
            answer_headers["Content-Type"] = _CONTENT_TYPES.get(result_format, "application/octet-stream")
        else:
            answer_headers["Content-Type"] = "text/plain; charset=UTF-8"
        if out and params.get("enable_http_compression", "0") == "1":
            accepted = {token.split(";")[0].strip().lower() for token in headers.get("Accept-Encoding", "").split(",")}
            for encoding, compress in _RESPONSE_ENCODINGS.items():
                if encoding in accepted:
                    out = compress(out)
                    answer_headers["Content-Encoding"] = encoding
                    break
        return Answer(200, answer_headers, out)
