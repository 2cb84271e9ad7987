-- Fills llm_usage_daily from llm_calls (so a backfill into llm_calls reaches it too).
-- Columns are read as calls.X: the result aliases reuse the column names, and an unqualified
-- Cost inside count() would resolve to the Cost sum defined below it.
-- 'STATUS_CODE_ERROR' is how Collectors before v0.109 wrote an error status.
CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.${llm_usage_daily_mv} ${on_cluster}
TO ${database}.${llm_usage_daily_table}
AS SELECT
    toDate(calls.Timestamp) AS Day,
    calls.ServiceName AS ServiceName,
    calls.Provider AS Provider,
    calls.ResponseModel AS ResponseModel,
    calls.Operation AS Operation,
    calls.AgentName AS AgentName,
    count() AS Calls,
    countIf(calls.StatusCode IN ('Error', 'STATUS_CODE_ERROR')) AS Errors,
    count(calls.Cost) AS PricedCalls,
    sum(calls.InputTokens) AS InputTokens,
    sum(calls.OutputTokens) AS OutputTokens,
    sum(calls.CacheReadTokens) AS CacheReadTokens,
    sum(calls.CacheCreationTokens) AS CacheCreationTokens,
    sum(calls.ReasoningTokens) AS ReasoningTokens,
    toDecimal128(sum(ifNull(calls.Cost, 0)), 12) AS Cost,
    sum(calls.Duration) AS DurationSum,
    quantileTDigestState(calls.Duration) AS DurationDigest
FROM ${database}.${llm_calls_table} AS calls
GROUP BY Day, ServiceName, Provider, ResponseModel, Operation, AgentName
