-- llmtel prune: per partition of one table, how many rows are older than the cutoff and how
-- many it holds; a partition whose rows are all older is dropped whole, the others get a
-- lightweight DELETE.
SELECT _partition_id AS partition_id, countIf(${time_column} < ${cutoff}) AS older, count() AS total
FROM ${database}.${table}
GROUP BY partition_id
HAVING older > 0
ORDER BY partition_id
