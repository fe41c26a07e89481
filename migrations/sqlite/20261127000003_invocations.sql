-- Invocation records: one row per invocation (HTTP, test, schedule), written in batches off
-- the response path. Deleted with their function.
CREATE TABLE invocations (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id     INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    function_id   INTEGER NOT NULL REFERENCES functions (id) ON DELETE CASCADE,
    version       INTEGER NOT NULL,
    trigger_kind  TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    status        INTEGER NOT NULL,
    at            INTEGER NOT NULL,
    duration_us   INTEGER NOT NULL,
    fuel          INTEGER NOT NULL,
    peak_memory   INTEGER NOT NULL,
    message       TEXT,
    logs          TEXT NOT NULL,
    logs_truncated BOOLEAN NOT NULL
);
CREATE INDEX invocations_function_at ON invocations (function_id, at);
CREATE INDEX invocations_at ON invocations (at);
