-- Run only for a database other than `default` (which always exists), as the Collector does.
CREATE DATABASE IF NOT EXISTS ${database} ${on_cluster}
