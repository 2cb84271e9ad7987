-- llmtel stats from llm_calls: one row per group (or one row in all) of the calls that match.
-- ${group_columns} and ${group_by} name allow-listed columns only (cli.GROUP_KEYS); ${where}
-- joins fixed fragments whose values are query parameters. Latency uses the same t-digest as
-- llm_usage_daily, so the two sources give the same percentiles for the same calls.
SELECT
    ${group_columns}
    count() AS calls,
    countIf(StatusCode IN ('Error', 'STATUS_CODE_ERROR')) AS errors,
    sum(InputTokens) AS input_tokens,
    sum(OutputTokens) AS output_tokens,
    sum(CacheReadTokens) AS cached_tokens,
    sum(ifNull(Cost, 0)) AS cost,
    count() - count(Cost) AS unpriced_calls,
    quantilesTDigest(0.5, 0.95, 0.99)(Duration) AS latency_ns
FROM ${database}.${llm_calls_table}
WHERE ${where}
${group_by}
ORDER BY ${order_by}
