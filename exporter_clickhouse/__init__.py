"""Span exporter that writes into the OpenTelemetry Collector's ClickHouse tables (not built yet)."""
