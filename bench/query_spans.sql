-- Synthetic LLM spans for bench/query.py: spans number {first}..{first}+{count}-1, 8 per trace,
-- shaped like llmtel's (attributes stringified as the Collector stores them), so llm_calls_mv,
-- llm_usage_daily_mv and the trace-id lookup view fill exactly as they do in production.
--
--   0 invoke_workflow <name>                  root, Internal
--   1 ├── invoke_agent triage                 Internal
--   2 │   ├── chat <model>                    Client, asks for a tool
--   3 │   ├── execute_tool <tool>             Internal
--   4 │   └── chat <model>                    Client
--   5 ├── embeddings text-embedding-3-small   Client
--   6 └── invoke_agent writer                 Internal
--   7     └── chat <model>                    Client, streamed
--
-- Traces start evenly over the window ({first_ns} + trace × {step_ns}); 5 services, 20 chat
-- models of 6 providers (one unpriced), 2% failed LLM calls, 5,000 users, 50,000 sessions.
INSERT INTO {database:Identifier}.{traces_table:Identifier}
    (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName, ResourceAttributes,
     ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage)
WITH
    ['support-bot', 'search-api', 'billing-assistant', 'code-review', 'onboarding'] AS services,
    ['support-request', 'answer-query', 'explain-invoice', 'review-diff', 'welcome-user'] AS workflows,
    ['gpt-4o', 'gpt-4o-mini', 'gpt-4.1', 'gpt-4.1-mini', 'gpt-4.1-nano', 'o3', 'o4-mini', 'gpt-5', 'gpt-5-mini',
     'gpt-5-nano', 'claude-sonnet-4-5', 'claude-haiku-4-5', 'claude-opus-4-1', 'gemini-2.5-pro', 'gemini-2.5-flash',
     'gemini-2.0-flash', 'mistral-large-latest', 'mistral-small-latest', 'deepseek-chat',
     'llama-3.3-70b-versatile'] AS models,
    ['openai', 'openai', 'openai', 'openai', 'openai', 'openai', 'openai', 'openai', 'openai', 'openai',
     'anthropic', 'anthropic', 'anthropic', 'gcp.gemini', 'gcp.gemini', 'gcp.gemini', 'mistral_ai', 'mistral_ai',
     'deepseek', 'groq'] AS providers,
    -- USD per million input / output tokens; -1: not in the price table, the span has no cost.
    [2.5, 0.15, 2.0, 0.4, 0.1, 2.0, 1.1, 1.25, 0.25, 0.05, 3.0, 1.0, 15.0, 1.25, 0.3, 0.1, 2.0, 0.1, 0.27, -1]
        AS input_prices,
    [10.0, 0.6, 8.0, 1.6, 0.4, 8.0, 4.4, 10.0, 2.0, 0.4, 15.0, 5.0, 75.0, 10.0, 2.5, 0.4, 6.0, 0.3, 1.1, -1]
        AS output_prices,
    ['lookup_order', 'search_docs', 'run_sql', 'get_invoice', 'fetch_diff', 'create_ticket'] AS tools,
    ['RateLimitError', 'APITimeoutError', 'InternalServerError', 'BadRequestError'] AS error_types,
    ['invoke_workflow', 'invoke_agent', 'chat', 'execute_tool', 'chat', 'embeddings', 'invoke_agent', 'chat']
        AS operations,
    [0, 1, 2, 2, 2, 1, 1, 7] AS parent_positions,  -- 1-based position of the parent; 0: the root
    -- Start offset of each position in the trace, and the span's typical length, in milliseconds.
    [0, 2, 4, 1500, 1510, 3100, 3400, 3402] AS offsets_ms,
    [6200, 3000, 1480, 8, 1580, 280, 2700, 2690] AS lengths_ms
