-- llm_usage_daily: per day, service, provider, model, operation and agent: calls, errors,
-- token and cost sums and a duration digest. Read it with sum() over the Simple columns and
-- quantileTDigestMerge(level)(DurationDigest) / quantilesTDigestMerge(...)(DurationDigest),
-- grouped by the key (rows of one key merge only eventually).
-- Cost sums the calls that had a cost; PricedCalls counts them, so Calls - PricedCalls calls
-- are unpriced and the cost is a lower bound when they differ.
CREATE TABLE IF NOT EXISTS ${database}.${llm_usage_daily_table} ${on_cluster} (
    Day Date CODEC(Delta(2), ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Provider LowCardinality(String) CODEC(ZSTD(1)),
    ResponseModel LowCardinality(String) CODEC(ZSTD(1)),
    Operation LowCardinality(String) CODEC(ZSTD(1)),
    AgentName LowCardinality(String) CODEC(ZSTD(1)),
    Calls SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
    Errors SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
    PricedCalls SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
    InputTokens SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
    OutputTokens SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
    CacheReadTokens SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
    CacheCreationTokens SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
    ReasoningTokens SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
    Cost SimpleAggregateFunction(sum, Decimal128(12)) CODEC(ZSTD(1)),
    DurationSum SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
    DurationDigest AggregateFunction(quantileTDigest, UInt64) CODEC(ZSTD(1))
) ENGINE = ${engine}
PARTITION BY toYYYYMM(Day)
ORDER BY (Day, ServiceName, Provider, ResponseModel, Operation, AgentName)
${ttl}
SETTINGS index_granularity = 8192
