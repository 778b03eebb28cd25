-- Published outbox rows are kept for runtime.outbox_retention_seconds instead of being deleted
-- at once, so that events Redis loses after they were published (appendfsync everysec losing
-- its last second, a failover to an asynchronous replica, a restore) can be published again.
ALTER TABLE troupe_outbox ADD COLUMN published_at TIMESTAMPTZ;
-- The relay's queue: what waits to be published, in order.
CREATE INDEX troupe_outbox_unpublished ON troupe_outbox (domain, seq) WHERE published_at IS NULL;
-- The relay's view of what it published (the newest published row, pruning by age).
CREATE INDEX troupe_outbox_published ON troupe_outbox (domain, seq) WHERE published_at IS NOT NULL;
