-- Per-function limits and per-tenant ceilings. NULL means "the platform's default" (for a
-- function) or "the platform's ceiling" (for a tenant), so changing those in a new release
-- reaches every row that never chose its own value.
ALTER TABLE functions ADD COLUMN timeout_ms BIGINT;
ALTER TABLE functions ADD COLUMN fuel BIGINT;
ALTER TABLE functions ADD COLUMN memory_bytes BIGINT;
ALTER TABLE functions ADD COLUMN concurrency BIGINT;

ALTER TABLE tenants ADD COLUMN max_timeout_ms BIGINT;
ALTER TABLE tenants ADD COLUMN max_fuel BIGINT;
ALTER TABLE tenants ADD COLUMN max_memory_bytes BIGINT;
ALTER TABLE tenants ADD COLUMN max_concurrency BIGINT;
