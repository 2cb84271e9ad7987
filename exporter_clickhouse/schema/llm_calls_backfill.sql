-- Fills llm_calls (and through llm_usage_daily_mv the daily rollup) from spans stored before
-- the views existed, for Timestamp in [{start:DateTime64(9)}, {end:DateTime64(9)}).
-- Spans already in llm_calls for that window are skipped, so running it again, or over a
-- window the view has been filling, adds nothing twice.
INSERT INTO ${database}.${llm_calls_table}
${llm_calls_select}
    AND Timestamp >= {start:DateTime64(9)} AND Timestamp < {end:DateTime64(9)}
    AND (TraceId, SpanId) NOT IN (
        SELECT TraceId, SpanId FROM ${database}.${llm_calls_table}
        WHERE Timestamp >= {start:DateTime64(9)} AND Timestamp < {end:DateTime64(9)}
    )
