-- llmtel calls: individual rows of llm_calls, ordered by an allow-listed expression.
SELECT
    toUnixTimestamp64Nano(Timestamp) AS start_ns,
    TraceId AS trace_id,
    SpanId AS span_id,
    ServiceName AS service,
    Operation AS operation,
    ResponseModel AS model,
    AgentName AS agent,
    ToolName AS tool,
    UserId AS user_id,
    StatusCode AS status,
    ErrorType AS error_type,
    Duration AS duration_ns,
    InputTokens AS input_tokens,
    OutputTokens AS output_tokens,
    CacheReadTokens AS cached_tokens,
    Cost AS cost
FROM ${database}.${llm_calls_table}
WHERE ${where}
ORDER BY ${order_by}
LIMIT {limit:UInt64}
