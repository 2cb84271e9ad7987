-- A lightweight DELETE: rows are masked at once and removed at the next merges.
DELETE FROM ${database}.${table} ${on_cluster} WHERE ${time_column} < ${cutoff}
