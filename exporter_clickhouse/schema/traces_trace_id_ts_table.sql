-- <traces>_trace_id_ts: first and last second of each trace, so a trace lookup reads one
-- time window of otel_traces instead of every partition (Grafana uses it when it exists).
-- The Collector's internal/sqltemplates/traces_id_ts_lookup_table.sql; its engine is the
-- configured one turned Aggregating (see lookup_engine() in schema.py).
CREATE TABLE IF NOT EXISTS ${database}.${trace_id_ts_table} ${on_cluster} (
    TraceId String CODEC(ZSTD(1)),
    Start SimpleAggregateFunction(min, DateTime) CODEC(ZSTD(1)),
    End SimpleAggregateFunction(max, DateTime) CODEC(ZSTD(1))
) ENGINE = ${engine}
PARTITION BY toStartOfWeek(Start)
ORDER BY (TraceId)
${ttl}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
