-- The cluster layout's read/write face: a Distributed table under the usual name (otel_traces,
-- llm_calls...) over the <name>_local table of every shard, so the Collector, llmtel's
-- exporter, Grafana and the CLI use the names they use on one server.
-- AS copies the local table's columns; ${sharding_key} is ", <expression>" for tables written
-- through the Distributed table, empty for those only read through it.
CREATE TABLE IF NOT EXISTS ${database}.${table} ${on_cluster}
AS ${database}.${local_table}
ENGINE = Distributed(${cluster}, ${database}, ${local_table}${sharding_key})
