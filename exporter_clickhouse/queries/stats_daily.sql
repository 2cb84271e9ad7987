-- llmtel stats from the llm_usage_daily rollup, when the question only needs its keys (Day,
-- ServiceName, Provider, ResponseModel, Operation, AgentName) and whole days: the same columns
-- as stats_calls.sql. Rows of one key merge eventually, hence sum() over them.
SELECT
    ${group_columns}
    sum(Calls) AS calls,
    sum(Errors) AS errors,
    sum(InputTokens) AS input_tokens,
    sum(OutputTokens) AS output_tokens,
    sum(CacheReadTokens) AS cached_tokens,
    sum(Cost) AS cost,
    sum(Calls) - sum(PricedCalls) AS unpriced_calls,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(DurationDigest) AS latency_ns
FROM ${database}.${llm_usage_daily_table}
WHERE ${where}
${group_by}
HAVING calls > 0
ORDER BY ${order_by}
