import GRDB
import ProxyModel

extension Store {
    /// Persists node sync progress. Status is not spec: it gets no revision and no change log.
    public func saveNodeStatuses(_ statuses: [NodeStatus]) async throws(StoreError) {
        guard !statuses.isEmpty else { return }
        try await write { write in
            for status in statuses {
                try write.db.execute(
                    sql: """
                        INSERT INTO node_status
                            (name, desired_revision, applied_revision, last_error, last_error_revision, last_seen_unix_nanos)
                        VALUES (?, ?, ?, ?, ?, ?)
                        ON CONFLICT (name) DO UPDATE SET
                            desired_revision = excluded.desired_revision, applied_revision = excluded.applied_revision,
                            last_error = excluded.last_error, last_error_revision = excluded.last_error_revision,
                            last_seen_unix_nanos = excluded.last_seen_unix_nanos
                        """,
                    arguments: [
                        status.name, Int64(status.desiredRevision.rawValue), Int64(status.appliedRevision.rawValue),
                        status.lastError, status.lastErrorRevision.map { Int64($0.rawValue) }, status.lastSeenUnixNanos,
                    ])
            }
            return WriteOutcome(value: (), committed: nil)
        }
    }

    /// Every registered node (or the one named) with its last persisted status (`connected`
    /// is always false here: only the live server knows which streams are open).
    public func nodeStatuses(named name: String? = nil) async throws(StoreError) -> [NodeStatus] {
        try await read { db in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT o.name, o.revision, o.body, s.desired_revision, s.applied_revision, s.last_error, s.last_error_revision,
                           s.last_seen_unix_nanos
                    FROM objects o LEFT JOIN node_status s ON s.name = o.name
                    WHERE o.kind = 'Node' AND (? IS NULL OR o.name = ?) ORDER BY o.name
                    """, arguments: [name, name])
            return try rows.map { row in
                guard case .node(let node) = try ObjectCoding.decode(kind: .node, row["body"], revision: row["revision"]) else {
                    throw StoreError.storage("node \(row["name"] as String) has a body of another kind")
                }
                let errorRevision: Int64? = row["last_error_revision"]
                return NodeStatus(
                    name: node.metadata.name, addresses: node.addresses, zone: node.zone, connected: false,
                    desiredRevision: Revision(UInt64((row["desired_revision"] as Int64?) ?? 0)),
                    appliedRevision: Revision(UInt64((row["applied_revision"] as Int64?) ?? 0)),
                    lastError: row["last_error"], lastErrorRevision: errorRevision.map { Revision(UInt64($0)) },
                    lastSeenUnixNanos: row["last_seen_unix_nanos"] ?? 0)
            }
        }
    }
}
