-- Fills llm_calls from every insert into the traces table, whoever writes it.
CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.${llm_calls_mv} ${on_cluster}
TO ${database}.${llm_calls_table}
AS ${llm_calls_select}
