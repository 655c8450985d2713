-- Initial schema. Never edit once landed: add a new numbered file instead.

-- Counters: head_revision (last committed revision, never reused) and
-- compacted_revision (change-log history at or below it is gone).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL CHECK (value >= 0)
) STRICT;
INSERT INTO meta (key, value) VALUES ('head_revision', 0), ('compacted_revision', 0);

-- Every stored object, its current state. body is the object as JSON.
CREATE TABLE objects (
    kind      TEXT NOT NULL CHECK (kind IN ('Service', 'EndpointSlice', 'Node')),
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL CHECK (length(name) > 0),
    revision  INTEGER NOT NULL CHECK (revision > 0),
    body      BLOB NOT NULL,
    PRIMARY KEY (kind, namespace, name)
) STRICT, WITHOUT ROWID;

-- Allocated ClusterIPs: one owner per address and family.
CREATE TABLE cluster_ips (
    family    TEXT NOT NULL CHECK (family IN ('IPv4', 'IPv6')),
    ip        TEXT NOT NULL,
    kind      TEXT NOT NULL DEFAULT 'Service' CHECK (kind = 'Service'),
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    UNIQUE (family, ip),
    FOREIGN KEY (kind, namespace, name) REFERENCES objects (kind, namespace, name) ON DELETE CASCADE
) STRICT;
CREATE INDEX cluster_ips_owner ON cluster_ips (namespace, name);

-- Allocated NodePorts (and healthCheckNodePorts, which are TCP): one owner per port and protocol.
CREATE TABLE node_ports (
    protocol  TEXT NOT NULL CHECK (protocol IN ('TCP', 'UDP', 'SCTP')),
    port      INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    kind      TEXT NOT NULL DEFAULT 'Service' CHECK (kind = 'Service'),
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    UNIQUE (protocol, port),
    FOREIGN KEY (kind, namespace, name) REFERENCES objects (kind, namespace, name) ON DELETE CASCADE
) STRICT;
CREATE INDEX node_ports_owner ON node_ports (namespace, name);

-- The retained change log: one row per committed revision ...
CREATE TABLE revisions (
    revision               INTEGER PRIMARY KEY NOT NULL CHECK (revision > 0),
    commit_time_unix_nanos INTEGER NOT NULL
) STRICT;

-- ... and one row per object written at that revision (body NULL for a delete). The revision
-- row is written after its changes, in the same transaction: hence the deferred reference.
CREATE TABLE changes (
    revision  INTEGER NOT NULL REFERENCES revisions (revision) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    kind      TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    body      BLOB,
    PRIMARY KEY (revision, kind, namespace, name)
) STRICT, WITHOUT ROWID;

-- Per-node sync progress, written by the control server (not revisioned: it is status, not spec).
CREATE TABLE node_status (
    name                   TEXT PRIMARY KEY NOT NULL,
    desired_revision       INTEGER NOT NULL DEFAULT 0,
    applied_revision       INTEGER NOT NULL DEFAULT 0,
    last_error             TEXT,
    last_error_revision    INTEGER,
    last_seen_unix_nanos   INTEGER NOT NULL DEFAULT 0
) STRICT;
