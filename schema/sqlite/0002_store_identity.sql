-- A random identity for this database. Revision numbers are only comparable within one
-- history: a node whose state came from another database (a wiped or restored store) must
-- start over from a snapshot even if its revision number happens to be in range.
CREATE TABLE store_identity (
    singleton INTEGER PRIMARY KEY NOT NULL CHECK (singleton = 1),
    id        TEXT NOT NULL CHECK (length(id) = 32)
) STRICT;
INSERT INTO store_identity (singleton, id) VALUES (1, lower(hex(randomblob(16))));
