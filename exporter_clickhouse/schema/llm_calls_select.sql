-- The one mapping from a stored span to an llm_calls row, shared by llm_calls_mv.sql and
-- llm_calls_backfill.sql (included as ${llm_calls_select}).
-- Every attribute arrives as a string, the way the Collector stringifies pdata values
-- (AsString): ints as decimal text, doubles as Go float text (0.000015 or 1.5e-05 — both
-- parse), bools as true/false, arrays as JSON (["stop"]). A missing key reads as ''.
SELECT
    Timestamp,
    TraceId,
    SpanId,
    ParentSpanId,
    ServiceName,
    SpanName,
    SpanAttributes['gen_ai.operation.name'] AS Operation,
    -- gen_ai.system is the name older instrumentations (and semconv < 1.37) use.
    if(SpanAttributes['gen_ai.provider.name'] != '',
       SpanAttributes['gen_ai.provider.name'], SpanAttributes['gen_ai.system']) AS Provider,
    SpanAttributes['gen_ai.request.model'] AS RequestModel,
    -- The model that served the call, which is what it is priced on; a span without a
    -- response (an error, a stream cut short) falls back to the model that was asked for.
    if(SpanAttributes['gen_ai.response.model'] != '',
       SpanAttributes['gen_ai.response.model'], SpanAttributes['gen_ai.request.model']) AS ResponseModel,
    SpanAttributes['gen_ai.agent.name'] AS AgentName,
    SpanAttributes['gen_ai.tool.name'] AS ToolName,
    SpanAttributes['user.id'] AS UserId,
    SpanAttributes['session.id'] AS SessionId,
    SpanAttributes['gen_ai.conversation.id'] AS ConversationId,
    -- A string-array attribute arrives as a JSON array; a plain string (another
    -- instrumentation's choice) becomes a one-element array.
    if(startsWith(SpanAttributes['llmtel.tags'], '['),
       JSONExtract(SpanAttributes['llmtel.tags'], 'Array(String)'),
       if(SpanAttributes['llmtel.tags'] = '', [], [SpanAttributes['llmtel.tags']])) AS Tags,
    StatusCode,
    SpanAttributes['error.type'] AS ErrorType,
    Duration,
    -- prompt_tokens / completion_tokens: the names of semconv before 1.27, still sent by some.
    toUInt64OrZero(if(mapContains(SpanAttributes, 'gen_ai.usage.input_tokens'),
       SpanAttributes['gen_ai.usage.input_tokens'], SpanAttributes['gen_ai.usage.prompt_tokens'])) AS InputTokens,
    toUInt64OrZero(if(mapContains(SpanAttributes, 'gen_ai.usage.output_tokens'),
       SpanAttributes['gen_ai.usage.output_tokens'], SpanAttributes['gen_ai.usage.completion_tokens'])) AS OutputTokens,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.cache_read.input_tokens']) AS CacheReadTokens,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.cache_creation.input_tokens']) AS CacheCreationTokens,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.reasoning.output_tokens']) AS ReasoningTokens,
    -- NULL when the span has no cost (a model missing from the price table): unknown, not 0.
    toDecimal64OrNull(SpanAttributes['gen_ai.usage.cost'], 12) AS Cost,
    toFloat64OrNull(SpanAttributes['gen_ai.response.time_to_first_chunk']) AS TimeToFirstChunk,
    if(startsWith(SpanAttributes['gen_ai.response.finish_reasons'], '['),
       JSONExtract(SpanAttributes['gen_ai.response.finish_reasons'], 'Array(String)'),
       if(SpanAttributes['gen_ai.response.finish_reasons'] = '', [],
          [SpanAttributes['gen_ai.response.finish_reasons']])) AS FinishReasons
FROM ${database}.${traces_table}
WHERE SpanAttributes['gen_ai.operation.name'] != ''
