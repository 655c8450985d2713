import Foundation
import GRDB
import ProxyModel

extension Store {
    /// Stores every item in one transaction under one new revision, or nothing at all.
    /// Services get their ClusterIPs, NodePorts and healthCheckNodePort allocated; requested
    /// values are honoured when free. Objects identical to what is stored are left alone
    /// (`unchanged`, no new revision). On a dry run everything is checked and allocated,
    /// then rolled back.
    public func apply(_ items: [ApplyItem], dryRun: Bool = false) async throws(StoreError) -> ApplyResult {
        let context = configuration.validation
        // Validation and encoding need no database: do them before queueing for the writer.
        var prepared: [(key: ObjectKey, object: ProxyObject, body: Data?, expected: Revision?)] = []
        var seen: [ObjectKey: Int] = [:]
        for (index, item) in items.enumerated() {
            let key = item.object.key
            if let first = seen[key] {
                throw .invalid(ValidationError(field: "items[\(index)]", message: "\(key) is also items[\(first)]"))
            }
            seen[key] = index
            do throws(ValidationError) {
                try item.object.validate(in: context)
            } catch {
                throw .invalid(error.prefixed("items[\(index)]."))
            }
            var object = item.object
            object.metadata.revision = .zero
            // A Service's body is known only after allocation, inside the transaction.
            let body: Data?
            do {
                body = item.object.kind == .service ? nil : try ObjectCoding.encode(object)
            } catch {
                throw .storage("cannot encode \(key): \(error)")
            }
            prepared.append((key, object, body, item.expectedRevision))
        }
        let ready = prepared
        return try await write { write in
            var results: [(object: ProxyObject, outcome: ApplyOutcome)] = []
            var changes: [ObjectChange] = []
            for (index, item) in ready.enumerated() {
                let existing = try Self.loadEncoded(write.db, item.key)
                try Self.checkExpected(key: item.key, expected: item.expected, existing: existing.map { Revision(UInt64($0.revision)) })
                var object = item.object
                var body = item.body
                if case .service(let service) = object {
                    var previous: Service?
                    if let existing, case .service(let stored) = try ObjectCoding.decode(kind: .service, existing.body, revision: existing.revision) {
                        previous = stored
                    }
                    object = .service(
                        try Allocator(db: write.db, context: context, fieldPrefix: "items[\(index)].").resolve(service, existing: previous))
                    body = try ObjectCoding.encode(object)
                }
                guard let body else { throw StoreError.storage("\(item.key) has no encoding") }
                if let existing, existing.body == body {
                    object.metadata.revision = Revision(UInt64(existing.revision))
                    results.append((object, .unchanged))
                    continue
                }
                object.metadata.revision = write.revision
                try Self.store(write.db, object, body: body, revision: write.revision)
                results.append((object, existing == nil ? .created : .configured))
                changes.append(
                    ObjectChange(
                        key: item.key, object: object, encoded: ObjectCoding.wireBytes(body, revision: Int64(write.revision.rawValue))))
            }
            let head = try Self.head(write.db)
            let changed = !changes.isEmpty
            return WriteOutcome(
                value: ApplyResult(revision: changed && !dryRun ? write.revision : head, objects: results),
                committed: changed
                    ? CommittedRevision(revision: write.revision, commitTimeUnixNanos: write.commitTimeUnixNanos, changes: changes)
                    : nil,
                keep: !dryRun)
        }
    }

    /// Deletes every item in one transaction under one new revision, or nothing at all.
    /// A Service's ClusterIPs and NodePorts are released with it.
    public func delete(_ items: [DeleteItem], dryRun: Bool = false) async throws(StoreError) -> Revision {
        try await write { write in
            var changes: [ObjectChange] = []
            for item in items {
                guard let existing = try Self.loadEncoded(write.db, item.key) else { throw StoreError.notFound(item.key) }
                try Self.checkExpected(key: item.key, expected: item.expectedRevision, existing: Revision(UInt64(existing.revision)))
                try write.db.execute(
                    sql: "DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
                    arguments: [item.key.kind.rawValue, item.key.namespace, item.key.name])
                if write.db.changesCount == 0 { throw StoreError.notFound(item.key) }  // listed twice
                try Self.recordChange(write.db, key: item.key, body: nil, revision: write.revision)
                changes.append(ObjectChange(key: item.key, object: nil, encoded: nil))
            }
            let head = try Self.head(write.db)
            return WriteOutcome(
                value: changes.isEmpty || dryRun ? head : write.revision,
                committed: changes.isEmpty
                    ? nil : CommittedRevision(revision: write.revision, commitTimeUnixNanos: write.commitTimeUnixNanos, changes: changes),
                keep: !dryRun)
        }
    }

    /// Records a node's identity (from its Hello). A new revision only when something changed.
    public func registerNode(_ node: Node) async throws(StoreError) -> Revision {
        let result = try await apply([ApplyItem(object: .node(node))])
        return result.revision
    }

    // MARK: helpers

    static func checkExpected(key: ObjectKey, expected: Revision?, existing actual: Revision?) throws {
        guard let expected else { return }
        if expected == .zero ? actual != nil : actual != expected {
            throw StoreError.conflict(key, expected: expected, actual: actual)
        }
    }

    static func store(_ db: Database, _ object: ProxyObject, body: Data, revision: Revision) throws {
        let key = object.key
        try db.cachedStatement(
            sql: """
                INSERT INTO objects (kind, namespace, name, revision, body) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (kind, namespace, name) DO UPDATE SET revision = excluded.revision, body = excluded.body
                """
        ).execute(arguments: [key.kind.rawValue, key.namespace, key.name, Int64(revision.rawValue), body])
        try recordChange(db, key: key, body: body, revision: revision)
        if case .service(let service) = object {
            try Allocator.record(db, service)
        }
    }

    static func recordChange(_ db: Database, key: ObjectKey, body: Data?, revision: Revision) throws {
        try db.cachedStatement(sql: "INSERT INTO changes (revision, kind, namespace, name, body) VALUES (?, ?, ?, ?, ?)")
            .execute(arguments: [Int64(revision.rawValue), key.kind.rawValue, key.namespace, key.name, body])
    }
}
