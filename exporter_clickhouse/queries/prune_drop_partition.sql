-- ${partition_id} is an id read from the table itself (checked to be letters, digits, _ and -).
ALTER TABLE ${database}.${table} ${on_cluster} DROP PARTITION ID ${partition_id}
