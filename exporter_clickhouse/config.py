"""The exporter's configuration: read once from the environment into a frozen dataclass.

``ExporterConfig.from_environment()`` is the only place the exporter reads ``os.environ``. The
variables are named after the Collector's ``clickhouseexporter`` options and share its defaults
(see ``environment_variables``); keyword arguments override them. Reading never fails: a value
that cannot be parsed keeps the default and becomes a *problem*, and ``validate()`` returns every
problem at once, one line each, for the exporter to log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from llmtel.exporter_clickhouse import environment_variables as env
from llmtel.exporter_clickhouse.durations import parse_duration
from llmtel.exporter_clickhouse.schema import SchemaOptions

__all__ = ["Endpoint", "ExporterConfig", "parse_endpoint", "parse_size"]

_SCHEMA_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SchemaOptions)}
DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRY_MAX_ELAPSED = 10.0
DEFAULT_EXPORT_TIMEOUT = 30.0  # the SDK's OTEL_BSP_EXPORT_TIMEOUT default, 30000 ms
DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024
# One insert takes the batches waiting together up to these caps: ClickHouse's guidance is 10k to
# 100k rows per insert (https://clickhouse.com/docs/best-practices/selecting-an-insert-strategy).
DEFAULT_INSERT_MAX_ROWS = 100_000
DEFAULT_INSERT_MAX_BYTES = 64 * 1024 * 1024
# ... and about one insert per second: each costs a new part in four tables, and merges later.
DEFAULT_INSERT_INTERVAL = 1.0
COMPRESSIONS = ("lz4", "zstd", "gzip", "deflate", "br", "none")

# The SDK's own variable (BatchSpanProcessor): the SDK never passes it to export(), so the
# exporter reads it to bound its retries.
OTEL_BSP_EXPORT_TIMEOUT = "OTEL_BSP_EXPORT_TIMEOUT"

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mi": 1024**2, "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gi": 1024**3, "gib": 1024**3,
               "t": 1000**4, "tb": 1000**4, "ti": 1024**4, "tib": 1024**4}
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_NATIVE_PORTS = (9000, 9440)


def process_environment() -> Mapping[str, str]:
    """The process environment; this module is the one place the exporter package reads it.

    The rest takes it from here: the CLI's settings, ``llmtel serve``'s token, the environment
    ``llmtel demo`` gives its child app.
    """
    return os.environ


def parse_size(text: str) -> int:
    """Bytes in ``"1048576"``, ``"512MiB"``, ``"2GB"`` (KiB/MiB/GiB are powers of 1024, KB/MB/GB of 1000)."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size: expected bytes or a number and a unit, like 256MiB or 2GB")
    return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()])


@dataclass(frozen=True)
class Endpoint:
    """Where the spans go, read from ``OTEL_EXPORTER_CLICKHOUSE_ENDPOINT``."""

    kind: Literal["embedded", "server"]
    path: str = ""  # the chDB store directory (embedded)
    secure: bool = False
    host: str = ""
    port: int = 0
    username: str = ""  # from user:password@ in the URL
    password: str = field(default="", repr=False)
    database: str = ""  # from the URL path
    default_store: bool = False  # the endpoint was not set: the store under the user's data dir

    @property
    def url(self) -> str:
        """The endpoint for messages: no credentials."""
        if self.kind == "embedded":
            return f"chdb://{self.path}"
        return f"{'https' if self.secure else 'http'}://{self.host}:{self.port}"


def parse_endpoint(text: str, data_dir: str) -> Endpoint:
    """``OTEL_EXPORTER_CLICKHOUSE_ENDPOINT`` → an :class:`Endpoint`; ``ValueError`` says what to write instead."""
    text = text.strip()
    shown = _redacted(text)
    if text in ("", "chdb:", "chdb://"):
        return Endpoint("embedded", path=str(Path(data_dir) / "store"), default_store=True)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "chdb":
        if parts.netloc:
            raise ValueError(f"{shown!r}: chdb:// takes an absolute path after it, e.g. chdb:///var/lib/llmtel")
        path = unquote(parts.path)
        if not os.path.isabs(path):
            raise ValueError(f"{shown!r}: the chDB store path must be absolute, e.g. chdb:///var/lib/llmtel")
        return Endpoint("embedded", path=os.path.normpath(path))
    if scheme == "tcp":
        raise ValueError(
            f"{shown!r}: tcp:// is ClickHouse's native protocol and llmtel speaks HTTP; "
            "use http://host:8123 or https://host:8443"
        )
    if scheme not in ("http", "https", "clickhouse"):
        hint = f"http://{shown}" if not scheme or "://" not in text else "http://host:8123"
        raise ValueError(
            f"{shown!r}: expected http(s)://host:port, clickhouse://host or chdb:///path, e.g. {hint}"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{shown!r}: the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"{shown!r}: no host, e.g. {scheme}://clickhouse.example:8123")
    secure = scheme == "https"
    if scheme == "clickhouse":
        # clickhouse-go's DSN names the native protocol; read it as HTTP on the matching port.
        query = parse_qs(parts.query)
        secure = query.get("secure", ["false"])[0].strip().lower() in _TRUE
        if port in _NATIVE_PORTS:
            raise ValueError(
                f"{shown!r}: port {port} is ClickHouse's native protocol and llmtel speaks HTTP; "
                f"use clickhouse://{parts.hostname}:{8443 if port == 9440 else 8123} (or http(s)://)"
            )
    return Endpoint(
        "server",
        secure=secure,
        host=parts.hostname,
        port=port or (8443 if secure else 8123),
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=unquote(parts.path.strip("/")),
    )


