"""The chDB-backed ClickHouse HTTP endpoint (tests/clickhouse_http.py), driven through the real
clickhouse-connect HTTP client: what the exporter and the CLI will rely on when they talk to it."""

from __future__ import annotations

import base64
import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import Request, urlopen

import clickhouse_connect
import pytest
from clickhouse_connect.datatypes.registry import get_from_name
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from clickhouse_http import ChdbHttpEndpoint, make_chdb_http_fixture

USER = "llmtel"
# A colon (Basic auth splits at the first one), quotes and non-ASCII.
PASSWORD = "pa:ss w'o\"rd-é"
SPANS = 20_000  # enough for several insert blocks, so lz4 and zstd bodies are several frames
UINT64 = get_from_name("UInt64")

endpoint = make_chdb_http_fixture(name="endpoint", scope="module", username=USER, password=PASSWORD)


@pytest.fixture(autouse=True)
def _no_faults(endpoint: ChdbHttpEndpoint) -> None:
    endpoint.reset()


@pytest.fixture(scope="module")
def client(endpoint: ChdbHttpEndpoint) -> Client:
    return clickhouse_connect.get_client(**endpoint.client_kwargs(), compress=False)


def _get(endpoint: ChdbHttpEndpoint, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    """A plain HTTP GET, for what clickhouse-connect does not show (statuses, headers)."""
    request = Request(endpoint.url + path, headers=headers or {})
    try:
        with urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _auth_headers() -> dict[str, str]:
    return {"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD}


# -- an otel_traces-like table ------------------------------------------------------------------------

SPANS_TABLE = """
CREATE TABLE {name} (
    Timestamp DateTime64(9),
    TraceId String,
    SpanId String,
    SpanName LowCardinality(String),
    ServiceName LowCardinality(String),
    ResourceAttributes Map(LowCardinality(String), String),
    SpanAttributes Map(LowCardinality(String), String),
    Duration UInt64,
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    )
) ENGINE = MergeTree ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
"""

SPAN_COLUMNS = [
    "Timestamp",
    "TraceId",
    "SpanId",
    "SpanName",
    "ServiceName",
    "ResourceAttributes",
    "SpanAttributes",
    "Duration",
    "Events.Timestamp",
    "Events.Name",
    "Events.Attributes",
]

# Order-independent sums the engine and Python both compute: CRC32 is zlib.crc32.
CHECKSUM_SQL = """
SELECT
    count(),
    sum(toUnixTimestamp64Nano(Timestamp) % 1000003),
    sum(CRC32(TraceId) + CRC32(SpanId) + CRC32(SpanName) + CRC32(ServiceName)),
    sum(arraySum(arrayMap((k, v) -> CRC32(k) * 3 + CRC32(v),
        mapKeys(ResourceAttributes), mapValues(ResourceAttributes)))),
    sum(arraySum(arrayMap((k, v) -> CRC32(k) * 3 + CRC32(v),
        mapKeys(SpanAttributes), mapValues(SpanAttributes)))),
    sum(Duration),
    sum(arraySum(arrayMap(t -> toUnixTimestamp64Nano(t) % 1000003, `Events.Timestamp`))),
    sum(arraySum(arrayMap(n -> CRC32(n), `Events.Name`))),
    sum(arraySum(arrayMap(
        m -> arraySum(arrayMap((k, v) -> CRC32(k) * 3 + CRC32(v), mapKeys(m), mapValues(m))), `Events.Attributes`
    )))
FROM {name}
"""


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


def _map_sum(mapping: dict[str, str]) -> int:
    return sum(_crc(k) * 3 + _crc(v) for k, v in mapping.items())


def _checksum(columns: list[list[Any]]) -> list[int]:
    ts, trace, span, name, service, resource, attrs, duration, ev_ts, ev_name, ev_attrs = columns
    return [
        len(ts),
        sum(t % 1000003 for t in ts),
        sum(_crc(a) + _crc(b) + _crc(c) + _crc(d) for a, b, c, d in zip(trace, span, name, service, strict=True)),
        sum(map(_map_sum, resource)),
        sum(map(_map_sum, attrs)),
        sum(duration),
        sum(t % 1000003 for row in ev_ts for t in row),
        sum(_crc(n) for row in ev_name for n in row),
        sum(_map_sum(m) for row in ev_attrs for m in row),
    ]


@pytest.fixture(scope="module")
def spans() -> list[list[Any]]:
    """Column-oriented span rows; attribute values carry quotes, backslashes, tabs, newlines, non-ASCII."""
    base = 1_760_000_000_123_456_789
    columns: list[list[Any]] = [[] for _ in SPAN_COLUMNS]
    for i in range(SPANS):
        ts = base + i * 1_000_003
        events = i % 3
        row = [
            ts,
            f"{i // 7:032x}",
            f"{i:016x}",
            ("chat gpt-4o-mini", "embeddings text-embedding-3-small", "execute_tool search")[i % 3],
            f"service-{i % 4}",
            {"service.name": f"service-{i % 4}", "host.name": "host\t1", "telemetry.sdk.language": "python"},
            {
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": str(i % 1000),
                "gen_ai.prompt": f"it's a \\ back\\slash,\nnew line, tab\t, ünïcødé 😀 #{i}",
            },
            i * 17 % 100_000,
            [ts + k for k in range(events)],
            ["gen_ai.choice" if k else "gen_ai.user.message" for k in range(events)],
            [{"index": str(k), "content": f"part {k} of {i}"} for k in range(events)],
        ]
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


def _checksum_of(endpoint: ChdbHttpEndpoint, table: str) -> list[int]:
    return [int(value) for value in endpoint.query(CHECKSUM_SQL.format(name=table)).split()]


# -- the handshake, commands and queries ----------------------------------------------------------------


def test_get_client_handshake_and_ping(endpoint: ChdbHttpEndpoint) -> None:
    client = clickhouse_connect.get_client(**endpoint.client_kwargs())
    assert client.server_version == endpoint.query("SELECT version()").strip()
    handshake = [record["statement"] for record in endpoint.requests()]
    assert handshake[0] == "SELECT version(), timezone()"
    assert any("FROM system.settings" in statement for statement in handshake)
    assert client.ping()
    assert _get(endpoint, "/ping")[::2] == (200, b"Ok.\n")
    assert _get(endpoint, "/")[::2] == (200, b"Ok.\n")


def test_command_results_and_summaries(client: Client) -> None:
    assert client.command("SELECT 1") == 1
    assert client.command("SELECT 'a', 2") == ["a", "2"]
    # A statement that returns rows says so even with none (X-ClickHouse-Format); DDL returns a summary.
    assert client.command("SELECT 1 WHERE 0") == ""
    summary = client.command("CREATE TABLE IF NOT EXISTS plain (n UInt64) ENGINE = MergeTree ORDER BY n")
    assert summary.written_rows == 0
    summary = client.command("INSERT INTO plain VALUES (1), (2), (3)")
    assert summary.written_rows == 3
    assert client.query("SELECT sum(n) FROM plain").result_rows == [(6,)]
    assert client.query_arrow("SELECT number FROM numbers(4)").column(0).to_pylist() == [0, 1, 2, 3]


@pytest.mark.parametrize("form_encoded", [False, True], ids=["url", "multipart"])
def test_server_side_parameters_round_trip(endpoint: ChdbHttpEndpoint, form_encoded: bool) -> None:
    values = {
        "quote": 'it\'s "quoted"',
        "backslash": "C:\\path\\to\\file \\n not a newline",
        "control": "tab\there\nnew line\r\x00nul",
        "unicode": "ünïcødé 日本語 😀",
        "empty": "",
        "braces": "{not:String} %(x)s",
    }
    sql = "SELECT " + ", ".join(f"{{{name}:String}}" for name in values) + ", {items:Array(String)}"
    client = clickhouse_connect.get_client(
        **endpoint.client_kwargs(), compress=False, form_encode_query_params=form_encoded
    )
    rows = client.query(sql, parameters={**values, "items": ["a'b", "c\\d"]}).result_rows
    assert rows == [(*values.values(), ["a'b", "c\\d"])]
    assert endpoint.requests()[-1]["content_type"].startswith("multipart/form-data") is form_encoded


def test_query_settings_apply_to_that_query_only(client: Client) -> None:
    default = client.command("SELECT getSetting('max_block_size')")
    assert client.command("SELECT getSetting('max_block_size')", settings={"max_block_size": 1234}) == 1234
    assert client.command("SELECT getSetting('max_block_size')") == default != 1234
    with pytest.raises(DatabaseError) as raised:
        client.command("SELECT 1", settings={"no_such_setting": 1})
    assert raised.value.code == 115
    assert "Unknown setting" in str(raised.value)


def test_database_parameter(endpoint: ChdbHttpEndpoint, client: Client) -> None:
    client.command("CREATE DATABASE IF NOT EXISTS other")
    other = clickhouse_connect.get_client(**endpoint.client_kwargs(), database="other", compress=False)
    assert other.command("SELECT currentDatabase()") == "other"
    other.command("CREATE TABLE IF NOT EXISTS here (n UInt8) ENGINE = Memory")
    assert client.command("SELECT currentDatabase()") == "default"
    assert client.command("EXISTS TABLE other.here") == 1
    assert client.command("EXISTS TABLE here") == 0


# -- inserts ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", ["lz4", "zstd", "gzip", False], ids=["lz4", "zstd", "gzip", "none"])
def test_insert_spans_stores_every_row(
    endpoint: ChdbHttpEndpoint, spans: list[list[Any]], compress: str | bool
) -> None:
    table = f"spans_{compress or 'none'}"
    client = clickhouse_connect.get_client(**endpoint.client_kwargs(), compress=compress)
    client.command(SPANS_TABLE.format(name=table))

    summary = client.insert(table, spans, column_names=SPAN_COLUMNS, column_oriented=True)

    assert summary.written_rows == SPANS
    assert _checksum_of(endpoint, table) == _checksum(spans)
    insert = next(record for record in endpoint.requests() if record["statement"].startswith("INSERT"))
    assert insert["written_rows"] == SPANS
    assert insert["content_encoding"] == (compress or "")
    if compress in ("lz4", "zstd"):
        # One frame per insert block: the endpoint must read past the first.
        assert insert["frames"] > 1

    # Maps, LowCardinality and Nested come back as inserted, through a compressed answer too.
    picked = [0, 1, 2, 4999, SPANS - 1]
    rows = client.query(
        f"SELECT SpanId, SpanName, SpanAttributes, ResourceAttributes, arrayMap(t -> toUnixTimestamp64Nano(t),"
        f" `Events.Timestamp`), `Events.Name`, `Events.Attributes` FROM {table} WHERE SpanId IN {{ids:Array(String)}}"
        " ORDER BY SpanId",
        parameters={"ids": [spans[2][i] for i in picked]},
    ).result_rows
    columns = (2, 3, 6, 5, 8, 9, 10)
    assert rows == [tuple(spans[c][i] for c in columns) for i in picked]
    if compress:
        assert endpoint.requests()[-1]["response_encoding"] == compress


def test_insert_deduplication_token(client: Client) -> None:
    client.command(
        "CREATE TABLE dedup (n UInt64) ENGINE = MergeTree ORDER BY n SETTINGS non_replicated_deduplication_window = 100"
    )

    def insert(values: list[int], token: str) -> None:
        rows = [[value] for value in values]
        client.insert("dedup", rows, column_names=["n"], settings={"insert_deduplication_token": token})

    insert([1, 2, 3], "batch-1")
    insert([4, 5, 6], "batch-1")  # a retry of batch-1 (whatever its data): dropped
    insert([1, 2, 3], "batch-2")  # the same data under another token: kept
    assert client.query("SELECT n FROM dedup ORDER BY n").result_columns == [[1, 1, 2, 2, 3, 3]]


def test_statement_in_the_url_and_data_in_the_body(client: Client) -> None:
    client.command("CREATE TABLE raw (n UInt64, s String) ENGINE = MergeTree ORDER BY n")
    # Compressed raw data: clickhouse-connect sends the INSERT in `query=` and only the data in the body.
    client.raw_insert("raw", ["n", "s"], gzip.compress(b'1,"one"\n2,"two"\n'), fmt="CSV", compression="gzip")
    # A command with data: the statement in `query=`, uncompressed data in the body.
    client.command("INSERT INTO raw FORMAT TabSeparated", data="3\tthree\n")
    assert client.query("SELECT n, s FROM raw ORDER BY n").result_rows == [(1, "one"), (2, "two"), (3, "three")]


# -- errors and authentication ------------------------------------------------------------------------------


def test_errors_carry_the_engine_text_code_and_status(endpoint: ChdbHttpEndpoint, client: Client) -> None:
    with pytest.raises(DatabaseError) as raised:
        client.query("SELECT no_such_function()")
    assert raised.value.code == 46
    assert "Function with name `no_such_function` does not exist" in str(raised.value)
    assert "(UNKNOWN_FUNCTION)" in str(raised.value)

    with pytest.raises(DatabaseError) as raised:
        client.insert("missing", [[1]], column_names=["n"], column_types=[UINT64])
    assert raised.value.code == 60

    # Bad data fails the insert mid-stream; the connection stays usable.
    client.command("CREATE TABLE typed (n UInt64) ENGINE = MergeTree ORDER BY n")
    with pytest.raises(DatabaseError) as raised:
        client.raw_insert("typed", ["n"], b"1\nnot a number\n", fmt="CSV")
    assert raised.value.code is not None
    assert client.command("SELECT count() FROM typed") == 0

    status, headers, body = _get(endpoint, "/?" + urlencode({"query": "SELECT * FROM missing"}), _auth_headers())
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (404, "60")
    assert body.startswith(b"Code: 60. DB::Exception: ") and b"(UNKNOWN_TABLE) (version " in body
    status, headers, _ = _get(endpoint, "/?" + urlencode({"query": "SELEC 1"}), _auth_headers())
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "62")


def test_get_is_read_only(endpoint: ChdbHttpEndpoint) -> None:
    assert _get(endpoint, "/?" + urlencode({"query": "SELECT 40 + 2"}), _auth_headers())[::2] == (200, b"42\n")
    status, headers, body = _get(
        endpoint, "/?" + urlencode({"query": "CREATE TABLE g (n UInt8) ENGINE = Memory"}), _auth_headers()
    )
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "164")
    assert b"readonly" in body
    assert endpoint.query("EXISTS TABLE g") == "0\n"


