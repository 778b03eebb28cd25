-- Inputs are recognised by their envelope id, not by their stream entry id: an input whose id
-- was applied is acknowledged without being applied again, on its first delivery too, so a
-- Redis that comes back behind what was committed, or a producer that sends an envelope
-- twice, cannot apply anything twice. Ids are remembered for runtime.dedupe_window_seconds.
DROP TABLE troupe_applied_batch;

CREATE TABLE troupe_applied_input (
    domain     TEXT        NOT NULL,
    input_id   TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (domain, input_id)
);
-- Rows arrive in time order, so a BRIN index finds the expired ones at almost no write cost.
CREATE INDEX troupe_applied_input_by_age ON troupe_applied_input USING brin (applied_at);

-- Commands sent with an Idempotency-Key: the reply, stored with the command's effects, is
-- answered again to a retry with the same key (and the same request fingerprint).
CREATE TABLE troupe_command_reply (
    domain          TEXT        NOT NULL,
    idempotency_key TEXT        NOT NULL,
    fingerprint     TEXT        NOT NULL,
    reply           JSONB       NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (domain, idempotency_key)
);
CREATE INDEX troupe_command_reply_by_age ON troupe_command_reply USING brin (created_at);
