-- llmtel doctor: when the newest span started, and how many spans there are.
SELECT toUnixTimestamp64Nano(max(Timestamp)) AS last_ns, count() AS spans
FROM ${database}.${traces_table}
