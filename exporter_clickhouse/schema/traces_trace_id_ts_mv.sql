-- Feeds <traces>_trace_id_ts from every insert into the traces table
-- (the Collector's internal/sqltemplates/traces_id_ts_lookup_mv.sql).
CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.${trace_id_ts_mv} ${on_cluster}
TO ${database}.${trace_id_ts_table}
AS SELECT
    TraceId,
    min(toDateTime(Timestamp)) AS Start,
    max(toDateTime(Timestamp)) AS End
FROM ${database}.${traces_table}
WHERE TraceId != ''
GROUP BY TraceId
