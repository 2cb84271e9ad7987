-- Which of the given settings this engine knows (store.py asks once per connection, before it
-- sends a setting that older engines would reject as unknown).
SELECT name FROM system.settings WHERE name IN {names:Array(String)}
