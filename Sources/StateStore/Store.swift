import Foundation
import GRDB
import Logging
import ProxyModel

/// The durable state of the cluster: one SQLite database (WAL, `synchronous=FULL`).
///
/// Every write method is one invariant-preserving transaction that either commits under a
/// new global revision (with its change-log rows) or leaves nothing behind. Writes from
/// concurrent callers are grouped into one SQLite transaction (see `GroupCommitter`).
public final class Store: Sendable {
    public let configuration: StoreConfiguration
    /// Random identity of this database: revisions are comparable only within one store.
    public let identity: String
    let pool: DatabasePool
    let committer: GroupCommitter
    let logger: Logger

    /// Opens (creating if needed) the database and applies pending migrations.
    public init(configuration: StoreConfiguration, logger: Logger = Logger(label: "state-store")) throws {
        self.configuration = configuration
        self.logger = logger
        var config = Configuration()
        config.busyMode = .timeout(configuration.busyTimeoutSeconds)
        config.maximumReaderCount = configuration.maximumReaders
        config.foreignKeysEnabled = true
        let superseded: Bool
        do {
            pool = try DatabasePool(path: configuration.path, configuration: config)
            // An acknowledged write survives power loss: fsync the WAL on every commit. Only the
            // writer writes, and the pool sets its writer to NORMAL (no sync at commit) when it
            // turns WAL on, after `prepareDatabase` has run: so it is set here, once the pool is open.
            try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
            let migrator = Migrations.migrator(logger: logger)
            // A database from a newer server is left untouched.
            superseded = try pool.read(migrator.hasBeenSuperseded)
            if !superseded { try migrator.migrate(pool) }
            identity = try pool.read { db in try String.fetchOne(db, sql: "SELECT id FROM store_identity") } ?? ""
        } catch {
            throw StoreError.storage("cannot open \(configuration.path): \(error)")
        }
        if superseded {
            throw StoreError.storage(
                "cannot open \(configuration.path): a newer control-server migrated it to a schema this one does not know")
        }
        committer = GroupCommitter(writer: pool, retainedRevisions: configuration.retainedRevisions, logger: logger)
    }

    /// Registers an observer of committed revisions (the broadcaster, the watch hub).
    public func addObserver(_ observer: any CommitObserver) {
        committer.addObserver(observer)
    }

    func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws(StoreError) -> T {
        do {
            return try await pool.read(body)
        } catch {
            throw GroupCommitter.storeError(error)
        }
    }

    func write<T: Sendable>(_ work: @escaping @Sendable (WriteContext) throws -> WriteOutcome<T>) async throws(StoreError) -> T {
        do {
            return try await committer.submit(work)
        } catch {
            throw GroupCommitter.storeError(error)
        }
    }

    // MARK: reads

    /// The last committed revision.
    public func headRevision() async throws(StoreError) -> Revision {
        try await read { db in try Self.head(db) }
    }

    /// The newest revision whose history is gone (deltas and Watch need a later start).
    public func compactedRevision() async throws(StoreError) -> Revision {
        try await read { db in try Self.meta(db, "compacted_revision") }
    }

    public func get(_ key: ObjectKey) async throws(StoreError) -> (object: ProxyObject, head: Revision) {
        let found = try await read { db -> (ProxyObject?, Revision) in
            (try Self.load(db, key), try Self.head(db))
        }
        guard let object = found.0 else { throw .notFound(key) }
        return (object, found.1)
    }

