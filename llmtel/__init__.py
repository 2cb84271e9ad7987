"""llmtel: OpenTelemetry instrumentation for LLM applications, and a ClickHouse span exporter.

The two halves install as ``llmtel.instrumentation`` (from ``instrumentation/``) and
``llmtel.exporter_clickhouse`` (from ``exporter_clickhouse/``). They meet only through
OpenTelemetry.
"""

__version__ = "0.1.0"
