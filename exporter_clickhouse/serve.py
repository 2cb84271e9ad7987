"""``llmtel serve``: one process owns the embedded store; others send OTLP to it and query through it.

chDB opens a store in one process at a time. ``llmtel serve`` is that process, listening on one
port (127.0.0.1:4318 by default) for:

- ``POST /v1/traces``: OTLP/HTTP trace export (protobuf or JSON, optionally gzip), as the stock
  ``OTLPSpanExporter`` sends it. Each request is encoded straight into the exporter's Native
  block (``otlp_columns``: byte for byte what ``columns.encode_spans`` writes for the same spans)
  and goes through the exporter's own delivery (``Store`` / spool): rows are what the in-process
  ``ClickHouseSpanExporter`` would have written. A request is answered once its spans are queued
  (``--ack-after-store``: once they are stored, or in the spool while the store fails); the
  writer puts what queued meanwhile into the exporter's spool at least every 0.2 s, and its drain
  thread inserts from there at most every 2 s under load, tens of thousands of spans at once,
  since each insert has a cost of its own. Invalid spans
  are rejected one by one (OTLP partial success); a malformed body is 400, a body over the limit
  413, a full queue or a shutdown 503 with ``Retry-After`` (the OTLP exporters retry those).
- everything else: the ClickHouse HTTP interface (``http_interface``), read-only unless
  ``--allow-writes``, for ``llmtel`` commands, clickhouse-connect and Grafana's ClickHouse data
  source (HTTP protocol, this port).
- ``GET /healthz``: JSON with the store's and the queue's state.

Beyond loopback a token is required (``--token`` or ``LLMTEL_SERVE_TOKEN``): OTLP exporters send it
as ``Authorization: Bearer <token>`` (``OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<token>``),
ClickHouse clients as their password (Basic auth, ``X-ClickHouse-Key`` or ``password=``).

While it runs, ``<store>/.llmtel-serve.json`` (mode 0600: it holds the token) tells other processes
where it listens; :func:`find_serve_endpoint` reads it. SIGTERM or SIGINT stops accepting, writes
everything accepted, and removes the file.

Run: ``llmtel serve [--store DIR] [--host H] [--port P]`` or ``python -m llmtel.exporter_clickhouse.serve``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import hmac
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from llmtel.exporter_clickhouse import environment_variables as env
from llmtel.exporter_clickhouse import otlp, otlp_columns
from llmtel.exporter_clickhouse.columns import EncodedBatch
from llmtel.exporter_clickhouse.config import ExporterConfig, process_environment
from llmtel.exporter_clickhouse.serve_discovery import (
    DISCOVERY_FILE_NAME,
    find_serve_endpoint,
    remove_discovery,
    write_discovery,
)

__all__ = [
    "DISCOVERY_FILE_NAME",
    "SERVE_TOKEN_VARIABLE",
    "ServeSettings",
    "add_arguments",
    "find_serve_endpoint",
    "main",
    "run",
]

_logger = logging.getLogger("llmtel.serve")

SERVE_TOKEN_VARIABLE = "LLMTEL_SERVE_TOKEN"
DEFAULT_PORT = 4318
# The Collector's OTLP receiver default (confighttp max_request_body_size: 20 MiB).
DEFAULT_MAX_BODY_BYTES = 20 << 20
DEFAULT_MAX_QUEUE_SPANS = 200_000
# Each insert costs the store CPU of its own, whatever its size: a part per table (the text
# indexes, the LLM views), then the merges of those parts. Measured on the embedded store with
# bench/serve.py's spans, inserting 163,840 and merging the parts cost 26 us a span in inserts of
# 8,192, 14 us in inserts of 32,768, 5 us in inserts of 81,920: CPU that exporting processes on
# the same machine need too. The exporter's drain thread groups spooled batches into one insert
# at most once per insert interval (unless a full insert of INSERT_MAX_ROWS waits); serve, which
# gathers many processes' spans, uses a longer interval than an exporter in one app (1 s) unless
# OTEL_EXPORTER_CLICKHOUSE_INSERT_INTERVAL says otherwise. The spans wait in the spool meanwhile:
# durable, so a killed serve loses nothing it wrote there. bench/serve.py (4 stock exporters):
# 1 s 23.6k spans/s stored at 26.5 us of server CPU a span, 2 s 23.7k at 21.5 us, 4 s 17.2k (the
# last spans wait out the interval before the figure's end).
_SERVE_INSERT_INTERVAL = "2s"
# The writer hands the exporter what requests queued meanwhile, merged (fewer spool files): it
# waits for this many spans, or this long after the oldest request, whichever comes first. An
# answered request's spans are in memory only for that long (or in the spool, with
# --ack-after-store once stored).
_MIN_WRITE_SPANS = 8_192
_WRITE_LINGER_SECONDS = 0.2
_MAX_WRITE_SPANS = 98_304
# A body this much over the limit is not even read: the connection is closed after the answer.
_DISCARD_LIMIT = 64 << 20
_RETRY_AFTER_SECONDS = "1"
READY_PREFIX = "llmtel serve: listening on "


# --- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeSettings:
    """Everything ``serve`` needs, read once from the arguments and the environment."""

    store_path: str
    exporter: ExporterConfig
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str = field(default="", repr=False)
    allow_writes: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_queue_spans: int = DEFAULT_MAX_QUEUE_SPANS
    ack_after_store: bool = False

    @classmethod
    def from_arguments(cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServeSettings:
        """The settings, or ``ValueError`` naming every problem (one line each, joined by ``; ``)."""
        if environ is None:
            environ = process_environment()
        problems: list[str] = []
        overrides: dict[str, Any] = {}
        if env.OTEL_EXPORTER_CLICKHOUSE_INSERT_INTERVAL not in environ:
            # serve gathers the spans of many processes: fewer, larger inserts (see _SERVE_INSERT_INTERVAL).
            overrides["insert_interval"] = _SERVE_INSERT_INTERVAL
        if args.store:
            overrides["endpoint"] = "chdb://" + os.path.abspath(os.path.expanduser(args.store))
        elif getattr(args, "endpoint", None):
            # The llmtel command's global --endpoint, when it names the store.
            overrides["endpoint"] = args.endpoint
        config = ExporterConfig.from_environment(environ, **overrides)
        problems.extend(config.validate())
        store_path = ""
        if not problems:
            target = config.target()
            if target.kind != "embedded":
                problems.append(
                    f"llmtel serve owns an embedded store, but the endpoint is the server {target.url}: "
                    "give --store DIR (or OTEL_EXPORTER_CLICKHOUSE_ENDPOINT=chdb:///path)"
                )
            else:
                store_path = os.path.realpath(target.path)
                # Every way to the store path spelled one way: chDB compares engine paths literally.
                config = ExporterConfig.from_environment(environ, **{**overrides, "endpoint": f"chdb://{store_path}"})
        token = args.token if args.token is not None else environ.get(SERVE_TOKEN_VARIABLE, "")
        token = token.strip()
        if not _is_loopback(args.host) and not token:
            problems.append(
                f"--host {args.host} is reachable from other machines: give a token "
                f"(--token or {SERVE_TOKEN_VARIABLE}); clients send it as a Bearer token or password"
            )
        if not 0 <= args.port <= 65535:
            problems.append(f"--port {args.port}: expected 0 to 65535")
        if args.max_body_bytes <= 0:
            problems.append("--max-body-bytes must be more than 0")
        if args.max_queue_spans <= 0:
            problems.append("--max-queue-spans must be more than 0")
        if problems:
            raise ValueError("; ".join(problems))
        return cls(
            store_path=store_path,
            exporter=config,
            host=args.host,
            port=args.port,
            token=token,
            allow_writes=args.allow_writes,
            ack_after_store=args.ack_after_store,
            max_body_bytes=args.max_body_bytes,
            max_queue_spans=args.max_queue_spans,
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``llmtel serve``."""
    parser.add_argument("--store", metavar="DIR",
                        help="the embedded store's directory (default: OTEL_EXPORTER_CLICKHOUSE_ENDPOINT, "
                             "else ~/.local/share/llmtel/store)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port for OTLP/HTTP and the ClickHouse HTTP interface (default {DEFAULT_PORT}; 0: any)")
    parser.add_argument("--token", default=None,
                        help=f"required from clients (default: {SERVE_TOKEN_VARIABLE}); required beyond loopback")
    parser.add_argument("--allow-writes", action="store_true",
                        help="let ClickHouse clients write (INSERT, CREATE, ...); read-only otherwise")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                        help="largest request body, also after decompression (default 20 MiB)")
    parser.add_argument("--ack-after-store", action="store_true",
                        help="answer an OTLP request only once its spans are stored (or spooled while the store "
                             "fails); slower. Default: once they are queued, as the Collector's memory queue does")
    parser.add_argument("--max-queue-spans", type=int, default=DEFAULT_MAX_QUEUE_SPANS,
                        help="spans waiting to be written before exporters are told to retry later (503)")


