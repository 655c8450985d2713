import Foundation
import ProxyAPI
import ProxyModel
import Testing

@testable import StateStore

@Suite struct StoreReadTests {
    @Test func historyDeliversEachRevisionAndCompactionIsReported() async throws {
        let fixture = try TemporaryStore(retainedRevisions: 3)
        defer { fixture.remove() }
        let store = fixture.store
        for index in 1...6 {
            _ = try await store.apply([ApplyItem(object: slice("s", service: "web", addresses: ["10.244.0.\(index)"]))])
        }
        #expect(try await store.compactedRevision() == 3)
        let history = try await store.history(after: 3, limit: 10)
        #expect(history.map(\.revision) == [4, 5, 6])
        #expect(history.allSatisfy { $0.changes.count == 1 })
        await #expect(throws: StoreError.compacted(requested: 2, compacted: 3)) {
            _ = try await store.history(after: 2, limit: 10)
        }
    }

    @Test func catchUpIsADeltaInsideTheLogAndASnapshotOutside() async throws {
        let fixture = try TemporaryStore(retainedRevisions: 3)
        defer { fixture.remove() }
        let store = fixture.store
        _ = try await store.apply([ApplyItem(object: service("web"))])
        _ = try await store.apply([ApplyItem(object: slice("a", service: "web", addresses: ["10.244.0.1"]))])
        _ = try await store.apply([ApplyItem(object: slice("a", service: "web", addresses: ["10.244.0.2"]))])
        _ = try await store.apply([ApplyItem(object: slice("b", service: "web", addresses: ["10.244.0.3"]))])
        _ = try await store.delete([DeleteItem(key: key(.endpointSlice, "b"))])
        let kinds: Set<ObjectKind> = [.service, .endpointSlice]
        guard case .delta(let from, let to, _, let changes) = try await store.catchUp(from: 2, kinds: kinds) else {
            Issue.record("expected a delta")
            return
        }
        #expect(from == 2 && to == 5)
        // Merged: slice a at its latest state, slice b deleted.
        #expect(changes.map(\.key.name) == ["a", "b"])
        #expect(changes[1].object == nil)
        if case .endpointSlice(let a) = changes[0].object {
            #expect(a.endpoints[0].addresses == [ip("10.244.0.2")])
        } else {
            Issue.record("expected slice a")
        }
        guard case .snapshotNeeded(head: 5) = try await store.catchUp(from: 1, kinds: kinds) else {
            Issue.record("expected a snapshot past compaction")
            return
        }
        #expect(try await store.encodedSnapshot(kinds: kinds).objects.map(\.key.name).sorted() == ["a", "web"])
        guard case .upToDate(5) = try await store.catchUp(from: 5, kinds: kinds) else {
            Issue.record("expected up to date")
            return
        }
        guard case .snapshotNeeded(head: 5) = try await store.catchUp(from: 0, kinds: kinds) else {
            Issue.record("a node with nothing gets a snapshot")
            return
        }
        guard case .snapshotNeeded(head: 5) = try await store.catchUp(from: 6, kinds: kinds) else {
            Issue.record("a node ahead of the store gets a snapshot")
            return
        }
    }

    /// Objects of an encoded snapshot, read back as the wire messages they are.
    func decoded(_ snapshot: EncodedSnapshot) throws -> [ProxyObject] {
        try snapshot.objects.map { object -> ProxyObject in
            switch object.key.kind {
            case .service: .service(try Service(wire: WireService(serializedBytes: object.bytes)))
            case .endpointSlice: .endpointSlice(try EndpointSlice(wire: WireEndpointSlice(serializedBytes: object.bytes)))
            case .node: .node(try Node(wire: WireNode(serializedBytes: object.bytes)))
            }
        }
    }

    /// Many objects come back complete, in store order, each with its own body and revision.
    @Test func snapshotKeepsOrderAndContent() async throws {
        let fixture = try TemporaryStore()
        defer { fixture.remove() }
        let store = fixture.store
        func address(_ index: Int) -> String { "10.244.\(index / 250).\(index % 250 + 1)" }
        let count = 9_000
        for start in stride(from: 0, to: count, by: 1_000) {
            _ = try await store.apply(
                (start..<min(count, start + 1_000)).map { index in
                    ApplyItem(object: slice(String(format: "s%05d", index), service: "web", addresses: [address(index)]))
                })
        }
        _ = try await store.apply([ApplyItem(object: service("web"))])
        let objects = try decoded(try await store.encodedSnapshot(kinds: [.service, .endpointSlice]))
        #expect(objects.count == count + 1)
        let slices = objects.compactMap { object -> EndpointSlice? in
            if case .endpointSlice(let slice) = object { return slice }
            return nil
        }
        #expect(slices.count == count)
        let misplaced = slices.indices.filter { index in
            slices[index].metadata.name != String(format: "s%05d", index)
                || slices[index].endpoints.first?.addresses != [IPAddress(address(index))!]
                || slices[index].metadata.revision != Revision(UInt64(index / 1_000 + 1))
        }
        #expect(misplaced.isEmpty, "\(misplaced.count) slices out of place or with another's body, the first at \(misplaced.first ?? 0)")
    }

    /// Encoded snapshots are the stored bodies with their revisions added, not decoded: read as
    /// wire messages, they are the objects the store holds, labels and all.
    @Test func encodedSnapshotsAreTheObjectsWireMessages() async throws {
        let fixture = try TemporaryStore()
        defer { fixture.remove() }
        let store = fixture.store
        for index in 0..<3 {
            _ = try await store.apply([
                ApplyItem(object: service("svc\(index)", port: 80 + index) {
                    $0.metadata.labels = ["app": "svc\(index)", "tier": "web", "zone": "a"]
                }),
                ApplyItem(object: slice("svc\(index)-a", service: "svc\(index)", addresses: ["10.244.0.\(index + 1)"])),
            ])
        }
        _ = try await store.apply([ApplyItem(object: slice("svc0-a", service: "svc0", addresses: ["10.244.0.9"]))])
        _ = try await store.apply([ApplyItem(object: .node(Node(metadata: ObjectMeta(namespace: "", name: "node-a"), addresses: [ip("192.168.0.1")])))])
        let encoded = try await store.encodedSnapshot(kinds: [.service, .endpointSlice])
        #expect(encoded.revision == 5)
        #expect(encoded.commitTimeUnixNanos == (try await store.history(after: 4, limit: 1)).first?.commitTimeUnixNanos)
        let stored = try await store.list(kind: .endpointSlice, namespace: nil, limit: 100).objects
            + store.list(kind: .service, namespace: nil, limit: 100).objects
        let read = try decoded(encoded)
        #expect(read == stored)
        #expect(encoded.objects.map(\.key) == stored.map(\.key))
        #expect(read.map(\.metadata.revision) == [4, 2, 3, 1, 2, 3])
        #expect(read.allSatisfy { $0.kind == .endpointSlice || $0.metadata.labels.count == 3 })
    }

    @Test func pagedListingIsConsistentOrExpires() async throws {
        let fixture = try TemporaryStore()
        defer { fixture.remove() }
        let store = fixture.store
        _ = try await store.apply((0..<5).map { ApplyItem(object: service("svc\($0)")) })
        _ = try await store.apply([ApplyItem(object: service("other", namespace: "kube-system"))])
        let first = try await store.list(kind: .service, namespace: "default", limit: 2)
        #expect(first.objects.map(\.metadata.name) == ["svc0", "svc1"])
        let continuation = try #require(first.continueToken)
        // A change to an object already listed does not disturb the listing.
        _ = try await store.apply([ApplyItem(object: service("svc0", port: 81))])
        let second = try await store.list(kind: .service, namespace: "default", limit: 2, continuation: continuation)
        #expect(second.objects.map(\.metadata.name) == ["svc2", "svc3"])
        #expect(second.revision == first.revision)
        // A change to an object not yet listed does.
        _ = try await store.apply([ApplyItem(object: service("svc4", port: 81))])
        await #expect(throws: StoreError.self) {
            _ = try await store.list(kind: .service, namespace: "default", limit: 2, continuation: second.continueToken)
        }
        let all = try await store.list(kind: .service, namespace: nil, limit: 100)
        #expect(all.objects.count == 6)
        #expect(all.continueToken == nil)
    }

    /// A page ends before its stored bodies would add up to more than `maxBytes`, with at least
    /// one object in it; following the tokens lists every object once, in order.
    @Test func pagesStopAtTheirByteBudget() async throws {
        let fixture = try TemporaryStore()
        defer { fixture.remove() }
        let store = fixture.store
        _ = try await store.apply((0..<5).map { ApplyItem(object: service("svc\($0)")) })
        let size = try await store.pool.read { db in
            try Int.fetchOne(db, sql: "SELECT MAX(LENGTH(body)) FROM objects WHERE kind = 'Service'")
        } ?? 0
        #expect(size > 0)
        for (budget, pages) in [(2 * size, [2, 2, 1]), (size, [1, 1, 1, 1, 1]), (1, [1, 1, 1, 1, 1]), (Int.max, [5])] {
            var sizes: [Int] = []
            var names: [String] = []
            var token: ListContinuation?
            repeat {
                let page = try await store.list(kind: .service, namespace: nil, limit: 100, maxBytes: budget, continuation: token)
                sizes.append(page.objects.count)
                names += page.objects.map(\.metadata.name)
                token = page.continueToken
            } while token != nil
            #expect(sizes == pages, "budget \(budget)")
            #expect(names == (0..<5).map { "svc\($0)" })
        }
    }

    @Test func migrationsEmbeddedInTheBinaryMatchTheSchemaDirectory() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let directory = root.appendingPathComponent("schema/sqlite")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".sql") }.sorted()
        #expect(files == Migrations.embedded.map(\.name))
        for migration in Migrations.embedded {
            let text = try String(contentsOf: directory.appendingPathComponent(migration.name), encoding: .utf8)
            #expect(text == migration.sql + "\n", "run scripts/generate-migrations.sh after editing \(migration.name)")
        }
    }
}