def test_authentication(endpoint: ChdbHttpEndpoint) -> None:
    kwargs = endpoint.client_kwargs()
    for wrong in ({**kwargs, "password": "wrong"}, {**kwargs, "password": ""}, {**kwargs, "username": "default"}):
        with pytest.raises(DatabaseError) as raised:
            clickhouse_connect.get_client(**wrong)
        assert raised.value.code == 516
        assert "Authentication failed" in str(raised.value)
    without = {key: value for key, value in kwargs.items() if key not in ("username", "password")}
    with pytest.raises(DatabaseError) as raised:
        clickhouse_connect.get_client(**without)
    assert raised.value.code == 516

    query = "/?" + urlencode({"query": "SELECT currentDatabase()"})
    assert _get(endpoint, query)[0] == 403
    assert _get(endpoint, query, _auth_headers())[::2] == (200, b"default\n")
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert _get(endpoint, query, {"Authorization": f"Basic {basic}"})[::2] == (200, b"default\n")
    assert _get(endpoint, query + "&" + urlencode({"user": USER, "password": PASSWORD}))[0] == 200
    status, _, body = _get(endpoint, query, {**_auth_headers(), "Authorization": f"Basic {basic}"})
    assert status == 403 and b"simultaneously" in body
    assert _get(endpoint, "/ping")[2] == b"Ok.\n"  # health checks need no credentials


