import Foundation
import GRDB
import ProxyAPI
import ProxyModel
import Testing

@testable import StateStore

/// Migration `0003_protobuf_bodies` on a database that the control-server of `efe8a23` wrote
/// with JSON bodies (`Fixtures/json-bodies.db`, made by `Fixtures/make-json-bodies-db.py`): nine
/// objects using every field, and an update and a deletion in the change log.
@Suite struct StoreMigrationTests {
    /// A copy of the fixture in a temporary directory.
    struct OldDatabase {
        static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/json-bodies.db")
        let directory: URL
        var path: String { directory.appendingPathComponent("state.db").path }

        init() throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("store-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: Self.fixture.path, toPath: path)
        }

        func remove() {
            try? FileManager.default.removeItem(at: directory)
        }

        func execute(_ sql: String) throws {
            try DatabaseQueue(path: path).write { db in try db.execute(sql: sql) }
        }

        func appliedMigrations() throws -> [String] {
            try DatabaseQueue(path: path).read { db in
                try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY identifier")
            }
        }

        /// Every row of `objects` and `changes` as stored, in key order.
        func rows() throws -> [Row] {
            try DatabaseQueue(path: path).read { db in
                try Row.fetchAll(db, sql: "SELECT 'objects' AS source, kind, namespace, name, revision, body FROM objects ORDER BY kind, namespace, name")
                    + Row.fetchAll(db, sql: "SELECT 'changes' AS source, kind, namespace, name, revision, body FROM changes ORDER BY revision, kind, namespace, name")
            }
        }
    }

    /// Where a row came from and its key.
    static func identity(_ row: Row) -> [String] {
        [row["source"], row["kind"], row["namespace"], row["name"]]
    }

    @Test func jsonBodiesBecomeProtobufWithEveryObjectAndChangeIntact() async throws {
        let old = try OldDatabase()
        defer { old.remove() }
        let before = try old.rows()
        #expect(before.filter { $0["source"] == "objects" }.count == 9)
        #expect(before.contains { $0["source"] == "changes" && ($0["body"] as Data?) == nil }, "the deletion")
        #expect(before.allSatisfy { ($0["body"] as Data?).map { $0.first == UInt8(ascii: "{") } ?? true }, "JSON bodies")

        let store = try Store(configuration: StoreConfiguration(path: old.path))
        let after = try old.rows()
        #expect(after.count == before.count)
        for (was, now) in zip(before, after) {
            let kind = try ObjectCoding.kind(was["kind"])
            #expect(Self.identity(was) == Self.identity(now))
            #expect(was["revision"] as Int64 == now["revision"])
            guard let json: Data = was["body"] else {
                #expect((now["body"] as Data?) == nil)
                continue
            }
            let body: Data = now["body"]
            #expect(body.first != UInt8(ascii: "{"))
            let expected = try ProtobufBodies.decodeJSON(kind: kind, json)
            #expect(try ObjectCoding.decode(kind: kind, body, revision: 0) == expected)
        }

        // What the store serves is what it held; every object written again is unchanged.
        let head = try await store.headRevision()
        for row in before where row["source"] == "objects" {
            let key = ObjectKey(kind: try ObjectCoding.kind(row["kind"]), namespace: row["namespace"], name: row["name"])
            var expected = try ProtobufBodies.decodeJSON(kind: key.kind, row["body"])
            expected.metadata.revision = Revision(UInt64(row["revision"] as Int64))
            let stored = try await store.get(key).object
            #expect(stored == expected)
            let reapplied = try await store.apply([ApplyItem(object: stored)])
            #expect(reapplied.objects.map(\.outcome) == [.unchanged], "\(key)")
        }
        #expect(try await store.headRevision() == head)
        let fromFirst = try await store.catchUp(from: 1, kinds: Set(ObjectKind.allCases))
        guard case .delta(_, let to, _, let changes) = fromFirst else {
            Issue.record("expected a delta, got \(fromFirst)")
            return
        }
        #expect(to == head)
        #expect(changes.contains { $0.key.name == "gone" && $0.object == nil })

        // The fixture uses every field the wire has.
        guard case .service(let lb) = try await store.get(ObjectKey(kind: .service, namespace: "shop", name: "lb")).object,
            case .service(let web) = try await store.get(ObjectKey(kind: .service, namespace: "shop", name: "web")).object
        else { throw StoreError.storage("services missing") }
        #expect(lb.loadBalancerIngressIPModes == [.vip, .proxy] && lb.healthCheckNodePort != nil)
        #expect(web.metadata.labels.count == 3 && web.clusterIPs.count == 2 && web.sessionAffinity == .clientIP(timeoutSeconds: 600))
    }

    /// A body the migration cannot read fails the opening with the object's name and changes
    /// nothing: the database can be repaired and opened again.
    @Test func aBodyThatCannotBeConvertedLeavesTheDatabaseAsItWas() async throws {
        let old = try OldDatabase()
        defer { old.remove() }
        try old.execute("UPDATE objects SET body = CAST('{}' AS BLOB) WHERE kind = 'EndpointSlice' AND name = 'lb-v4'")
        let before = try old.rows()
        #expect {
            _ = try Store(configuration: StoreConfiguration(path: old.path))
        } throws: { error in
            "\(error)".contains("cannot convert the body of EndpointSlice") && "\(error)".contains("lb-v4")
        }
        #expect(try old.rows() == before)
        #expect(try old.appliedMigrations() == Migrations.embedded.map(\.name))
    }

    @Test func aDatabaseMigratedByANewerServerIsRefused() async throws {
        let fixture = try TemporaryStore()
        defer { fixture.remove() }
        _ = try await fixture.store.apply([ApplyItem(object: service("web"))])
        try await fixture.store.pool.write { db in
            try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('9999_future')")
        }
        #expect {
            _ = try Store(configuration: fixture.store.configuration)
        } throws: { error in
            "\(error)".contains("a newer control-server migrated it")
        }
    }
}
