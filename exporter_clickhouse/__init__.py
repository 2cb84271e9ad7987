"""A span exporter that writes into the OpenTelemetry Collector's ClickHouse tables.

Spans land in ``otel_traces`` exactly as the Collector's ``clickhouseexporter`` writes them, so
the Collector, Grafana, OpenLIT and llmtel's own LLM views (``llm_calls``, ``llm_usage_daily``)
can share the tables. With no endpoint, spans go to an embedded chDB store on local disk::

    OTEL_TRACES_EXPORTER=clickhouse opentelemetry-instrument python app.py

    OTEL_TRACES_EXPORTER=otlp,clickhouse \\
    OTEL_EXPORTER_CLICKHOUSE_ENDPOINT=https://ch.example:8443 \\
    OTEL_EXPORTER_CLICKHOUSE_USERNAME=otel OTEL_EXPORTER_CLICKHOUSE_PASSWORD=... \\
    opentelemetry-instrument python app.py

Or in code::

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from llmtel.exporter_clickhouse import ClickHouseSpanExporter

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(ClickHouseSpanExporter(endpoint="http://localhost:8123")))

The ``OTEL_EXPORTER_CLICKHOUSE_*`` variables (``environment_variables``) configure it; keyword
arguments override them. The exporter never blocks the application and never loses a batch it
accepted: ``export()`` puts the encoded batch in an on-disk spool and a drain thread inserts what
waits there, in order and exactly once, several batches per insert (also after a restart, and
whenever a store that was away comes back).

The way of a span: ``config`` (environment → ``ExporterConfig``) → ``columns`` (spans → Native
blocks) → ``spool`` (the on-disk queue) → ``store`` (clickhouse-connect, server or embedded;
``schema`` creates the tables), driven by ``exporter``; ``otlp_columns`` is ``llmtel serve``'s
way in (OTLP protobuf → the same Native blocks).
"""

from llmtel.exporter_clickhouse.config import ExporterConfig
from llmtel.exporter_clickhouse.exporter import ClickHouseSpanExporter
from llmtel.exporter_clickhouse.spool import SpoolDirectory

__all__ = ["ClickHouseSpanExporter", "ExporterConfig", "SpoolDirectory"]