# -- faults ---------------------------------------------------------------------------------------------------


def test_fail_next_answers_clickhouse_errors(endpoint: ChdbHttpEndpoint, client: Client) -> None:
    endpoint.faults(fail_next=2)
    for _ in range(2):
        with pytest.raises(DatabaseError) as raised:
            client.command("SELECT 1")
        assert not isinstance(raised.value, OperationalError)
        assert raised.value.code == 252 and "TOO_MANY_PARTS" in str(raised.value)
    assert client.command("SELECT 1") == 1

    # Only this query gets through: the test's own view skips faults.
    endpoint.faults(fail_next=1, status=503)
    assert endpoint.query("SELECT 1") == "1\n"
    # 503 is retryable for a read-only query: clickhouse-connect tries again and succeeds.
    assert client.query("SELECT 2").result_rows == [(2,)]
    assert [record["status"] for record in endpoint.requests()[-2:]] == [503, 200]

    client.command("CREATE TABLE IF NOT EXISTS faulty (n UInt64) ENGINE = MergeTree ORDER BY n")
    endpoint.faults(fail_next=1, status=503)
    with pytest.raises(OperationalError) as raised:
        # Column types given: no DESCRIBE first, the fault hits the insert, which the client does not retry.
        client.insert("faulty", [[1]], column_names=["n"], column_types=[UINT64])
    assert raised.value.code == 439

    endpoint.faults(fail_next=1, status=502, code=0)
    with pytest.raises(DatabaseError, match="HTTP status 502"):
        client.command("SELECT 1")


