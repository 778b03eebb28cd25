-- Durable timers: scheduled in the transaction of the input that scheduled them, deleted in the
-- transaction of their firing (which records the timer id as an applied input) or of the input
-- that cancels them. A firing that finds its row gone rolls back: the timer was cancelled, or
-- fired by another instance, so it fires exactly once.
CREATE TABLE troupe_timer (
    domain      TEXT        NOT NULL,
    timer_id    TEXT        NOT NULL,
    entity_key  TEXT        NOT NULL,
    -- When the timer is due (what the handler sees as the input's timestamp).
    due_at      TIMESTAMPTZ NOT NULL,
    -- When it is tried next: due_at, later after a failed attempt (backoff).
    attempt_at  TIMESTAMPTZ NOT NULL,
    attempts    INT4        NOT NULL DEFAULT 0,
    payload     JSONB       NOT NULL,
    traceparent TEXT,
    -- Set when the timer failed for good (max_deliveries, or refused as invalid); it no
    -- longer fires. Kept for the operator, with the reason, for
    -- runtime.dead_letter_retention_seconds after dead_at.
    dead_reason TEXT,
    dead_at     TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (domain, timer_id)
);
-- The poller's question: the live timers of a domain due by now, earliest first.
CREATE INDEX troupe_timer_due ON troupe_timer (domain, attempt_at) WHERE dead_reason IS NULL;
