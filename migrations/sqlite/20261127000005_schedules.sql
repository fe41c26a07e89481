-- Schedules: cron triggers of a function. `next_run_at` is the first tick not yet claimed; a
-- scheduler claims ticks with a compare-and-set on it, so each tick is claimed once across
-- every manager and restart. `running_until` is the lease of the run in progress (no two runs
-- of one schedule overlap); it lapses if the manager running it dies.
CREATE TABLE schedules (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    function_id    INTEGER NOT NULL REFERENCES functions (id) ON DELETE CASCADE,
    cron           TEXT NOT NULL,
    time_zone      TEXT NOT NULL,
    enabled        BOOLEAN NOT NULL,
    payload        TEXT,
    next_run_at    INTEGER NOT NULL,
    running_until  INTEGER,
    skipped_ticks  INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL
);
CREATE INDEX schedules_function ON schedules (function_id);

-- One row per claimed tick: the unique key is the last line of defence against a tick running
-- twice. `outcome` is NULL while it runs; `abandoned` when its manager died during the run.
CREATE TABLE schedule_runs (
    schedule_id  INTEGER NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    due_at       INTEGER NOT NULL,
    claimed_at   INTEGER NOT NULL,
    backfill     BOOLEAN NOT NULL,
    owner        TEXT NOT NULL,
    finished_at  INTEGER,
    outcome      TEXT,
    PRIMARY KEY (schedule_id, due_at)
);