def _redacted(url: str) -> str:
    """``url`` with the password of ``user:password@`` replaced, for messages."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)


def _default_data_dir(environ: Mapping[str, str]) -> str:
    # XDG Base Directory: $XDG_DATA_HOME, else ~/.local/share.
    base = environ.get("XDG_DATA_HOME", "").strip()
    if not base or not os.path.isabs(base):
        home = environ.get("HOME", "").strip() or os.path.expanduser("~")
        base = os.path.join(home, ".local", "share")
    return os.path.join(base, "llmtel")


@dataclass(frozen=True)
class ExporterConfig:
    """Every setting of the exporter, parsed; the defaults are the Collector's where it has one.

    Durations are seconds (``ttl`` whole seconds, as the schema takes it). ``problems`` holds what
    could not be read (the setting kept its default); ``validate()`` adds what is wrong with the
    values themselves.
    """

    endpoint: str = ""
    database: str = ""  # unset: the database in the endpoint URL's path, else the schema's default
    username: str = ""
    password: str = field(default="", repr=False)
    traces_table: str = _SCHEMA_DEFAULTS["traces_table"]
    ttl: int = _SCHEMA_DEFAULTS["ttl_seconds"]
    create_schema: bool = True
    cluster_name: str = _SCHEMA_DEFAULTS["cluster"]
    table_engine: str = _SCHEMA_DEFAULTS["engine"]
    timeout: float = DEFAULT_TIMEOUT
    compress: str = "lz4"
    retry_max_elapsed: float = DEFAULT_RETRY_MAX_ELAPSED
    export_timeout: float = DEFAULT_EXPORT_TIMEOUT
    spool_dir: str = ""
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    insert_max_rows: int = DEFAULT_INSERT_MAX_ROWS
    insert_max_bytes: int = DEFAULT_INSERT_MAX_BYTES
    insert_interval: float = DEFAULT_INSERT_INTERVAL
    data_dir: str = ""
    problems: tuple[str, ...] = ()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> ExporterConfig:
        """The configuration from ``environ``, with ``overrides`` (field name → value) on top.

        Override values may be typed (``timeout=2.5``, ``create_schema=False``) or text as in the
        environment (``ttl="72h"``). Never raises: see ``problems``.
        """
        reader = _Reader(environ, overrides)
        # Not a variable of its own: the XDG data directory; tests and embedders may override it.
        data_dir = reader.text("data_dir", None, _default_data_dir(environ))
        spool_dir = reader.text("spool_dir", env.OTEL_EXPORTER_CLICKHOUSE_SPOOL_DIR, "")
        config = cls(
            endpoint=reader.text("endpoint", env.OTEL_EXPORTER_CLICKHOUSE_ENDPOINT, ""),
            database=reader.text("database", env.OTEL_EXPORTER_CLICKHOUSE_DATABASE, ""),
            username=reader.text("username", env.OTEL_EXPORTER_CLICKHOUSE_USERNAME, ""),
            password=reader.text("password", env.OTEL_EXPORTER_CLICKHOUSE_PASSWORD, "", strip=False),
            traces_table=reader.text("traces_table", env.OTEL_EXPORTER_CLICKHOUSE_TRACES_TABLE_NAME,
                                     cls.traces_table),
            ttl=int(reader.duration("ttl", env.OTEL_EXPORTER_CLICKHOUSE_TTL, cls.ttl)),
            create_schema=reader.flag("create_schema", env.OTEL_EXPORTER_CLICKHOUSE_CREATE_SCHEMA, True),
            cluster_name=reader.text("cluster_name", env.OTEL_EXPORTER_CLICKHOUSE_CLUSTER_NAME, cls.cluster_name),
            table_engine=reader.text("table_engine", env.OTEL_EXPORTER_CLICKHOUSE_TABLE_ENGINE, cls.table_engine),
            timeout=reader.duration("timeout", env.OTEL_EXPORTER_CLICKHOUSE_TIMEOUT, DEFAULT_TIMEOUT),
            compress=reader.text("compress", env.OTEL_EXPORTER_CLICKHOUSE_COMPRESS, "lz4").lower(),
            retry_max_elapsed=reader.duration("retry_max_elapsed",
                                              env.OTEL_EXPORTER_CLICKHOUSE_RETRY_MAX_ELAPSED_TIME,
                                              DEFAULT_RETRY_MAX_ELAPSED),
            export_timeout=reader.milliseconds("export_timeout", OTEL_BSP_EXPORT_TIMEOUT, DEFAULT_EXPORT_TIMEOUT),
            spool_dir=os.path.abspath(os.path.expanduser(spool_dir)) if spool_dir else os.path.join(data_dir, "spool"),
            spool_max_bytes=reader.size("spool_max_bytes", env.OTEL_EXPORTER_CLICKHOUSE_SPOOL_MAX_BYTES,
                                        DEFAULT_SPOOL_MAX_BYTES, zero="turns the spool off"),
            insert_max_rows=reader.count("insert_max_rows", env.OTEL_EXPORTER_CLICKHOUSE_INSERT_MAX_ROWS,
                                         DEFAULT_INSERT_MAX_ROWS),
            insert_max_bytes=reader.size("insert_max_bytes", env.OTEL_EXPORTER_CLICKHOUSE_INSERT_MAX_BYTES,
                                         DEFAULT_INSERT_MAX_BYTES),
            insert_interval=reader.duration("insert_interval", env.OTEL_EXPORTER_CLICKHOUSE_INSERT_INTERVAL,
                                            DEFAULT_INSERT_INTERVAL),
            data_dir=data_dir,
        )
        problems = reader.finish()
        return dataclasses.replace(config, problems=tuple(problems)) if problems else config

    # --- derived settings -------------------------------------------------------------------

    def target(self) -> Endpoint:
        """The parsed endpoint; ``ValueError`` when it is not usable (``validate()`` reports it)."""
        return parse_endpoint(self.endpoint, self.data_dir or _default_data_dir({}))

    @property
    def effective_database(self) -> str:
        """``database``, else the database in the endpoint URL's path, else ``default``."""
        if self.database:
            return self.database
        try:
            from_url = self.target().database
        except ValueError:
            from_url = ""
        return from_url or _SCHEMA_DEFAULTS["database"]

    def schema_options(self) -> SchemaOptions:
        """The schema step's options (``ValueError`` when ``validate()`` reports a problem)."""
        return SchemaOptions(
            database=self.effective_database,
            traces_table=self.traces_table,
            cluster=self.cluster_name,
            engine=self.table_engine,
            ttl_seconds=self.ttl,
        )

    @property
    def retry_budget(self) -> float:
        """How long one insert may be retried: the shorter of our limit and the SDK's export timeout."""
        return max(0.0, min(self.retry_max_elapsed, self.export_timeout))

    @property
    def spool_path(self) -> Path:
        """This store's and table's spool: a subdirectory of ``spool_dir`` named after both.

        Computed from the endpoint text as written when it does not parse, so a misconfigured
        exporter still keeps its spans somewhere the error message can name.
        """
        try:
            target = self.target()
            identity = os.path.realpath(target.path) if target.kind == "embedded" else target.url
            label = "chdb" if target.kind == "embedded" else f"{target.host}-{target.port}"
        except ValueError:
            identity = self.endpoint.strip()
            label = _redacted(identity)
        identity = f"{identity}|{self.effective_database}|{self.traces_table}"
        digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{label}-{self.effective_database}.{self.traces_table}")[:80]
        return Path(self.spool_dir) / f"{name}-{digest}"

    # --- validation -------------------------------------------------------------------------

    def validate(self) -> list[str]:
        """Every problem of this configuration, one line each naming the variable; empty when usable."""
        found = list(self.problems)
        try:
            target = self.target()
        except ValueError as error:
            found.append(f"{env.OTEL_EXPORTER_CLICKHOUSE_ENDPOINT}: {error}")
        else:
            if target.kind == "server" and self.compress not in COMPRESSIONS:
                found.append(
                    f"{env.OTEL_EXPORTER_CLICKHOUSE_COMPRESS}={self.compress!r}: "
                    f"expected one of {', '.join(COMPRESSIONS)}"
                )
            elif target.kind == "server" and self.compress not in ("none", *_available_compressions()):
                found.append(
                    f"{env.OTEL_EXPORTER_CLICKHOUSE_COMPRESS}={self.compress!r}: not installed here "
                    f"(available: {', '.join(('none', *_available_compressions()))})"
                )
        if self.ttl < 0:
            found.append(f"{env.OTEL_EXPORTER_CLICKHOUSE_TTL}: must not be negative (0 keeps spans forever)")
        if self.timeout <= 0:
            found.append(f"{env.OTEL_EXPORTER_CLICKHOUSE_TIMEOUT}: must be more than 0, e.g. 5s")
        if self.retry_max_elapsed < 0:
            found.append(f"{env.OTEL_EXPORTER_CLICKHOUSE_RETRY_MAX_ELAPSED_TIME}: must not be negative")
        if self.spool_max_bytes < 0:
            found.append(
                f"{env.OTEL_EXPORTER_CLICKHOUSE_SPOOL_MAX_BYTES}: must not be negative (0 turns the spool off)"
            )
        if self.insert_max_rows < 1:
            found.append(f"{env.OTEL_EXPORTER_CLICKHOUSE_INSERT_MAX_ROWS}: must be at least 1")
        if self.insert_max_bytes < 1:
            found.append(f"{env.OTEL_EXPORTER_CLICKHOUSE_INSERT_MAX_BYTES}: must be more than 0, e.g. 64MiB")
        if self.insert_interval < 0:
            found.append(f"{env.OTEL_EXPORTER_CLICKHOUSE_INSERT_INTERVAL}: must not be negative (0: no waiting)")
        if self.ttl >= 0:
            found.extend(self._schema_problems())
        return found

    def _schema_problems(self) -> list[str]:
        try:
            self.schema_options()
        except ValueError as error:
            # SchemaOptions reports its problems joined after a prefix; one line each here.
            text = str(error).split(": ", 1)[-1]
            names = {
                "database": env.OTEL_EXPORTER_CLICKHOUSE_DATABASE,
                "traces table": env.OTEL_EXPORTER_CLICKHOUSE_TRACES_TABLE_NAME,
                "cluster": env.OTEL_EXPORTER_CLICKHOUSE_CLUSTER_NAME,
                "engine": env.OTEL_EXPORTER_CLICKHOUSE_TABLE_ENGINE,
                "ttl_seconds": env.OTEL_EXPORTER_CLICKHOUSE_TTL,
            }
            lines = []
            for problem in text.split("; "):
                variable = next((name for key, name in names.items() if problem.startswith(key + " ")), "")
                lines.append(f"{variable}: {problem}" if variable else problem)
            return lines
        return []


