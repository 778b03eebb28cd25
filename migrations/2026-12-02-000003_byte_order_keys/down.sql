ALTER TABLE troupe_entity_state
    ALTER COLUMN domain TYPE TEXT COLLATE "default",
    ALTER COLUMN key TYPE TEXT COLLATE "default";
ALTER TABLE troupe_applied_input
    ALTER COLUMN domain TYPE TEXT COLLATE "default",
    ALTER COLUMN input_id TYPE TEXT COLLATE "default";
