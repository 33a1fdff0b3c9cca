"""The static index: the snapshot format, the Redis key schema and records, lexical query
matching, and the loader that puts a snapshot into Redis."""