    /// One page of objects of `kind`, ordered by namespace and name: at most `limit` objects, whose
    /// stored bodies add up to at most `maxBytes` (but at least one object). A continuation pins
    /// the listing to the revision of its first page: if an object not yet listed changed since,
    /// the listing fails with `listingExpired` rather than mixing two states.
    public func list(
        kind: ObjectKind, namespace: String?, limit: Int, maxBytes: Int = .max, continuation: ListContinuation? = nil
    ) async throws(StoreError) -> ListPage {
        try await read { db in
            let head = try Self.head(db)
            var revision = head
            var sql = "SELECT namespace, name, revision, body FROM objects WHERE kind = ?"
            var arguments: StatementArguments = [kind.rawValue]
            if let namespace {
                sql += " AND namespace = ?"
                arguments += [namespace]
            }
            if let continuation {
                revision = continuation.revision
                try Self.checkListingStillValid(db, kind: kind, namespace: namespace, continuation: continuation)
                sql += " AND (namespace, name) > (?, ?)"
                arguments += [continuation.afterNamespace, continuation.afterName]
            }
            sql += " ORDER BY namespace, name LIMIT ?"
            arguments += [limit + 1]
            let rows = try Row.fetchAll(db, sql: sql, arguments: arguments)
            var objects: [ProxyObject] = []
            var bytes = 0
            for row in rows.prefix(limit) {
                let body: Data = row["body"]
                bytes += body.count
                if bytes > maxBytes && !objects.isEmpty { break }
                objects.append(try ObjectCoding.decode(kind: kind, body, revision: row["revision"]))
            }
            var next: ListContinuation?
            if rows.count > objects.count, let last = objects.last {
                next = ListContinuation(revision: revision, afterNamespace: last.metadata.namespace, afterName: last.metadata.name)
            }
            return ListPage(objects: objects, revision: revision, continueToken: next)
        }
    }

    private static func checkListingStillValid(
        _ db: Database, kind: ObjectKind, namespace: String?, continuation: ListContinuation
    ) throws {
        let compacted = try meta(db, "compacted_revision")
        guard continuation.revision >= compacted else {
            throw StoreError.listingExpired(
                "the listing started at revision \(continuation.revision), which has been compacted; list again")
        }
        var sql = """
            SELECT count(*) FROM changes WHERE revision > ? AND kind = ? AND (namespace, name) > (?, ?)
            """
        var arguments: StatementArguments = [
            Int64(continuation.revision.rawValue), kind.rawValue, continuation.afterNamespace, continuation.afterName,
        ]
        if let namespace {
            sql += " AND namespace = ?"
            arguments += [namespace]
        }
        if try Int.fetchOne(db, sql: sql, arguments: arguments) ?? 0 > 0 {
            throw StoreError.listingExpired(
                "objects changed since the listing started at revision \(continuation.revision); list again")
        }
    }

    /// The committed revisions after `revision`, oldest first, at most `limit` of them.
    /// Throws `compacted` when part of that history is gone.
    public func history(after revision: Revision, limit: Int) async throws(StoreError) -> [CommittedRevision] {
        try await read { db in
            let compacted = try Self.meta(db, "compacted_revision")
            guard revision >= compacted else { throw StoreError.compacted(requested: revision, compacted: compacted) }
            let revisions = try Row.fetchAll(
                db, sql: "SELECT revision, commit_time_unix_nanos FROM revisions WHERE revision > ? ORDER BY revision LIMIT ?",
                arguments: [Int64(revision.rawValue), limit])
            guard let first = revisions.first, let last = revisions.last else { return [] }
            let changes = try Row.fetchAll(
                db,
                sql: "SELECT revision, kind, namespace, name, body FROM changes WHERE revision BETWEEN ? AND ? ORDER BY revision",
                arguments: [first["revision"] as Int64, last["revision"] as Int64])
            var byRevision: [Int64: [ObjectChange]] = [:]
            for row in changes {
                byRevision[row["revision"], default: []].append(try Self.change(row, key: Self.key(row)))
            }
            return revisions.map { row in
                let number: Int64 = row["revision"]
                return CommittedRevision(
                    revision: Revision(UInt64(number)), commitTimeUnixNanos: row["commit_time_unix_nanos"],
                    changes: byRevision[number] ?? [])
            }
        }
    }

