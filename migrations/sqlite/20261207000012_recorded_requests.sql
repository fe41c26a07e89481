-- A record keeps the rest of the request it answered, as JSON text: the query, the headers
-- (credentials redacted) and the start of the body (see `RecordedRequest`).
ALTER TABLE invocations ADD COLUMN request TEXT;
