-- Keeps the hashes of the last N inserted blocks of a non-replicated MergeTree table, so a
-- batch replayed with the same insert_deduplication_token (a retry after an ambiguous
-- failure) is stored once. Replicated engines deduplicate by default (replicated_deduplication_window).
-- An ALTER rather than a clause in CREATE: the CREATE text stays identical to the Collector's.
ALTER TABLE ${database}.${table} ${on_cluster} MODIFY SETTING non_replicated_deduplication_window = ${window}