SELECT
    fromUnixTimestamp64Nano(toInt64({first_ns:Int64} + trace * {step_ns:Int64} + offsets_ms[pos] * 1000000))
        AS Timestamp,
    lower(hex(MD5(concat('trace', toString(trace))))) AS TraceId,
    lower(hex(substring(MD5(toString(number)), 1, 8))) AS SpanId,
    if(parent_positions[pos] = 0, '',
       lower(hex(substring(MD5(toString(number - pos + parent_positions[pos])), 1, 8)))) AS ParentSpanId,
    '' AS TraceState,
    concat(operation, ' ', multiIf(pos = 1, workflows[service_index], operation = 'invoke_agent',
           if(pos = 2, 'triage', 'writer'), operation = 'execute_tool', tool, pos = 6, 'text-embedding-3-small',
           model)) AS SpanName,
    if(is_llm, 'Client', 'Internal') AS SpanKind,
    services[service_index] AS ServiceName,
    map('service.name', services[service_index], 'service.version', '1.4.2', 'deployment.environment.name',
        'production', 'host.name', concat('pod-', toString(trace % 40)), 'telemetry.sdk.language', 'python',
        'telemetry.sdk.name', 'opentelemetry', 'telemetry.sdk.version', '1.38.0') AS ResourceAttributes,
    if(is_llm, 'llmtel.instrumentation.openai', 'llmtel.instrumentation.api') AS ScopeName,
    '0.4.0' AS ScopeVersion,
    mapFilter((key, value) -> value != '', map(
        'gen_ai.operation.name', operation,
        'gen_ai.provider.name', if(is_llm, if(pos = 6, 'openai', providers[model_index]), ''),
        'gen_ai.request.model', if(is_llm, if(pos = 6, 'text-embedding-3-small', model), ''),
        'gen_ai.response.model', if(is_llm AND NOT failed, if(pos = 6, 'text-embedding-3-small', model), ''),
        'gen_ai.response.id', if(is_chat AND NOT failed, concat('chatcmpl-', SpanId), ''),
        'gen_ai.request.max_tokens', if(is_chat, '1024', ''),
        'gen_ai.request.stream', if(pos = 8, 'true', ''),
        'gen_ai.usage.input_tokens', if(is_llm AND NOT failed, toString(input_tokens), ''),
        'gen_ai.usage.output_tokens', if(is_chat AND NOT failed, toString(output_tokens), ''),
        'gen_ai.usage.cache_read.input_tokens', if(is_chat AND NOT failed AND cached_tokens > 0,
                                                   toString(cached_tokens), ''),
        'gen_ai.usage.cost', if(is_llm AND NOT failed AND (pos = 6 OR input_prices[model_index] >= 0),
                                toString(round(if(pos = 6, input_tokens * 0.02,
                                                  (input_tokens - cached_tokens) * input_prices[model_index]
                                                  + cached_tokens * input_prices[model_index] / 10
                                                  + output_tokens * output_prices[model_index]) / 1e6, 12)), ''),
        'gen_ai.response.finish_reasons', if(is_chat AND NOT failed, if(pos = 3, '["tool_calls"]', '["stop"]'), ''),
        'gen_ai.response.time_to_first_chunk', if(pos = 8 AND NOT failed, toString(round(0.2 + (hash % 700) / 1000, 3)), ''),
        'gen_ai.agent.name', multiIf(pos IN (2, 3, 4, 5), 'triage', pos IN (7, 8), 'writer', ''),
        'gen_ai.tool.name', if(operation = 'execute_tool', tool, ''),
        'gen_ai.tool.type', if(operation = 'execute_tool', 'function', ''),
        'gen_ai.tool.call.id', if(operation = 'execute_tool', concat('call_', SpanId), ''),
        'error.type', if(failed, error_types[1 + hash % 4], ''),
        'server.address', if(is_llm, 'api.example.com', ''),
        'user.id', concat('user-', toString(cityHash64(trace, 'user') % 5000)),
        'session.id', concat('session-', toString(cityHash64(trace, 'session') % 50000)),
        'llmtel.tags', '["prod"]'
    )) AS SpanAttributes,
    toUInt64((lengths_ms[pos] * (0.5 + (hash % 1000) / 1000)) * 1000000) AS Duration,
    if(failed, 'Error', 'Unset') AS StatusCode,
    if(failed, concat('Error code: 429 - ', error_types[1 + hash % 4]), '') AS StatusMessage
FROM
(
    SELECT
        number,
        intDiv(number, 8) AS trace,
        toUInt8(number % 8 + 1) AS pos,  -- 1-based, as ClickHouse arrays are
        operations[pos] AS operation,
        operation IN ('chat', 'embeddings') AS is_llm,
        operation = 'chat' AS is_chat,
        cityHash64(number) AS hash,
        1 + cityHash64(trace, 'service') % 5 AS service_index,
        -- Each service favours four models; the model stays the same within a trace.
        1 + ((service_index - 1) * 4 + cityHash64(trace, 'model') % 4 + if(cityHash64(trace) % 10 = 0, 7, 0)) % 20
            AS model_index,
        models[model_index] AS model,
        tools[1 + cityHash64(trace, 'tool') % 6] AS tool,
        is_llm AND hash % 50 = 0 AS failed,
        200 + cityHash64(number, 'in') % 3000 AS input_tokens,
        20 + cityHash64(number, 'out') % 600 AS output_tokens,
        if(cityHash64(number, 'cache') % 3 = 0, intDiv(input_tokens, 2), 0) AS cached_tokens
    FROM numbers({first:UInt64}, {count:UInt64})
)
