-- Invocation records: one row per invocation (HTTP, test, schedule), written in batches off
-- the response path. Deleted with their function.
CREATE TABLE invocations (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    function_id   BIGINT NOT NULL REFERENCES functions (id) ON DELETE CASCADE,
    version       INTEGER NOT NULL,
    trigger_kind  TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    status        INTEGER NOT NULL,
    at            BIGINT NOT NULL,
    duration_us   BIGINT NOT NULL,
    fuel          BIGINT NOT NULL,
    peak_memory   BIGINT NOT NULL,
    message       TEXT,
    logs          TEXT NOT NULL,
    logs_truncated BOOLEAN NOT NULL
);
CREATE INDEX invocations_function_at ON invocations (function_id, at);
CREATE INDEX invocations_at ON invocations (at);
