-- The per-tenant key-value store of scripts (kv_get, kv_set, kv_delete, kv_list). SQLite
-- compares text byte by byte, as the PostgreSQL table's "C" collation does.
CREATE TABLE kv (
    tenant_id   INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    -- Bytes of key and value, counted in the tenant's quota.
    bytes       INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

-- Each tenant's use of its quota (SQLite has one writer at a time, so it holds exactly).
CREATE TABLE kv_usage (
    tenant_id  INTEGER PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    keys       INTEGER NOT NULL,
    bytes      INTEGER NOT NULL
);