def test_drop_next_closes_the_connection(endpoint: ChdbHttpEndpoint, client: Client) -> None:
    client.command("CREATE TABLE IF NOT EXISTS dropped (n UInt64) ENGINE = MergeTree ORDER BY n")

    def insert() -> int:
        return client.insert("dropped", [[1], [2]], column_names=["n"], column_types=[UINT64]).written_rows

    # clickhouse-connect 1.12 replays an insert once after the server closes the connection.
    endpoint.faults(drop_next=2)
    with pytest.raises(OperationalError):
        insert()
    assert [record["fault"] for record in endpoint.requests()[-2:]] == ["drop", "drop"]
    assert endpoint.query("SELECT count() FROM dropped") == "0\n"

    endpoint.faults(drop_next=1)
    assert insert() == 2
    assert [record["fault"] for record in endpoint.requests()[-2:]] == ["drop", ""]
    assert endpoint.query("SELECT count() FROM dropped") == "2\n"

    endpoint.faults(drop_next=1)
    assert client.command("SELECT 3") == 3  # so is a read-only statement


def test_delay_beyond_the_client_timeout(endpoint: ChdbHttpEndpoint) -> None:
    impatient = clickhouse_connect.get_client(**endpoint.client_kwargs(), send_receive_timeout=1, compress=False)
    endpoint.faults(delay_seconds=1.5)
    with pytest.raises(OperationalError):
        impatient.command("SELECT 1")
    endpoint.faults()
    assert impatient.command("SELECT 1") == 1