# --- writing ----------------------------------------------------------------------------------


class _Pending:
    __slots__ = ("arrived", "batch", "done", "stored")

    def __init__(self, batch: EncodedBatch) -> None:
        self.batch = batch
        self.arrived = time.monotonic()
        self.done = threading.Event()
        self.stored = False


def batch_export(exporter: Any) -> Callable[[EncodedBatch], bool]:
    """How to hand the exporter a Native block already encoded: True once it is stored or spooled.

    ``exporter.export_encoded(batch)`` is ``export()`` after its encoding step.
    """
    from opentelemetry.sdk.trace.export import SpanExportResult

    export_encoded = getattr(exporter, "export_encoded", None)
    if export_encoded is None:
        raise TypeError(f"{type(exporter).__name__} cannot take encoded batches (it has no export_encoded)")
    return lambda batch: export_encoded(batch) is SpanExportResult.SUCCESS


class SpanWriter:
    """Writes received batches through a ``ClickHouseSpanExporter`` on one thread, merging requests.

    Each request arrives encoded (one Native block, ``otlp_columns``); the writer joins the blocks
    of the requests waiting into one insert body (Native is a sequence of blocks), since each
    insert has a fixed cost. ``submit`` returns a handle the request waits on, or None when the
    queue is full or closing.
    """

    def __init__(self, exporter: Any, max_queue_spans: int, *, wait_stored: bool = False) -> None:
        self.exporter = exporter
        self.max_queue_spans = max_queue_spans
        # --ack-after-store: an exporter that spools first and inserts from a drain thread is
        # flushed after each write, so a request is answered once its spans are in the store
        # (or, when the store fails meanwhile, safe in the spool).
        self._flush = getattr(exporter, "force_flush", None) if wait_stored else None
        self.queued_spans = 0  # waiting or being written
        self.stored_spans = 0
        self.failed_spans = 0
        self.inserts = 0
        self._export = batch_export(exporter)
        self._queue: deque[_Pending] = deque()
        self._condition = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="llmtel-serve-writer", daemon=True)
        self._thread.start()

    def submit(self, batch: EncodedBatch) -> _Pending | None:
        with self._condition:
            if self._closing or (self.queued_spans and self.queued_spans + batch.rows > self.max_queue_spans):
                return None
            pending = _Pending(batch)
            self._queue.append(pending)
            self.queued_spans += batch.rows
            self._condition.notify()
            return pending

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._closing:
                    self._condition.wait()
                if not self._queue:
                    return
                # Linger for a bigger write, unless closing (then write what there is, at once).
                deadline = self._queue[0].arrived + _WRITE_LINGER_SECONDS
                while not self._closing and self.queued_spans < _MIN_WRITE_SPANS:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._condition.wait(left)
                taken: list[_Pending] = []
                count = 0
                while self._queue and (not taken or count + self._queue[0].batch.rows <= _MAX_WRITE_SPANS):
                    pending = self._queue.popleft()
                    taken.append(pending)
                    count += pending.batch.rows
            self._write(taken)
            with self._condition:
                self.queued_spans -= count

    def _write(self, taken: list[_Pending]) -> None:
        groups = [taken]
        while groups:
            group = groups.pop()
            batch = (group[0].batch if len(group) == 1 else
                     EncodedBatch(b"".join(pending.batch.native for pending in group),
                                  sum(pending.batch.rows for pending in group)))
            try:
                stored = self._export(batch)
                if stored and self._flush is not None:
                    self._flush()
            except Exception:  # export should never raise; a request must never hang on it
                _logger.exception("llmtel serve: writing %d spans failed", batch.rows)
                stored = False
            self.inserts += 1
            if not stored and len(group) > 1:
                # One request's spans must not sink the others merged with it: write each alone.
                groups.extend([pending] for pending in reversed(group))
                continue
            if stored:
                self.stored_spans += batch.rows
            else:
                self.failed_spans += batch.rows
            for pending in group:
                pending.stored = stored
                pending.done.set()

    def close(self) -> None:
        """Write everything queued, then stop the thread."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        self._thread.join()


# --- HTTP ----------------------------------------------------------------------------------


class _BodyTooLarge(Exception):
    pass


class ServeServer(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not hold up a shutdown
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, settings: ServeSettings, writer: SpanWriter, interface: Any) -> None:
        if ":" in settings.host:
            self.address_family = socket.AF_INET6
        super().__init__((settings.host, settings.port), _Handler)
        self.settings = settings
        self.writer = writer
        self.interface = interface
        self.closing = False
        self.started = time.time()
        self.in_flight = 0
        self.counts = {"otlp_requests": 0, "otlp_rejected_spans": 0, "otlp_refused": 0, "queries": 0,
                       "unauthorized": 0}
        # Seconds per accepted OTLP request (read, decode, write, answer), the most recent ones.
        self.latencies: deque[float] = deque(maxlen=20_000)
        self._state = threading.Condition()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", ""):
            shown = "127.0.0.1"
        elif ":" in host:
            shown = "[::1]" if host == "::" else f"[{host}]"
        else:
            shown = host
        return f"http://{shown}:{port}"

    def begin(self) -> None:
        with self._state:
            self.in_flight += 1

    def end(self) -> None:
        with self._state:
            self.in_flight -= 1
            self._state.notify_all()

    def count(self, name: str, amount: int = 1) -> None:
        with self._state:
            self.counts[name] += amount

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._state:
            while self.in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._state.wait(left)
        return True

    def health(self) -> dict[str, Any]:
        writer = self.writer
        exporter = writer.exporter
        backlog = getattr(exporter, "backlog", None)
        if backlog is not None:
            # An exporter that spools every batch and inserts from a drain thread: a backlog is
            # normal there; the store failing is what makes it degraded.
            spooled, spooled_spans = backlog()
            failing = bool(getattr(exporter, "store_failing", False))
        else:
            spool = getattr(exporter, "spool", None)
            pending = spool.pending() if spool is not None else []
            spooled, spooled_spans = len(pending), sum(getattr(item, "rows", 0) for item in pending)
            failing = bool(getattr(exporter, "store_failing", spooled))
        with self._state:
            counts = dict(self.counts)
            latencies = sorted(self.latencies)
        return {
            "status": "closing" if self.closing else ("degraded" if failing else "ok"),
            "store": {"path": self.settings.store_path, "database": self.settings.exporter.effective_database,
                      "table": self.settings.exporter.traces_table, "spooled_batches": spooled,
                      "spooled_spans": spooled_spans, "store_failing": failing,
                      "dropped_spans": getattr(exporter, "dropped_spans", 0)},
            "queue": {"queued_spans": writer.queued_spans, "max_queue_spans": writer.max_queue_spans,
                      "stored_spans": writer.stored_spans, "failed_spans": writer.failed_spans,
                      "inserts": writer.inserts},
            "requests": counts,
            "otlp_latency_ms": _percentiles(latencies),
            "read_only": not self.settings.allow_writes,
            "uptime_seconds": round(time.time() - self.started, 3),
            "pid": os.getpid(),
        }


def _percentiles(ordered: Sequence[float]) -> dict[str, float]:
    if not ordered:
        return {}

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 3)

    return {"count": len(ordered), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0)}


class _Handler(BaseHTTPRequestHandler):
    server: ServeServer
    protocol_version = "HTTP/1.1"  # keep-alive: exporters and clickhouse-connect reuse connections
    server_version = "llmtel-serve"

    def log_message(self, format: str, *args: Any) -> None:
        _logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    # --- plumbing -------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, headers: Mapping[str, str], *, close: bool = False) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if close or self.server.closing:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_body(self, limit: int) -> bytes:
        """The request body (chunked or sized); ``_BodyTooLarge`` when over ``limit``."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            size_so_far = 0
            while True:
                size = int(self.rfile.readline(65537).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                size_so_far += size
                if size_so_far > limit:
                    self.close_connection = True
                    raise _BodyTooLarge
                parts.append(self._read_exactly(size))
                self.rfile.readline(65537)
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        if length > limit:
            if length <= _DISCARD_LIMIT:
                # Read it away so the client gets the answer and the connection stays usable.
                left = length
                while left:
                    piece = self.rfile.read(min(left, 1 << 20))
                    if not piece:
                        break
                    left -= len(piece)
            else:
                self.close_connection = True
            raise _BodyTooLarge
        return self._read_exactly(length)

    def _read_exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) != size:
            raise ConnectionError("the client closed the connection inside the body")
        return data

    def _authorized(self, params: Mapping[str, str]) -> bool:
        token = self.server.settings.token
        if not token:
            return True
        offered: list[str] = []
        authorization = self.headers.get("Authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer":
            offered.append(credentials.strip())
        elif scheme.lower() == "basic":
            with contextlib.suppress(ValueError):
                offered.append(base64.b64decode(credentials.strip()).decode().partition(":")[2])
        offered.append(self.headers.get("X-ClickHouse-Key", ""))
        offered.append(params.get("password", ""))
        expected = token.encode()
        # compare_digest on every offer, so the time taken does not depend on which one matched.
        matches = [hmac.compare_digest(offer.encode(), expected) for offer in offered]
        return any(matches)

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        self.server.begin()
        try:
            if url.path == "/healthz":
                self._drain_small()
                body = json.dumps(self.server.health()).encode()
                self._send(200, body, {"Content-Type": "application/json"})
            elif url.path in ("/ping", "/replicas_status") or (
                url.path == "/" and self.command != "POST" and "query" not in params
            ):
                self._drain_small()
                self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
            elif url.path == "/v1/traces":
                self._otlp(params)
            elif url.path.startswith("/v1/"):
                self._drain_small()
                self._send(404, f"llmtel serve receives traces only (POST /v1/traces), not {url.path}\n".encode(),
                           {"Content-Type": "text/plain"})
            else:
                self._clickhouse(params)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            _logger.exception("llmtel serve: request %s %s failed", self.command, url.path)
            with contextlib.suppress(Exception):
                self._send(500, b"internal error in llmtel serve\n", {"Content-Type": "text/plain"}, close=True)
        finally:
            self.server.end()

    def _drain_small(self) -> None:
        with contextlib.suppress(_BodyTooLarge, ValueError):
            self._read_body(1 << 20)

    # --- OTLP ---------------------------------------------------------------------------

    def _otlp_error(self, status: int, grpc_code: int, message: str, content_type: str, **extra: Any) -> None:
        headers = {"Content-Type": otlp.JSON_CONTENT_TYPE
                   if otlp.media_type(content_type) == otlp.JSON_CONTENT_TYPE else otlp.PROTOBUF_CONTENT_TYPE}
        if status in (429, 503):
            headers["Retry-After"] = _RETRY_AFTER_SECONDS
        elif status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="llmtel"'
        self._send(status, otlp.encode_status(grpc_code, message, content_type), headers, **extra)

    def _otlp(self, params: Mapping[str, str]) -> None:
        server = self.server
        started = time.perf_counter()
        content_type = self.headers.get("Content-Type", "")
        limit = server.settings.max_body_bytes
        server.count("otlp_requests")
        if self.command != "POST":
            self._drain_small()
            self._send(405, b"POST OTLP trace requests to /v1/traces\n",
                       {"Allow": "POST", "Content-Type": "text/plain"})
            return
        try:
            body = self._read_body(limit)
        except _BodyTooLarge:
            self._otlp_error(413, 8, f"the body is over the limit of {limit} bytes (llmtel serve --max-body-bytes)",
                             content_type)
            return
        except ValueError as error:
            self._otlp_error(400, 3, f"unreadable body: {error}", content_type, close=True)
            return
        if not self._authorized(params):
            server.count("unauthorized")
            self._otlp_error(401, 16, "missing or wrong token: send Authorization: Bearer <token>", content_type)
            return
        if server.closing:
            server.count("otlp_refused")
            self._otlp_error(503, 14, "llmtel serve is shutting down; retry later", content_type, close=True)
            return
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        try:
            if encoding in ("gzip", "x-gzip"):
                body = _gunzip(body, limit)
            elif encoding == "deflate":
                body = _inflate(body, limit)
            elif encoding not in ("", "identity"):
                self._otlp_error(415, 3, f"unsupported Content-Encoding {encoding!r}: send gzip or none",
                                 content_type)
                return
            request = otlp.parse_request(body, content_type)
        except _BodyTooLarge:
            self._otlp_error(413, 8, f"the decompressed body is over the limit of {limit} bytes", content_type)
            return
        except (OSError, EOFError, zlib.error) as error:
            self._otlp_error(400, 3, f"cannot decompress the {encoding} body: {error}", content_type)
            return
        except otlp.OtlpDecodeError as error:
            status = 415 if "Content-Type" in str(error) else 400
            self._otlp_error(status, 3, str(error), content_type)
            return
        # Encoded here, on the request's thread: the writer only joins blocks.
        try:
            decoded = otlp_columns.encode_request(
                request, body if otlp.media_type(content_type) == otlp.PROTOBUF_CONTENT_TYPE else None)
        except Exception:  # a bug of ours, not the sender's: say so, keep serving
            _logger.exception("llmtel serve: could not encode an OTLP request")
            self._otlp_error(500, 13, "llmtel serve could not encode these spans (see its log)", content_type)
            return
        if decoded.rejected:
            server.count("otlp_rejected_spans", decoded.rejected)
        if decoded.batch.rows:
            pending = server.writer.submit(decoded.batch)
            if pending is None:
                server.count("otlp_refused")
                self._otlp_error(503, 14, "llmtel serve is busy writing (queue full); retry later", content_type)
                return
            if server.settings.ack_after_store:
                pending.done.wait()
            if server.settings.ack_after_store and not pending.stored:
                self._otlp_error(503, 14, "the store could not take the spans; retry later", content_type)
                return
        answer_type = (otlp.JSON_CONTENT_TYPE if otlp.media_type(content_type) == otlp.JSON_CONTENT_TYPE
                       else otlp.PROTOBUF_CONTENT_TYPE)
        self._send(200, otlp.encode_response(decoded.rejected, decoded.error_message, content_type),
                   {"Content-Type": answer_type})
        server.latencies.append(time.perf_counter() - started)

    # --- ClickHouse HTTP ----------------------------------------------------------------

    def _clickhouse(self, params: dict[str, str]) -> None:
        server = self.server
        interface = server.interface
        try:
            body = self._read_body(server.settings.max_body_bytes)
        except _BodyTooLarge:
            error = interface.error("QUERY_IS_TOO_LARGE", "The request body is over the limit of llmtel serve")
            answer = interface.error_answer(error)
            self._send(answer.status, answer.body, answer.headers)
            return
        if not self._authorized(params):
            server.count("unauthorized")
            error = interface.error("AUTHENTICATION_FAILED", "missing or wrong token: send it as the password")
            answer = interface.error_answer(error, status=401)
            self._send(401, answer.body, {**answer.headers, "WWW-Authenticate": 'Basic realm="llmtel"'})
            return
        server.count("queries")
        answer = interface.answer(self.command, params, self.headers, body)
        self._send(answer.status, answer.body, answer.headers)


def _gunzip(body: bytes, limit: int) -> bytes:
    # decompressobj with max_length: a small gzip bomb cannot blow up memory before the check.
    decompressor = zlib.decompressobj(wbits=31)
    out = decompressor.decompress(body, limit + 1)
    if len(out) > limit:
        raise _BodyTooLarge
    if not decompressor.eof:
        raise EOFError("the gzip stream ends early")
    if decompressor.unused_data:
        # Concatenated gzip members are valid gzip; rare enough to take the plain path.
        out = gzip.decompress(body)
        if len(out) > limit:
            raise _BodyTooLarge
    return out


def _inflate(body: bytes, limit: int) -> bytes:
    decompressor = zlib.decompressobj()
    out = decompressor.decompress(body, limit + 1)
    if len(out) > limit:
        raise _BodyTooLarge
    if not decompressor.eof:
        raise EOFError("the deflate stream ends early")
    return out


# --- running ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; 0 after a clean stop, 2 for bad settings, 1 when the store cannot be opened."""
    try:
        settings = ServeSettings.from_arguments(args)
    except ValueError as error:
        print(f"llmtel serve: {error}", file=sys.stderr)
        return 2
    running = find_serve_endpoint(settings.store_path)
    if running is not None:
        shown = urlsplit(running)
        print(f"llmtel serve: another llmtel serve already owns {settings.store_path} "
              f"(http://{shown.hostname}:{shown.port})", file=sys.stderr)
        return 1

    from llmtel.exporter_clickhouse.exporter import ClickHouseSpanExporter
    from llmtel.exporter_clickhouse.http_interface import ClickHouseHttpInterface
    from llmtel.exporter_clickhouse.store import Store, StoreError

    # Open the store and create the schema now: a store held elsewhere fails here, not at the first span.
    store = Store(settings.exporter)
    try:
        store.connect()
    except StoreError as error:
        print(f"llmtel serve: cannot open the store: {error}", file=sys.stderr)
        return 1
    exporter = ClickHouseSpanExporter(**_exporter_overrides(settings.exporter))
    backlog = getattr(exporter, "backlog", None)
    if backlog is not None and backlog()[0]:
        # Batches a previous run left in the spool: its drain thread inserts them now (a flush
        # without waiting starts it), not only once the first request arrives.
        exporter.force_flush(timeout_millis=0)
    interface = ClickHouseHttpInterface(settings.store_path, allow_writes=settings.allow_writes)
    writer = SpanWriter(exporter, settings.max_queue_spans, wait_stored=settings.ack_after_store)
    try:
        server = ServeServer(settings, writer, interface)
    except OSError as error:
        print(f"llmtel serve: cannot listen on {settings.host}:{settings.port}: {error.strerror or error}",
              file=sys.stderr)
        writer.close()
        exporter.shutdown()
        interface.close()
        store.close()
        return 1
    discovery = write_discovery(settings.store_path, server.url, settings.token)

    def stop(*_: object) -> None:
        server.closing = True
        # shutdown() waits for serve_forever() to return, so it cannot run on the serving thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    print(f"{READY_PREFIX}{server.url} (OTLP/HTTP at /v1/traces, ClickHouse HTTP at /; "
          f"store {settings.store_path}{', read-only' if not settings.allow_writes else ''})", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.closing = True
        # Requests already reading or waiting finish first; everything they queued is written.
        server.wait_idle(timeout=60)
        writer.close()
        exporter.shutdown()
        server.server_close()
        interface.close()
        store.close()
        remove_discovery(discovery)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    stored, failed = writer.stored_spans, writer.failed_spans
    print(f"llmtel serve: stopped; {stored} spans stored" + (f", {failed} not stored" if failed else ""), flush=True)
    return 0


def _exporter_overrides(config: ExporterConfig) -> dict[str, Any]:
    """The exporter's settings as ``ClickHouseSpanExporter`` keyword arguments (the environment already read)."""
    names = ("endpoint", "database", "traces_table", "ttl", "create_schema", "cluster_name", "table_engine",
             "timeout", "retry_max_elapsed", "export_timeout", "spool_dir", "spool_max_bytes", "data_dir",
             "insert_max_rows", "insert_max_bytes", "insert_interval")
    return {name: getattr(config, name) for name in names}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llmtel serve",
        description="Own the embedded store: receive OTLP/HTTP traces and answer ClickHouse HTTP queries.",
    )
    add_arguments(parser)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
