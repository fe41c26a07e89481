-- PiCloud control plane, PostgreSQL. Times are Unix milliseconds (BIGINT) in both dialects.
CREATE TABLE tenants (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

-- Only a hash of each token is stored. tenant_id is NULL for admin tokens.
CREATE TABLE tokens (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   BIGINT REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    admin       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE functions (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       BIGINT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    public          BOOLEAN NOT NULL DEFAULT TRUE,
    active_version  INTEGER,
    created_at      BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

-- Immutable: rows are only ever inserted.
CREATE TABLE function_versions (
    function_id  BIGINT NOT NULL REFERENCES functions (id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    source       TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    author       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (function_id, version)
);

CREATE TABLE env_vars (
    function_id  BIGINT NOT NULL REFERENCES functions (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    value        TEXT NOT NULL,
    secret       BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (function_id, name)
);
