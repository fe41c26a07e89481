-- Schedules' days of week are now read as cron(5) reads them (0 and 7 Sunday, 1 Monday), no
-- longer as the `cron` crate does (1 Sunday). Each schedule stored before this is marked: a
-- server starting recomputes the `next_run_at` of those whose day of week is restricted under
-- the new reading, then clears the mark (see docs/api.md, "Upgrading … the cron fix").
ALTER TABLE schedules ADD COLUMN weekdays_recheck BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE schedules SET weekdays_recheck = TRUE;
