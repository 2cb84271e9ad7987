-- llmtel doctor: the rows of one table as queries see them (system.tables' total_rows still
-- counts rows a lightweight DELETE has masked until the parts merge).
SELECT count() AS rows FROM ${database}.${table}
