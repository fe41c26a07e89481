-- A version can be pinned: neither the automatic pruning at the version cap nor a manual prune
-- removes it. A tenant may be allowed schedules that fire more than once a minute (an admin's
-- choice; off by default). A record keeps the request's method and path, or the schedule that
-- ran it, so that a log line says what it answered.
ALTER TABLE function_versions ADD COLUMN pinned BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE tenants ADD COLUMN sub_minute_schedules BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE invocations ADD COLUMN method TEXT;
ALTER TABLE invocations ADD COLUMN path TEXT;
ALTER TABLE invocations ADD COLUMN schedule_id BIGINT;
