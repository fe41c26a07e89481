-- The per-tenant key-value store of scripts (kv_get, kv_set, kv_delete, kv_list). Keys compare
-- byte by byte ("C" collation), as on SQLite, so that kv_list pages the same on both.
CREATE TABLE kv (
    tenant_id   BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key         TEXT COLLATE "C" NOT NULL,
    value       TEXT NOT NULL,
    -- Bytes of key and value, counted in the tenant's quota.
    bytes       BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

-- Each tenant's use of its quota. Writers lock the tenant's row, so the quota holds exactly
-- under concurrent writes.
CREATE TABLE kv_usage (
    tenant_id  BIGINT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    keys       BIGINT NOT NULL,
    bytes      BIGINT NOT NULL
);
