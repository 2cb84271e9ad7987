-- llmtel backfill: llm_calls rows in the window, before and after.
SELECT count() FROM ${database}.${llm_calls_table}
WHERE Timestamp >= {start:DateTime64(9)} AND Timestamp < {end:DateTime64(9)}
