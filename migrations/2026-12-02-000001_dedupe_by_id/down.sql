DROP TABLE troupe_command_reply;
DROP TABLE troupe_applied_input;
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
