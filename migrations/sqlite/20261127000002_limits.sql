-- Per-function limits and per-tenant ceilings. NULL means "the platform's default" (for a
-- function) or "the platform's ceiling" (for a tenant), so changing those in a new release
-- reaches every row that never chose its own value.
ALTER TABLE functions ADD COLUMN timeout_ms INTEGER;
ALTER TABLE functions ADD COLUMN fuel INTEGER;
ALTER TABLE functions ADD COLUMN memory_bytes INTEGER;
ALTER TABLE functions ADD COLUMN concurrency INTEGER;

ALTER TABLE tenants ADD COLUMN max_timeout_ms INTEGER;
ALTER TABLE tenants ADD COLUMN max_fuel INTEGER;
ALTER TABLE tenants ADD COLUMN max_memory_bytes INTEGER;
ALTER TABLE tenants ADD COLUMN max_concurrency INTEGER;
