-- Ids a tenant sees (its tokens, schedules and invocation records) are chosen at random by the
-- server, no longer counted by the database: the gaps between a tenant's own ids said how many
-- tokens, schedules and invocations the other tenants had. Existing ids stay as they are.
ALTER TABLE tokens ALTER COLUMN id DROP IDENTITY;
ALTER TABLE schedules ALTER COLUMN id DROP IDENTITY;
ALTER TABLE invocations ALTER COLUMN id DROP IDENTITY;
-- Records are listed and pruned newest first by time, then id.
CREATE INDEX invocations_function_at_id ON invocations (function_id, at, id);
DROP INDEX invocations_function_at;
