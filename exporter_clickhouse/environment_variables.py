"""Environment variables read by llmtel's ClickHouse span exporter.

Named after the options of the OpenTelemetry Collector's ``clickhouseexporter`` (``endpoint`` →
``OTEL_EXPORTER_CLICKHOUSE_ENDPOINT``), with the Collector's defaults. They are read once, by
:meth:`llmtel.exporter_clickhouse.config.ExporterConfig.from_environment`; keyword arguments of
``ClickHouseSpanExporter(...)`` override them.
"""

OTEL_EXPORTER_CLICKHOUSE_ENDPOINT = "OTEL_EXPORTER_CLICKHOUSE_ENDPOINT"
"""
.. envvar:: OTEL_EXPORTER_CLICKHOUSE_ENDPOINT

Where spans go. ``http://host:8123`` or ``https://host:8443``: a ClickHouse server, over HTTP.
``clickhouse://host[:port]`` is read as HTTP too (llmtel speaks only HTTP): port 8123, or
``https`` on 8443 with ``?secure=true``; the native-protocol ports 9000/9440 and ``tcp://`` are
refused with a hint. ``user:password@`` in the URL is used when the username/password variables
are unset. ``chdb:///abs/path``: the embedded chDB store in that directory. Unset (the default):
the embedded store under ``$XDG_DATA_HOME/llmtel/store`` (``~/.local/share/llmtel/store``).
"""

OTEL_EXPORTER_CLICKHOUSE_DATABASE = "OTEL_EXPORTER_CLICKHOUSE_DATABASE"
"""
.. envvar:: OTEL_EXPORTER_CLICKHOUSE_DATABASE

Database of the tables. Default ``default``, as the Collector's.
"""

OTEL_EXPORTER_CLICKHOUSE_USERNAME = "OTEL_EXPORTER_CLICKHOUSE_USERNAME"
"""
.. envvar:: OTEL_EXPORTER_CLICKHOUSE_USERNAME

User for a server endpoint. Default: none (the server's ``default`` user).
"""

OTEL_EXPORTER_CLICKHOUSE_PASSWORD = "OTEL_EXPORTER_CLICKHOUSE_PASSWORD"
"""
.. envvar:: OTEL_EXPORTER_CLICKHOUSE_PASSWORD

Password for a server endpoint.
"""

OTEL_EXPORTER_CLICKHOUSE_TRACES_TABLE_NAME = "OTEL_EXPORTER_CLICKHOUSE_TRACES_TABLE_NAME"
"""
.. envvar:: OTEL_EXPORTER_CLICKHOUSE_TRACES_TABLE_NAME

The traces table. Default ``otel_traces``; the companion tables derive their names from it.
"""

OTEL_EXPORTER_CLICKHOUSE_TTL = "OTEL_EXPORTER_CLICKHOUSE_TTL"
"""
.. envvar:: OTEL_EXPORTER_CLICKHOUSE_TTL

How long ClickHouse keeps spans, as a Go duration (``72h``, ``90d``). ``0`` (default): forever.
Used only when the exporter creates the tables.
"""

OTEL_EXPORTER_CLICKHOUSE_CREATE_SCHEMA = "OTEL_EXPORTER_CLICKHOUSE_CREATE_SCHEMA"
"""
.. envvar:: OTEL_EXPORTER_CLICKHOUSE_CREATE_SCHEMA

``true`` (default): create the tables, views and LLM layer when missing, at the first export.
``false``: leave the schema to its owner (what the Collector recommends in production).
"""

OTEL_EXPORTER_CLICKHOUSE_CLUSTER_NAME = "OTEL_EXPORTER_CLICKHOUSE_CLUSTER_NAME"
"""
.. envvar:: OTEL_EXPORTER_CLICKHOUSE_CLUSTER_NAME

Adds ``ON CLUSTER <name>`` to the schema statements. Default: none.
"""

OTEL_EXPORTER_CLICKHOUSE_TABLE_ENGINE = "OTEL_EXPORTER_CLICKHOUSE_TABLE_ENGINE"
"""
.. envvar:: OTEL_EXPORTER_CLICKHOUSE_TABLE_ENGINE

Engine of the created tables, ``Name(params)``. Default ``MergeTree()``; e.g.
``ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')``.
"""

