-- The newest trace of a service and how many spans it has: the one `llmtel demo` just made.
-- Its root span (no parent) dates it; the count says whether the whole tree arrived.
SELECT
    TraceId AS trace_id,
    count() AS spans
FROM ${database}.${traces_table}
WHERE ServiceName = {service:String}
  AND TraceId IN (
      SELECT TraceId
      FROM ${database}.${traces_table}
      WHERE ServiceName = {service:String} AND ParentSpanId = ''
      ORDER BY Timestamp DESC
      LIMIT 1
  )
GROUP BY TraceId
