"""Reading the store: a clickhouse-connect client for an :class:`ExporterConfig`, and the CLI's queries.

``open_reader(config)`` is the one place that decides how the CLI reaches the store: the
embedded chDB store in this process, or a ClickHouse server over HTTP (the same
``OTEL_EXPORTER_CLICKHOUSE_*`` settings the exporter uses). When the embedded store is held by
another process (chDB opens a path in one process at a time), the CLI reads through the
``llmtel serve`` that owns it, found by its discovery file (``serve_discovery``); held by any
other process, it fails with one line naming the path.

The queries live in ``queries/*.sql``. Identifiers (database, tables, group-by columns, order
expressions) are filled in with ``string.Template`` from allow-lists and quoted names; every value
a user typed travels as a ClickHouse query parameter (``{name:Type}``), bound by the server.
"""

from __future__ import annotations

import dataclasses
import os
import string
from functools import cache
from importlib import resources
from typing import Any

from llmtel.exporter_clickhouse import environment_variables as env
from llmtel.exporter_clickhouse.config import ExporterConfig
from llmtel.exporter_clickhouse.schema import SchemaOptions, quote_identifier
from llmtel.exporter_clickhouse.serve_discovery import find_serve_endpoint
from llmtel.exporter_clickhouse.store import Store, StoreError, held_by_another_process

__all__ = ["READ_TIMEOUT", "ReadError", "StoreReader", "open_reader", "query_text"]

# Reads scan more than an insert sends: a longer wait than the exporter's 5 s default.
READ_TIMEOUT = 60.0
# ClickHouse error codes meaning "nothing exported here yet" (UNKNOWN_TABLE, UNKNOWN_DATABASE).
_MISSING_CODES = frozenset({60, 81})
_READONLY_CODE = 164