def _available_compressions() -> tuple[str, ...]:
    from clickhouse_connect.driver.compression import available_compression

    return tuple(available_compression)


class _Reader:
    """Reads one setting at a time: an override wins over the variable; bad text becomes a problem."""

    def __init__(self, environ: Mapping[str, str], overrides: Mapping[str, Any]) -> None:
        self.environ = environ
        self.overrides = dict(overrides)
        self.problems: list[str] = []

    def _raw(self, key: str, variable: str | None) -> tuple[Any, str]:
        """(value or None, label for messages)."""
        if key in self.overrides:
            return self.overrides.pop(key), f"{key}="
        if variable is None:
            return None, ""
        value = self.environ.get(variable)
        if value is None or not value.strip():
            return None, variable
        return value, variable

    def text(self, key: str, variable: str | None, default: str, *, strip: bool = True) -> str:
        value, _ = self._raw(key, variable)
        if value is None:
            return default
        text = str(value)
        return text.strip() if strip else text

    def flag(self, key: str, variable: str, default: bool) -> bool:
        value, label = self._raw(key, variable)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        self.problems.append(f"{label}: {value!r} is not true or false")
        return default

    def duration(self, key: str, variable: str, default: float) -> float:
        value, label = self._raw(key, variable)
        if value is None:
            return default
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as error:
            self.problems.append(f"{label}: {error}")
            return default

    def milliseconds(self, key: str, variable: str, default: float) -> float:
        value, label = self._raw(key, variable)
        if value is None:
            return default
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(str(value).strip()) / 1000.0
        except ValueError:
            # The SDK warns about its own variable; keep its default quietly.
            return default

    def size(self, key: str, variable: str, default: int, *, zero: str = "") -> int:
        """A byte size; ``zero``: what 0 means, told when the value is negative."""
        value, label = self._raw(key, variable)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value).strip()
        if text.startswith("-"):
            self.problems.append(f"{label}: {text!r} is negative" + (f" (0 {zero})" if zero else ""))
            return default
        try:
            return parse_size(text)
        except ValueError as error:
            self.problems.append(f"{label}: {error}")
            return default

    def count(self, key: str, variable: str, default: int) -> int:
        value, label = self._raw(key, variable)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value).strip().replace("_", "")
        if not text.isdigit():
            self.problems.append(f"{label}: {str(value).strip()!r} is not a whole number")
            return default
        return int(text)

    def finish(self) -> list[str]:
        for key in sorted(self.overrides):
            self.problems.append(f"{key}=: not a setting of the ClickHouse exporter")
        return self.problems