OTEL_EXPORTER_CLICKHOUSE_TIMEOUT = "OTEL_EXPORTER_CLICKHOUSE_TIMEOUT"
"""
.. envvar:: OTEL_EXPORTER_CLICKHOUSE_TIMEOUT

Time one attempt (connect, or one insert) may take, as a Go duration. Default ``5s``.
"""

OTEL_EXPORTER_CLICKHOUSE_COMPRESS = "OTEL_EXPORTER_CLICKHOUSE_COMPRESS"
"""
.. envvar:: OTEL_EXPORTER_CLICKHOUSE_COMPRESS

Compression of the inserts sent to a server: ``lz4`` (default), ``zstd``, ``gzip``, ``deflate``,
``br`` (needs ``brotli``), or ``none``. The embedded store takes its data uncompressed.
"""

OTEL_EXPORTER_CLICKHOUSE_RETRY_MAX_ELAPSED_TIME = "OTEL_EXPORTER_CLICKHOUSE_RETRY_MAX_ELAPSED_TIME"
"""
.. envvar:: OTEL_EXPORTER_CLICKHOUSE_RETRY_MAX_ELAPSED_TIME

How long the exporter keeps retrying an insert that failed for a passing reason (server down,
timeout, 5xx) before it backs off (probes at growing intervals, at most every 30 s; the batches
wait in the spool meanwhile), as a Go duration. Default ``10s``; never longer than
``OTEL_BSP_EXPORT_TIMEOUT``. ``0``: one attempt, then the backoff. Without a spool it bounds the
synchronous attempts of one ``export()``.
"""

OTEL_EXPORTER_CLICKHOUSE_SPOOL_DIR = "OTEL_EXPORTER_CLICKHOUSE_SPOOL_DIR"
"""
.. envvar:: OTEL_EXPORTER_CLICKHOUSE_SPOOL_DIR

Where batches wait on disk while the store cannot take them; each store and table gets its own
subdirectory. Default ``$XDG_DATA_HOME/llmtel/spool`` (``~/.local/share/llmtel/spool``).
"""

OTEL_EXPORTER_CLICKHOUSE_SPOOL_MAX_BYTES = "OTEL_EXPORTER_CLICKHOUSE_SPOOL_MAX_BYTES"
"""
.. envvar:: OTEL_EXPORTER_CLICKHOUSE_SPOOL_MAX_BYTES

Size cap of the spool (per store and table): bytes, or with a unit (``512MiB``, ``2GB``).
Default ``256MiB``. Past it the oldest batches are dropped and counted. ``0``: no spool (a batch
the store cannot take is dropped, with a warning).
"""

OTEL_EXPORTER_CLICKHOUSE_INSERT_MAX_ROWS = "OTEL_EXPORTER_CLICKHOUSE_INSERT_MAX_ROWS"
"""
.. envvar:: OTEL_EXPORTER_CLICKHOUSE_INSERT_MAX_ROWS

At most this many spans in one insert. The exporter's drain thread inserts the batches waiting
in the spool oldest first, several consecutive batches in one insert when they wait together
(ClickHouse pays a fixed cost per insert: its guidance is fewer, larger inserts of 10,000 to
100,000 rows). Default ``100000``. A batch larger than this is inserted alone. ``1``: one
batch per insert.
"""

OTEL_EXPORTER_CLICKHOUSE_INSERT_MAX_BYTES = "OTEL_EXPORTER_CLICKHOUSE_INSERT_MAX_BYTES"
"""
.. envvar:: OTEL_EXPORTER_CLICKHOUSE_INSERT_MAX_BYTES

At most this many bytes of encoded batches in one insert (see
``OTEL_EXPORTER_CLICKHOUSE_INSERT_MAX_ROWS``): bytes, or with a unit (``16MiB``). Default
``64MiB`` (the drain thread holds one insert in memory).
"""

OTEL_EXPORTER_CLICKHOUSE_INSERT_INTERVAL = "OTEL_EXPORTER_CLICKHOUSE_INSERT_INTERVAL"
"""
.. envvar:: OTEL_EXPORTER_CLICKHOUSE_INSERT_INTERVAL

The least time between the starts of two inserts while less than a full insert (see
``OTEL_EXPORTER_CLICKHOUSE_INSERT_MAX_ROWS``) waits, as a Go duration: the batches exported
meanwhile go into the next insert together, as ClickHouse recommends (about one insert a
second). Default ``1s``. A batch exported after a quiet spell is inserted at once, and
``force_flush()``/``shutdown()`` do not wait. ``0``: insert whenever batches wait.
"""