@pytest.fixture
def _restarted_after(endpoint: ChdbHttpEndpoint) -> Iterator[None]:
    """Leaves the module's endpoint running for the next test, even when this one fails midway."""
    yield
    if not endpoint.running:
        endpoint.start()


@pytest.mark.usefixtures("_restarted_after")
def test_kill_and_restart_keep_the_data_and_the_port(endpoint: ChdbHttpEndpoint, client: Client) -> None:
    client.command("CREATE TABLE durable (n UInt64) ENGINE = MergeTree ORDER BY n")
    client.insert("durable", [[n] for n in range(100)], column_names=["n"])
    url = endpoint.url

    endpoint.kill()
    assert not endpoint.running
    with pytest.raises(OperationalError):
        client.command("SELECT 1")

    endpoint.restart()
    assert endpoint.url == url
    assert client.command("SELECT count(), sum(n) FROM durable") == ["100", "4950"]
    endpoint.restart()  # graceful this time
    assert client.insert("durable", [[100]], column_names=["n"]).written_rows == 1
    assert endpoint.query("SELECT count() FROM durable") == "101\n"


def test_controller_lifecycle(tmp_path: Path) -> None:
    """The context-manager form on a store of its own; a start that cannot work says why."""
    with ChdbHttpEndpoint(tmp_path / "store") as own:
        assert own.running and own.url == f"http://127.0.0.1:{own.port}"
        client = clickhouse_connect.get_client(**own.client_kwargs())  # user default, no password
        assert client.command("SELECT 1") == 1
        # The store is locked by the running server: a second one on it cannot start.
        with pytest.raises(RuntimeError, match="did not start(.|\n)*Another server instance"):
            ChdbHttpEndpoint(tmp_path / "store").start(timeout=20)
    assert not own.running
