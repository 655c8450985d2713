import Foundation
import ProxyAPI
import ProxyModel
import Synchronization
import Testing

@testable import StateStore

@Suite struct StoreWriteTests {
    @Test func everyWriteGetsTheNextRevisionAndUnchangedWritesGetNone() async throws {
        let fixture = try TemporaryStore()
        defer { fixture.remove() }
        let store = fixture.store
        let first = try await store.apply([ApplyItem(object: service("web"))])
        #expect(first.revision == 1)
        #expect(first.objects[0].outcome == .created)
        #expect(first.objects[0].object.metadata.revision == 1)
        let again = try await store.apply([ApplyItem(object: service("web"))])
        #expect(again.revision == 1)
        #expect(again.objects[0].outcome == .unchanged)
        let changed = try await store.apply([ApplyItem(object: service("web", port: 81))])
        #expect(changed.revision == 2)
        #expect(changed.objects[0].outcome == .configured)
        #expect(try await store.headRevision() == 2)
    }

    @Test func allocatesClusterIPsAndKeepsThemAcrossUpdates() async throws {
        let fixture = try TemporaryStore()
        defer { fixture.remove() }
        let store = fixture.store
        let created = try #require(try await store.apply([ApplyItem(object: service("web"))]).objects[0].object.asService)
        #expect(created.ipFamilies == [.ipv4])
        #expect(created.clusterIPs.count == 1)
        #expect(CIDR("10.96.0.0/12")!.contains(created.clusterIPs[0]))
        let updated = try #require(
            try await store.apply([ApplyItem(object: service("web", port: 8080))]).objects[0].object.asService)
        #expect(updated.clusterIPs == created.clusterIPs)