class ReadError(Exception):
    """A failure to reach or read the store; ``str()`` is one line. ``missing``: no such table/database."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


@cache
def _template(name: str) -> str:
    text = resources.files(__package__).joinpath("queries", name).read_text(encoding="utf-8")
    # Whole-line comments document the queries; they are not sent.
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))


def query_text(name: str, options: SchemaOptions, **fragments: str) -> str:
    """``queries/<name>`` with the store's quoted names and the given SQL ``fragments`` filled in.

    Fragments are SQL the CLI composes from allow-lists, never from user text.
    """
    names = {
        "database": quote_identifier(options.database),
        "traces_table": quote_identifier(options.traces_table),
        "trace_id_ts_table": quote_identifier(options.trace_id_ts_table),
        "llm_calls_table": quote_identifier(options.llm_calls_table),
        "llm_usage_daily_table": quote_identifier(options.llm_usage_daily_table),
        "on_cluster": options.on_cluster,
    }
    return string.Template(_template(name)).substitute({**names, **fragments}).strip()


class StoreReader:
    """An open client with the store's schema options; runs the CLI's queries."""

    def __init__(self, client: Any, options: SchemaOptions, where: str, kind: str, *, served_store: str = "") -> None:
        self.client = client
        self.options = options
        self.where = where  # the store, for messages
        self.kind = kind  # "embedded" or "server"
        self.served_store = served_store  # the embedded store, when read through the llmtel serve that owns it

    @property
    def server_version(self) -> str:
        return str(self.client.server_version)

    def rows(self, name: str, parameters: dict[str, Any] | None = None, **fragments: str) -> list[dict[str, Any]]:
        """The rows of ``queries/<name>`` as dicts, column name → value."""
        sql = query_text(name, self.options, **fragments)
        try:
            result = self.client.query(sql, parameters=parameters or {})
        except Exception as error:
            raise self._failure(error) from error
        return list(result.named_results())

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        try:
            return self.client.command(sql, parameters=parameters or {})
        except Exception as error:
            raise self._failure(error) from error

    def run(self, name: str, parameters: dict[str, Any] | None = None, **fragments: str) -> Any:
        """Run ``queries/<name>`` as a command (DDL, DELETE, INSERT)."""
        return self.command(query_text(name, self.options, **fragments), parameters)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing a broken connection: nothing left to release
            pass

    def _failure(self, error: Exception) -> ReadError:
        code = getattr(error, "code", None)
        text = _first_line(str(error))
        if code in _MISSING_CODES or "UNKNOWN_TABLE" in text or "UNKNOWN_DATABASE" in text:
            return ReadError(
                f"{self.where} has no llmtel tables in database {self.options.database!r} yet (nothing exported "
                f"there, or a different {env.OTEL_EXPORTER_CLICKHOUSE_DATABASE}); `llmtel schema apply` creates them",
                missing=True,
            )
        if self.served_store and (code == _READONLY_CODE or "(READONLY)" in text):
            return ReadError(
                f"llmtel serve owns {self.served_store} and lets clients only read: stop it and run this again "
                f"(the store is then opened here), or restart it with --allow-writes"
            )
        if "Connection refused" in text or "timed out" in text or type(error).__name__ == "OperationalError":
            return ReadError(f"lost {self.where}: {text}")
        return ReadError(f"query failed on {self.where}: {text}")


def open_reader(config: ExporterConfig, *, must_exist: bool = True) -> StoreReader:
    """A reader for the store ``config`` names; ``ReadError`` (one line) when it cannot be opened.

    Never creates tables: reading a store that has none is reported, not fixed behind the user's back.
    ``must_exist=False`` lets ``llmtel schema apply`` create an embedded store's directory.
    """
    problems = config.validate()
    if problems:
        raise ReadError(problems[0])
    endpoint = config.target()
    options = config.schema_options()
    config = dataclasses.replace(config, create_schema=False, timeout=max(config.timeout, READ_TIMEOUT))
    if endpoint.default_store:
        # Named explicitly, so the Store does not announce "storing spans in ..." to a reader.
        config = dataclasses.replace(config, endpoint=endpoint.url)
    where = f"{endpoint.url} ({options.database})"
    served_store = ""
    if endpoint.kind == "embedded":
        served = find_serve_endpoint(endpoint.path)
        if served is not None:
            # `llmtel serve` owns the store: ask it. Its URL carries its token as the password,
            # so the store's own username/password settings (for servers) must not replace it.
            config = dataclasses.replace(config, endpoint=served, username="", password="")
            served_store = endpoint.path
            endpoint = config.target()
            where = f"llmtel serve at {endpoint.url} for {served_store} ({options.database})"
    if endpoint.kind == "embedded":
        if must_exist and not os.path.isdir(endpoint.path):
            raise ReadError(
                f"no store at {endpoint.path}: nothing has been exported there yet "
                f"(set {env.OTEL_EXPORTER_CLICKHOUSE_ENDPOINT} or --endpoint to where the spans are)"
            )
        if held_by_another_process(endpoint.path):
            raise ReadError(_locked_message(endpoint.path))
    store = Store(config)
    try:
        store.connect()
    except StoreError as error:
        raise ReadError(str(error)) from error
    client = store.client  # the Store owns how a client is built (timeouts, compression, chDB path checks)
    if endpoint.kind == "server":
        # Long filter values (a pasted prompt) go in the request body, not a URL with a length limit.
        client.form_encode_query_params = True
    return StoreReader(client, options, where, endpoint.kind, served_store=served_store)


def _locked_message(path: str) -> str:
    return (
        f"the embedded store {path} is in use by another process (chDB opens a store in one process at a "
        f"time): stop that process and run `llmtel serve --store {path}` in its place (its applications "
        f"export to it over OTLP, and llmtel reads through it), or give llmtel a server's read endpoint "
        f"(--endpoint http://127.0.0.1:PORT, or {env.OTEL_EXPORTER_CLICKHOUSE_ENDPOINT})"
    )


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no details"
    return line if len(line) <= 500 else line[:497] + "..."

