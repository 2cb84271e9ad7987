-- llmtel search: spans whose captured content contains the text, case-insensitively. Content
-- attributes hold JSON, where quotes, backslashes and control characters are escaped:
-- {text_json} is the text as it appears inside a JSON string, searched as well.
-- position*UTF8 counts code points, so the snippet cuts on characters.
SELECT
    toUnixTimestamp64Nano(Timestamp) AS start_ns,
    TraceId AS trace_id,
    SpanId AS span_id,
    SpanName AS name,
    ServiceName AS service,
    if(SpanAttributes['gen_ai.response.model'] != '',
       SpanAttributes['gen_ai.response.model'], SpanAttributes['gen_ai.request.model']) AS model,
    ['gen_ai.input.messages', 'gen_ai.output.messages', 'gen_ai.system_instructions'] AS fields,
    [SpanAttributes['gen_ai.input.messages'], SpanAttributes['gen_ai.output.messages'],
     SpanAttributes['gen_ai.system_instructions']] AS contents,
    arrayMap(c -> greatest(positionCaseInsensitiveUTF8(c, {text:String}),
                           positionCaseInsensitiveUTF8(c, {text_json:String})), contents) AS positions,
    arrayFirstIndex(p -> p > 0, positions) AS found,
    fields[found] AS field,
    substringUTF8(contents[found], greatest(1, toInt64(positions[found]) - {context:UInt32}),
                  least(positions[found] - 1, {context:UInt32}) + lengthUTF8({text_json:String})
                  + {context:UInt32}) AS snippet
FROM ${database}.${traces_table}
WHERE found > 0 AND ${where}
ORDER BY Timestamp DESC
LIMIT {limit:UInt64}
