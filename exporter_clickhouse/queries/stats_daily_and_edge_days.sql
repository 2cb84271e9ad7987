-- llmtel stats over a window a time cuts (--since 30d starts mid-day): its whole days from the
-- llm_usage_daily rollup, the day(s) the bounds cut from llm_calls (${calls_where} keeps only
-- those days' rows), merged. The same columns as stats_calls.sql; counts, tokens and cost are
-- exact sums of both parts, and the latency digests merge (the rollup's state and one built
-- from the edge rows are the same quantileTDigest state).
-- The parts' columns are named part_* apart from the totals: ClickHouse resolves a name to a
-- SELECT alias before a column, so `sum(calls) AS calls` would refer to itself.
-- ${daily_group_columns} / ${calls_group_columns} are `expression AS alias,` from cli.GROUP_KEYS,
-- ${group_columns} and ${group_by} those aliases.
SELECT
    ${group_columns}
    sum(part_calls) AS calls,
    sum(part_errors) AS errors,
    sum(part_input_tokens) AS input_tokens,
    sum(part_output_tokens) AS output_tokens,
    sum(part_cached_tokens) AS cached_tokens,
    sum(part_cost) AS cost,
    sum(part_calls) - sum(part_priced_calls) AS unpriced_calls,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(part_latency) AS latency_ns
FROM (
    SELECT
        ${daily_group_columns}
        sum(Calls) AS part_calls,
        sum(Errors) AS part_errors,
        sum(InputTokens) AS part_input_tokens,
        sum(OutputTokens) AS part_output_tokens,
        sum(CacheReadTokens) AS part_cached_tokens,
        sum(Cost) AS part_cost,
        sum(PricedCalls) AS part_priced_calls,
        quantileTDigestMergeState(DurationDigest) AS part_latency
    FROM ${database}.${llm_usage_daily_table}
    WHERE ${daily_where}
    ${group_by}
    UNION ALL
    SELECT
        ${calls_group_columns}
        count() AS part_calls,
        countIf(StatusCode IN ('Error', 'STATUS_CODE_ERROR')) AS part_errors,
        sum(InputTokens) AS part_input_tokens,
        sum(OutputTokens) AS part_output_tokens,
        sum(CacheReadTokens) AS part_cached_tokens,
        toDecimal128(sum(ifNull(Cost, 0)), 12) AS part_cost,
        count(Cost) AS part_priced_calls,
        quantileTDigestState(Duration) AS part_latency
    FROM ${database}.${llm_calls_table}
    WHERE ${calls_where}
    ${group_by}
)
${group_by}
HAVING calls > 0
ORDER BY ${order_by}
