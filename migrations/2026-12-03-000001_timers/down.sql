DROP TABLE troupe_timer;
