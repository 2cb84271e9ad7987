-- llmtel trace: every span of one trace. The lookup table gives the trace's first and last
-- second; ClickHouse evaluates the scalar subqueries first, so the otel_traces scan is bounded
-- to those partitions and granules. End is a whole second: a span in its last second counts.
-- The bounds are made DateTime64(9) like Timestamp: ClickHouse 26.9 (chDB 4.4) answers nothing
-- for `TraceId = x AND Timestamp < <a DateTime>` when the text index on TraceId is used.
WITH
    (SELECT min(Start) FROM ${database}.${trace_id_ts_table} WHERE TraceId = {trace_id:String}) AS trace_start,
    (SELECT max(End) FROM ${database}.${trace_id_ts_table} WHERE TraceId = {trace_id:String}) AS trace_end
SELECT
    SpanId AS span_id,
    ParentSpanId AS parent_span_id,
    SpanName AS name,
    SpanKind AS kind,
    ServiceName AS service,
    toUnixTimestamp64Nano(Timestamp) AS start_ns,
    Duration AS duration_ns,
    StatusCode AS status,
    StatusMessage AS status_message,
    SpanAttributes['gen_ai.operation.name'] AS operation,
    if(SpanAttributes['gen_ai.response.model'] != '',
       SpanAttributes['gen_ai.response.model'], SpanAttributes['gen_ai.request.model']) AS model,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.input_tokens']) AS input_tokens,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.output_tokens']) AS output_tokens,
    toDecimal64OrNull(SpanAttributes['gen_ai.usage.cost'], 12) AS cost,
    SpanAttributes['error.type'] AS error_type
FROM ${database}.${traces_table}
WHERE TraceId = {trace_id:String}
    AND Timestamp >= toDateTime64(trace_start, 9)
    AND Timestamp < toDateTime64(trace_end + INTERVAL 1 SECOND, 9)
ORDER BY Timestamp, SpanId
