-- Ids a tenant sees (its tokens, schedules and invocation records) are chosen at random by the
-- server (an explicit id in an INTEGER PRIMARY KEY needs no change of schema here). Records are
-- listed and pruned newest first by time, then id.
CREATE INDEX invocations_function_at_id ON invocations (function_id, at, id);
DROP INDEX invocations_function_at;
