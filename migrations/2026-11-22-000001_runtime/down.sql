DROP TABLE troupe_outbox;
DROP TABLE troupe_applied_batch;
DROP TABLE troupe_entity_state;