        let dual = try #require(
            try await store.apply([ApplyItem(object: service("dual") { $0.ipFamilyPolicy = .preferDualStack })])
                .objects[0].object.asService)
        #expect(dual.ipFamilies == [.ipv4, .ipv6])
        #expect(dual.clusterIPs.map(\.family) == [.ipv4, .ipv6])
        #expect(CIDR("fd00:10:96::/112")!.contains(dual.clusterIPs[1]))

        let v6 = try #require(
            try await store.apply([ApplyItem(object: service("v6") { $0.ipFamilies = [.ipv6] })]).objects[0].object.asService)
        #expect(v6.clusterIPs.map(\.family) == [.ipv6])
    }

    @Test func honoursRequestedClusterIPAndRefusesOneThatIsTaken() async throws {
        let fixture = try TemporaryStore()
        defer { fixture.remove() }
        let store = fixture.store
        let requested = try #require(
            try await store.apply([ApplyItem(object: service("dns") { $0.clusterIPs = [ip("10.96.0.10")] })])
                .objects[0].object.asService)
        #expect(requested.clusterIPs == [ip("10.96.0.10")])
        await #expect(throws: StoreError.alreadyAllocated(
            field: "items[1].spec.clusterIPs[0]", message: "10.96.0.10 is already allocated to service default/dns"))
        {
            _ = try await store.apply([
                ApplyItem(object: service("other")),
                ApplyItem(object: service("clash") { $0.clusterIPs = [ip("10.96.0.10")] }),
            ])
        }
        // Nothing of the failed request was stored.
        await #expect(throws: StoreError.notFound(key(.service, "other"))) { _ = try await store.get(key(.service, "other")) }
        #expect(try await store.headRevision() == 1)
        await #expect(throws: StoreError.self) {
            _ = try await store.apply([ApplyItem(object: service("dns") { $0.clusterIPs = [ip("10.96.0.11")] })])
        }
    }

    @Test func releasesAllocationsOnDelete() async throws {
        let fixture = try TemporaryStore()
        defer { fixture.remove() }
        let store = fixture.store
        _ = try await store.apply([
            ApplyItem(object: service("a") {
                $0.clusterIPs = [ip("10.96.0.10")]
                $0.type = .nodePort
                $0.ports[0].nodePort = 30080
            })
        ])
        let revision = try await store.delete([DeleteItem(key: key(.service, "a"))])
        #expect(revision == 2)
        let reused = try await store.apply([
            ApplyItem(object: service("b") {
                $0.clusterIPs = [ip("10.96.0.10")]
                $0.type = .nodePort
                $0.ports[0].nodePort = 30080
            })
        ])
        #expect(reused.objects[0].object.asService?.ports[0].nodePort == 30080)
        await #expect(throws: StoreError.notFound(key(.service, "a"))) {
            _ = try await store.delete([DeleteItem(key: key(.service, "a"))])
        }
    }

    @Test func allocatesNodePortsAndHealthCheckPorts() async throws {
        let fixture = try TemporaryStore()
        defer { fixture.remove() }
        let store = fixture.store
        let lb = try #require(
            try await store.apply([
                ApplyItem(object: service("lb") {
                    $0.type = .loadBalancer
                    $0.externalTrafficPolicy = .local
                    $0.ports.append(ServicePort(name: "dns", protocol: .udp, port: 53))
                })
            ]).objects[0].object.asService)
        let range = ValidationContext.defaultNodePortRange
        #expect(lb.ports.allSatisfy { $0.nodePort.map(range.contains) == true })
        #expect(try range.contains(#require(lb.healthCheckNodePort)))
        #expect(lb.healthCheckNodePort != lb.ports[0].nodePort)
        let taken = try #require(lb.ports[0].nodePort)
        await #expect(throws: StoreError.alreadyAllocated(
            field: "items[0].spec.ports[0].nodePort",
            message: "port \(taken)/TCP is already allocated to service default/lb"))
        {
            _ = try await store.apply([ApplyItem(object: service("np") {
                $0.type = .nodePort
                $0.ports[0].nodePort = taken
            })])
        }
        // The same number is free for another protocol.
        let udp = try await store.apply([
            ApplyItem(object: service("np") {
                $0.type = .nodePort
                $0.ports[0] = ServicePort(name: "u", protocol: .udp, port: 80, nodePort: taken)
            })
        ])
        #expect(udp.objects[0].object.asService?.ports[0].nodePort == taken)
        // Switching back to ClusterIP releases the ports.
        let plain = try await store.apply([ApplyItem(object: service("lb"))])
        #expect(plain.objects[0].object.asService?.ports[0].nodePort == nil)
        #expect(plain.objects[0].object.asService?.healthCheckNodePort == nil)
    }

    @Test func reportsExhaustionOfClusterIPsAndNodePorts() async throws {
        let fixture = try TemporaryStore(
            validation: ValidationContext(serviceCIDRs: [CIDR("10.96.0.0/30")!], nodePortRange: 30000...30001))
        defer { fixture.remove() }
        let store = fixture.store
        _ = try await store.apply([ApplyItem(object: service("a")), ApplyItem(object: service("b"))])
        await #expect(throws: StoreError.exhausted("no free ClusterIP left in the service CIDR 10.96.0.0/30")) {
            _ = try await store.apply([ApplyItem(object: service("c"))])
        }
        _ = try await store.apply([ApplyItem(object: service("a") {
            $0.type = .nodePort
            $0.ports.append(ServicePort(name: "b", port: 81))
        })])
        await #expect(throws: StoreError.exhausted("no free TCP NodePort left in the range 30000-30001")) {
            _ = try await store.apply([ApplyItem(object: service("b") { $0.type = .nodePort })])
        }
    }

    @Test func optimisticConcurrencyRejectsStaleWritesWithoutChangingAnything() async throws {
        let fixture = try TemporaryStore()
        defer { fixture.remove() }
        let store = fixture.store
        _ = try await store.apply([ApplyItem(object: service("web"), expectedRevision: 0)])
        await #expect(throws: StoreError.conflict(key(.service, "web"), expected: 0, actual: 1)) {
            _ = try await store.apply([ApplyItem(object: service("web", port: 81), expectedRevision: 0)])
        }
        await #expect(throws: StoreError.conflict(key(.service, "web"), expected: 7, actual: 1)) {
            _ = try await store.apply([ApplyItem(object: service("web", port: 81), expectedRevision: 7)])
        }
        let ok = try await store.apply([ApplyItem(object: service("web", port: 81), expectedRevision: 1)])
        #expect(ok.revision == 2)
        await #expect(throws: StoreError.conflict(key(.service, "web"), expected: 1, actual: 2)) {
            _ = try await store.delete([DeleteItem(key: key(.service, "web"), expectedRevision: 1)])
        }
        #expect(try await store.get(key(.service, "web")).object.asService?.ports[0].port == 81)
    }

    @Test func dryRunChecksAndAllocatesButStoresNothing() async throws {
        let fixture = try TemporaryStore()
        defer { fixture.remove() }
        let store = fixture.store
        let result = try await store.apply([ApplyItem(object: service("web"))], dryRun: true)
        #expect(result.revision == 0)
        #expect(result.objects[0].object.asService?.clusterIPs.count == 1)
        #expect(try await store.headRevision() == 0)
        await #expect(throws: StoreError.notFound(key(.service, "web"))) { _ = try await store.get(key(.service, "web")) }
    }

    @Test func invalidItemFailsTheWholeRequestWithItsFieldPath() async throws {
        let fixture = try TemporaryStore()
        defer { fixture.remove() }
        let store = fixture.store
        do {
            _ = try await store.apply([ApplyItem(object: service("ok")), ApplyItem(object: service("bad", port: 0))])
            Issue.record("expected an error")
        } catch {
            #expect(error == .invalid(ValidationError(field: "items[1].spec.ports[0].port", message: "must be between 1 and 65535, got 0")))
        }
        #expect(try await store.headRevision() == 0)
        await #expect(throws: StoreError.self) {
            _ = try await store.apply([ApplyItem(object: service("ok")), ApplyItem(object: service("ok"))])
        }
    }

    @Test func concurrentWritesAreGroupCommittedWithConsecutiveRevisions() async throws {
        let fixture = try TemporaryStore()
        defer { fixture.remove() }
        let store = fixture.store
        let revisions = try await withThrowingTaskGroup(of: Revision.self) { group in
            for index in 0..<64 {
                group.addTask {
                    try await store.apply([ApplyItem(object: slice("s\(index)", service: "web", addresses: ["10.244.0.\(index + 1)"]))])
                        .revision
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(revisions.sorted() == (1...64).map { Revision(UInt64($0)) })
        let page = try await store.list(kind: .endpointSlice, namespace: "default", limit: 100)
        #expect(page.objects.count == 64)
        #expect(page.revision == 64)
    }

    @Test func nodeStatusIsPersisted() async throws {
        let fixture = try TemporaryStore()
        defer { fixture.remove() }
        let store = fixture.store
        let node = Node(metadata: ObjectMeta(namespace: "", name: "node-a"), addresses: [ip("10.0.0.1")], zone: "z1")
        #expect(try await store.registerNode(node) == 1)
        #expect(try await store.registerNode(node) == 1)
        try await store.saveNodeStatuses([
            NodeStatus(name: "node-a", desiredRevision: 1, appliedRevision: 1, lastError: "boom", lastErrorRevision: 1, lastSeenUnixNanos: 42)
        ])
        let statuses = try await store.nodeStatuses()
        #expect(statuses == [
            NodeStatus(name: "node-a", addresses: [ip("10.0.0.1")], zone: "z1", desiredRevision: 1, appliedRevision: 1,
                       lastError: "boom", lastErrorRevision: 1, lastSeenUnixNanos: 42)
        ])
    }

    /// ipModes are stored with the service; a service whose ingress IPs are all VIP stores none.
    @Test func ingressIPModesAreStoredAndAbsentWhenAllVIP() async throws {
        let fixture = try TemporaryStore()
        defer { fixture.remove() }
        let proxied = service("lb") {
            $0.type = .loadBalancer
            $0.loadBalancerIngressIPs = [ip("192.0.2.10"), ip("192.0.2.11")]
            $0.loadBalancerIngressIPModes = [.vip, .proxy]
        }
        _ = try await fixture.store.apply([ApplyItem(object: proxied)])
        let stored = try await fixture.store.get(key(.service, "lb")).object
        guard case .service(let read) = stored else { throw StoreError.storage("not a service") }
        #expect(read.loadBalancerIngressIPModes == [.vip, .proxy])
        let plain = try WireService(serializedBytes: try ObjectCoding.encode(service("web") {
            $0.type = .loadBalancer
            $0.loadBalancerIngressIPs = [ip("192.0.2.12")]
        }))
        #expect(plain.loadBalancerIngressIps == ["192.0.2.12"] && plain.loadBalancerIngressIpModes.isEmpty)
    }

    /// `synchronous=FULL` on the connection that commits: the WAL is synced before a write is
    /// acknowledged (GRDB's pool sets its writer to NORMAL when it turns WAL on).
    @Test func theWriterSyncsEveryCommit() throws {
        let fixture = try TemporaryStore()
        defer { fixture.remove() }
        let mode = try fixture.store.pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
        #expect(mode == 2, "PRAGMA synchronous on the writer: 2 is FULL, 1 NORMAL")
        #expect(try fixture.store.pool.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") } == "wal")
    }

    /// SQLite's `max_page_count` stands in for a full disk here (`interop/test_crash.py` fills a
    /// real one): the write fails as `full`, observers hear of it, nothing of it is stored, reads
    /// go on, and once there is room the same write succeeds.
    @Test func aFullDatabaseFailsWritesAsFullUntilThereIsRoom() async throws {
        final class Failures: CommitObserver {
            let seen = Mutex<[(StoreError, Int)]>([])
            func committed(_ revisions: [CommittedRevision]) {}
            func failed(_ error: StoreError, writes: Int) { seen.withLock { $0.append((error, writes)) } }
        }
        let fixture = try TemporaryStore()
        defer { fixture.remove() }
        let failures = Failures()
        fixture.store.addObserver(failures)
        _ = try await fixture.store.apply([ApplyItem(object: service("web"))])
        let pages = try await fixture.store.pool.read { db in try Int.fetchOne(db, sql: "PRAGMA page_count") } ?? 0
        try await fixture.store.pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA max_page_count = \(pages)") }
        let addresses = (0..<1000).map { "10.1.\($0 / 250).\($0 % 250 + 1)" }
        let large = ApplyItem(object: slice("web-1", service: "web", addresses: addresses))

        let error = await #expect(throws: StoreError.self) { try await fixture.store.apply([large]) }
        guard case .full(let message) = error else {
            Issue.record("expected .full, got \(String(describing: error))")
            return
        }
        #expect(message.contains("full"))
        #expect(failures.seen.withLock { $0.map(\.1) } == [1])
        #expect(try await fixture.store.headRevision() == 1)
        #expect(try await fixture.store.get(key(.service, "web")).object.metadata.revision == 1)
        await #expect(throws: StoreError.notFound(key(.endpointSlice, "web-1"))) { try await fixture.store.get(key(.endpointSlice, "web-1")) }

        try await fixture.store.pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA max_page_count = 1073741823") }
        #expect(try await fixture.store.apply([large]).revision == 2)
        #expect(failures.seen.withLock { $0.count } == 1)
    }

    @Test func stateAndIdentitySurviveReopening() async throws {
        let fixture = try TemporaryStore()
        defer { fixture.remove() }
        let other = try TemporaryStore()
        defer { other.remove() }
        #expect(fixture.store.identity.count == 32)
        #expect(fixture.store.identity != other.store.identity)
        _ = try await fixture.store.apply([ApplyItem(object: service("web"))])
        let reopened = try Store(configuration: fixture.store.configuration)
        #expect(reopened.identity == fixture.store.identity)
        #expect(try await reopened.headRevision() == 1)
        #expect(try await reopened.get(key(.service, "web")).object.metadata.revision == 1)
    }
}

func ip(_ text: String) -> IPAddress { IPAddress(text)! }
