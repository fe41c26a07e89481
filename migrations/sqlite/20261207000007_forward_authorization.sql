-- A function receives its caller's `Authorization` header only when it opts in (and never a
-- platform token): by default the header is removed before the script sees the request.
ALTER TABLE functions ADD COLUMN forward_authorization BOOLEAN NOT NULL DEFAULT 0;
