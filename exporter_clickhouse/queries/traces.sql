-- llmtel traces: the newest root spans, with their trace's LLM totals (from llm_calls, model
-- operations only, so agent and tool rows add nothing twice) and error spans (from the traces
-- table). Spans of a trace start no earlier than its root, which bounds both lookups.
-- priced_calls: how many of those calls had a cost (none: the cost is unknown, not 0).
WITH roots AS (
    SELECT TraceId, SpanId, SpanName, ServiceName, Timestamp, Duration, StatusCode,
           SpanAttributes['user.id'] AS UserId
    FROM ${database}.${traces_table}
    WHERE ParentSpanId = '' AND ${where}
    ORDER BY Timestamp DESC
    LIMIT {limit:UInt64}
)
SELECT
    roots.TraceId AS trace_id,
    roots.SpanName AS name,
    roots.ServiceName AS service,
    roots.UserId AS user_id,
    toUnixTimestamp64Nano(roots.Timestamp) AS start_ns,
    roots.Duration AS duration_ns,
    roots.StatusCode AS status,
    llm.calls AS llm_calls,
    llm.input_tokens AS input_tokens,
    llm.output_tokens AS output_tokens,
    llm.cost AS cost,
    llm.priced_calls AS priced_calls,
    spans.spans AS spans,
    spans.errors AS errors
FROM roots
LEFT JOIN (
    SELECT TraceId, count() AS calls, sum(InputTokens) AS input_tokens, sum(OutputTokens) AS output_tokens,
           sum(ifNull(Cost, 0)) AS cost, count(Cost) AS priced_calls
    FROM ${database}.${llm_calls_table}
    WHERE TraceId IN (SELECT TraceId FROM roots)
        AND Timestamp >= (SELECT min(Timestamp) FROM roots)
        AND Operation NOT IN ${agentic_operations}
    GROUP BY TraceId
) AS llm ON llm.TraceId = roots.TraceId
LEFT JOIN (
    SELECT TraceId, count() AS spans, countIf(StatusCode IN ('Error', 'STATUS_CODE_ERROR')) AS errors
    FROM ${database}.${traces_table}
    WHERE TraceId IN (SELECT TraceId FROM roots)
        AND Timestamp >= (SELECT min(Timestamp) FROM roots)
    GROUP BY TraceId
) AS spans ON spans.TraceId = roots.TraceId
ORDER BY roots.Timestamp DESC
SETTINGS join_use_nulls = 0
