-- llmtel doctor: the tables and views of the database.
SELECT name, engine
FROM system.tables
WHERE database = {database:String}
ORDER BY name
