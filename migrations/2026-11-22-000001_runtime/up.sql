-- The runtime's own tables. Domain code never sees them: a domain's entities are rows of
-- troupe_entity_state, written together with the applied-input record and the outbox rows in
-- one transaction per batch.

-- Latest state of every entity, one row per (domain, key).
CREATE TABLE troupe_entity_state (
    domain     TEXT        NOT NULL,
    key        TEXT        NOT NULL,
    state      JSONB       NOT NULL,
    version    BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (domain, key)
);

-- Which stream entries a committed batch applied. A row is only needed between the commit and
-- the XACK of its entries: an entry redelivered after a crash in that window is recognised here
-- and acked without being applied again. Rows whose newest entry is older than the group's
-- oldest pending entry can never match again and are pruned.
CREATE TABLE troupe_applied_batch (
    id           BIGSERIAL   PRIMARY KEY,
    domain       TEXT        NOT NULL,
    stream       TEXT        NOT NULL,
    entry_ids    TEXT[]      NOT NULL,
    max_id_ms    BIGINT      NOT NULL,
    max_id_seq   BIGINT      NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX troupe_applied_batch_by_stream
    ON troupe_applied_batch (domain, stream, max_id_ms, max_id_seq);

-- Events emitted by committed batches, waiting for the relay to publish them. Rows are deleted
-- once published; seq gives the publication order.
CREATE TABLE troupe_outbox (
    seq         BIGSERIAL   PRIMARY KEY,
    domain      TEXT        NOT NULL,
    stream      TEXT        NOT NULL,
    event_id    UUID        NOT NULL UNIQUE,
    event_type  TEXT        NOT NULL,
    key         TEXT        NOT NULL,
    data        TEXT        NOT NULL,
    traceparent TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX troupe_outbox_by_domain ON troupe_outbox (domain, seq);