    /// The objects of `kinds` at the head as the bytes of their wire messages, in key order, read
    /// in one transaction. The stored bodies are those messages (`ObjectCoding`): nothing is decoded.
    public func encodedSnapshot(kinds: Set<ObjectKind>) async throws(StoreError) -> EncodedSnapshot {
        try await read { db in
            let head = try Self.head(db)
            var objects: [EncodedObject] = []
            for kind in kinds.sorted() {
                let rows = try Row.fetchCursor(
                    db, sql: "SELECT namespace, name, revision, body FROM objects WHERE kind = ? ORDER BY namespace, name",
                    arguments: [kind.rawValue])
                while let row = try rows.next() {
                    objects.append(
                        EncodedObject(
                            key: ObjectKey(kind: kind, namespace: row["namespace"], name: row["name"]),
                            bytes: ObjectCoding.wireBytes(row["body"], revision: row["revision"])))
                }
            }
            return EncodedSnapshot(revision: head, commitTimeUnixNanos: try Self.commitTime(db, head), objects: objects)
        }
    }

    /// Everything a reader at `revision` needs to reach the head, read in one transaction.
    /// `kinds` limits which objects a delta carries (revisions still advance).
    public func catchUp(from revision: Revision, kinds: Set<ObjectKind>) async throws(StoreError) -> CatchUp {
        try await read { db in
            let head = try Self.head(db)
            let compacted = try Self.meta(db, "compacted_revision")
            if revision == head && revision != .zero { return .upToDate(head) }
            if revision == .zero || revision < compacted || revision > head { return .snapshotNeeded(head: head) }
            let rows = try Row.fetchAll(
                db, sql: "SELECT revision, kind, namespace, name, body FROM changes WHERE revision > ? ORDER BY revision",
                arguments: [Int64(revision.rawValue)])
            // Only each object's last change is decoded.
            var latest: [ObjectKey: Row] = [:]
            for row in rows {
                let key = try Self.key(row)
                if kinds.contains(key.kind) { latest[key] = row }
            }
            return .delta(
                from: revision, to: head, commitTimeUnixNanos: try Self.commitTime(db, head),
                changes: try latest.sorted { $0.key < $1.key }.map { try Self.change($0.value, key: $0.key) })
        }
    }

    // MARK: helpers shared by reads and writes

    static func head(_ db: Database) throws -> Revision {
        try meta(db, "head_revision")
    }

    static func meta(_ db: Database, _ key: String) throws -> Revision {
        Revision(UInt64(try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = ?", arguments: [key]) ?? 0))
    }

    static func commitTime(_ db: Database, _ revision: Revision) throws -> Int64 {
        try Int64.fetchOne(
            db, sql: "SELECT commit_time_unix_nanos FROM revisions WHERE revision = ?", arguments: [Int64(revision.rawValue)]) ?? 0
    }

    static func load(_ db: Database, _ key: ObjectKey) throws -> ProxyObject? {
        guard let stored = try loadEncoded(db, key) else { return nil }
        return try ObjectCoding.decode(kind: key.kind, stored.body, revision: stored.revision)
    }

    /// The stored revision and body of an object, undecoded.
    static func loadEncoded(_ db: Database, _ key: ObjectKey) throws -> (revision: Int64, body: Data)? {
        try Row.fetchOne(
            db.cachedStatement(sql: "SELECT revision, body FROM objects WHERE kind = ? AND namespace = ? AND name = ?"),
            arguments: [key.kind.rawValue, key.namespace, key.name]
        ).map { ($0["revision"], $0["body"]) }
    }

    /// The object a `changes` row is about.
    static func key(_ row: Row) throws -> ObjectKey {
        ObjectKey(kind: try ObjectCoding.kind(row["kind"]), namespace: row["namespace"], name: row["name"])
    }

    static func change(_ row: Row, key: ObjectKey) throws -> ObjectChange {
        let body: Data? = row["body"]
        let revision: Int64 = row["revision"]
        return ObjectChange(
            key: key, object: try body.map { try ObjectCoding.decode(kind: key.kind, $0, revision: revision) },
            encoded: body.map { ObjectCoding.wireBytes($0, revision: revision) })
    }
}
