-- Each invocation record carries a unique key, so that a record replayed from a node's spool
-- after a crash (it may have been written just before) is not written twice. Older rows have
-- none.
ALTER TABLE invocations ADD COLUMN record_key TEXT;
CREATE UNIQUE INDEX invocations_record_key ON invocations (record_key);
