-- Storage quotas: each version's size in bytes (older rows: their length), summed per tenant
-- against its quota; records pruned per tenant, newest kept, by time.
ALTER TABLE function_versions ADD COLUMN size BIGINT NOT NULL DEFAULT 0;
UPDATE function_versions SET size = octet_length(source);
CREATE INDEX invocations_tenant_at_id ON invocations (tenant_id, at, id);
