DROP INDEX troupe_outbox_published;
DROP INDEX troupe_outbox_unpublished;
DELETE FROM troupe_outbox WHERE published_at IS NOT NULL;
ALTER TABLE troupe_outbox DROP COLUMN published_at;
