-- Entity keys and applied-input ids compare byte by byte (collation "C") instead of by the
-- database's locale: every unit probes these two indexes once per input, and locale-aware
-- comparison (strcoll) made each probe markedly slower. Keys are only ever compared for
-- equality and for paging in a stable order, which byte order gives (for UTF-8 it is code
-- point order). Changing a column's collation rebuilds its indexes, not the table.
ALTER TABLE troupe_applied_input
    ALTER COLUMN domain TYPE TEXT COLLATE "C",
    ALTER COLUMN input_id TYPE TEXT COLLATE "C";
ALTER TABLE troupe_entity_state
    ALTER COLUMN domain TYPE TEXT COLLATE "C",
    ALTER COLUMN key TYPE TEXT COLLATE "C";
