import GRPCCore
import GRPCNIOTransportHTTP2
import ProxyAPI
import ProxyGRPC
import ProxyModel
import Testing

@testable import ControlServer

func webService(port: Int = 80) -> ProxyObject {
    .service(Service(metadata: ObjectMeta(namespace: "default", name: "web"), ports: [ServicePort(name: "http", port: port)]))
}

func webSlice(_ name: String = "web-1", endpoints: Int = 1, base: UInt32 = 0x0AF4_0000) -> ProxyObject {
    .endpointSlice(
        EndpointSlice(
            metadata: ObjectMeta(namespace: "default", name: name), serviceName: "web", addressType: .ipv4,
            ports: [EndpointPort(name: "http", port: 8080)],
            endpoints: (0..<endpoints).map {
                Endpoint(addresses: [.v4(base + UInt32($0) + 1)], nodeName: "node-\($0 % 7)", zone: "zone-a")
            }))
}

@discardableResult
func apply(_ client: GRPCClient<HTTP2ClientTransport.Posix>, _ objects: ProxyObject...) async throws -> UInt64 {
    try await Kubeproxy_V1_Registry.Client(wrapping: client).apply(
        .with { $0.items = objects.map { object in .with { $0.object = object.wire } } }
    ).revision
}

/// `kubeproxy_nodesync_snapshots_total`: snapshots the server read from its store.
func snapshotsRead(_ server: TestServer) -> Int {
    let text = String(decoding: server.app.metrics.render(), as: UTF8.self)
    let line = text.split(separator: "\n").first { $0.hasPrefix("kubeproxy_nodesync_snapshots_total ") }
    return line.flatMap { Int($0.split(separator: " ")[1]) } ?? 0
}

@Suite(.serialized) struct NodeSyncTests {
    @Test func freshNodeGetsASnapshotThenDeltas() async throws {
        try await withServer { server in
            try await server.withClient { client in
                try await apply(client, webService(), webSlice())
                let node = TestNode(client: client, name: "node-a")
                try await node.waitFor(revision: 1)
                #expect(node.received.first?.from == nil, "first message is a snapshot")
                #expect(node.received.first?.upserts == 2)
                let revision = try await apply(client, webSlice(endpoints: 3))
                try await node.waitFor(revision: revision)
                let last = try #require(node.received.last)
                #expect(last.from != nil && last.to == revision && last.upserts == 1)
                #expect(node.violations.isEmpty, "\(node.violations)")
                await node.close()
            }
        }
    }

    /// Nodes with nothing share snapshot reads: nodes joining together get one read, and a node
    /// joining after commits gets a snapshot at the head made from what was read and the commits.
    @Test func freshNodesShareOneSnapshotReadAcrossCommits() async throws {
        try await withServer { server in
            try await server.withClient { client in
                try await apply(client, webService(), webSlice("a"))
                let together = (0..<8).map { TestNode(client: client, name: "node-\($0)") }
                for node in together { try await node.waitForInitialSync() }
                #expect(snapshotsRead(server) == 1)
                let snapshot = try #require(together.first?.received.first)
                #expect(together.allSatisfy { $0.received.first.map { $0.from == nil && $0.to == snapshot.to } == true })
                try await apply(client, webSlice("b"))
                try await apply(client, webSlice("c"))
                let head = try await Kubeproxy_V1_Registry.Client(wrapping: client).delete(
                    .with { $0.items = [.with { $0.ref = .with { $0.kind = .endpointSlice; $0.namespace = "default"; $0.name = "c" } }] }
                ).revision
                let late = TestNode(client: client, name: "late")
                try await late.waitForInitialSync()
                #expect(snapshotsRead(server) == 1, "the late node's snapshot is made from the first read and the commits")
                #expect(late.received.map(\.from) == [nil])
                #expect(late.received.first?.to ?? 0 >= head)
                #expect(late.received.first?.upserts == 3, "web, and slices a and b")
                for node in together + [late] { await node.close() }
            }
        }
    }

    /// Commits while no node needs a snapshot bring the objects read forward, every half history,
    /// so that many more revisions than the history holds need no second read.
    @Test func objectsReadOnceStayWithinTheHistorysReach() async throws {
        try await withServer(retainedRevisions: 4) { server in
            try await server.withClient { client in
                try await apply(client, webService())
                let first = TestNode(client: client, name: "node-a")
                try await first.waitForInitialSync()
                var head: UInt64 = 0
                for index in 0..<12 { head = try await apply(client, webSlice("s\(index)")) }
                let late = TestNode(client: client, name: "node-b")
                try await late.waitForInitialSync()
                #expect(snapshotsRead(server) == 1)
                #expect(late.received.map(\.from) == [nil])
                #expect(late.received.first?.to ?? 0 >= head)
                #expect(late.received.first?.upserts == 13)
                await first.close()
                await late.close()
            }
        }
    }

    /// Objects the history no longer reaches are read again.
    @Test func snapshotSourceReadsAgainWhatTheHistoryNoLongerReaches() async throws {
        try await withServer { server in
            try await server.withClient { client in
                let metrics = ServerMetrics()
                let source = SnapshotSource(store: server.app.store, metrics: metrics)
                let before = Revision(try await apply(client, webService(), webSlice("a")))
                #expect(try await source.snapshot(atLeast: before) { _ in [] }.revision == before)
                let after = Revision(try await apply(client, webSlice("b")))
                // A history that starts after the objects read: only what is read at `after` is in reach.
                let snapshot = try await source.snapshot(atLeast: after) { [after] revision in revision >= after ? [] : nil }
                #expect(snapshot.revision == after)
                let message = try Kubeproxy_V1_ServerMessage(serializedBytes: snapshot.message.bytes)
                #expect(message.snapshot.endpointSlices.map(\.metadata.name) == ["a", "b"])
                let reads = String(decoding: metrics.render(), as: UTF8.self).contains("kubeproxy_nodesync_snapshots_total 2")
                #expect(reads)
            }
        }
    }

    /// Nodes joining with nothing, one after the other, while writes and deletes run
    /// concurrently: each gets a snapshot made from the objects read for the first node and the
    /// commits since, and ends holding exactly what the store holds.
    @Test func nodesJoiningDuringConcurrentWritesEndWithTheStoresObjects() async throws {
        try await withServer { server in
            try await server.withClient { client in
                let registry = Kubeproxy_V1_Registry.Client(wrapping: client)
                try await apply(client, webService())
                var nodes = [TestNode(client: client, name: "node-0")]
                try await nodes[0].waitForInitialSync()
                let last = try await withThrowingTaskGroup(of: UInt64.self) { group in
                    for index in 0..<90 {
                        group.addTask {
                            try await apply(client, webSlice("s\(index % 9)", endpoints: 1 + index % 4))
                            try await apply(client, webSlice("tmp-\(index)"))
                            return try await registry.delete(
                                .with { $0.items = [.with { $0.ref = .with { $0.kind = .endpointSlice; $0.namespace = "default"; $0.name = "tmp-\(index)" } }] }
                            ).revision
                        }
                    }
                    for index in 1..<6 {
                        let node = TestNode(client: client, name: "node-\(index)")
                        try await node.waitForInitialSync()
                        nodes.append(node)
                    }
                    return try await group.reduce(0, max)
                }
                #expect(snapshotsRead(server) == 1)
                #expect(Set(nodes.compactMap { $0.received.first?.to }).count > 1, "snapshots at several revisions")
                let store = server.app.store
                let stored = try await store.list(kind: .service, namespace: nil, limit: 100).objects
                    + store.list(kind: .endpointSlice, namespace: nil, limit: 100).objects
                #expect(stored.count == 10)
                for node in nodes {
                    try await node.waitFor(revision: last)
                    #expect(node.objects == Dictionary(uniqueKeysWithValues: stored.map { ($0.key, $0) }), "\(node.name)")
                    #expect(node.violations.isEmpty, "\(node.name): \(node.violations)")
                    await node.close()
                }
            }
        }
    }

    @Test func nodeResumingInsideTheLogGetsExactlyTheMissingChanges() async throws {
        try await withServer { server in
            try await server.withClient { client in
                try await apply(client, webService())  // 1
                try await apply(client, webSlice("a"))  // 2
                try await apply(client, webSlice("b"))  // 3
                try await apply(client, webSlice("c"))  // 4
                let node = TestNode(client: client, name: "node-a", applied: 2, storeID: server.app.store.identity)
                try await node.waitFor(revision: 4)
                let received = node.received
                #expect(received.count == 1)
                // Revision 5 registered the node itself: it carries nothing for nodes, so 4 is current.
                #expect(received[0].from == 2 && received[0].to == 4)
                #expect(received[0].upserts == 2, "slices b and c only")
                await node.close()
            }
        }
    }

    @Test func nodeResumingPastCompactionGetsASnapshot() async throws {
        try await withServer(retainedRevisions: 2) { server in
            try await server.withClient { client in
                for index in 0..<6 { try await apply(client, webSlice("s\(index)")) }
                let node = TestNode(client: client, name: "node-a", applied: 2, storeID: server.app.store.identity)
                try await node.waitFor(revision: 6)
                #expect(node.received.map(\.from) == [nil])
                #expect(node.received[0].upserts == 6)
                await node.close()
            }
        }
    }

    /// Nodes whose revision the log no longer holds start over from snapshots made from the read
    /// that served a node with nothing, not from reads of their own.
    @Test func nodesPastCompactionShareTheSnapshotSourcesRead() async throws {
        try await withServer(retainedRevisions: 4) { server in
            try await server.withClient { client in
                try await apply(client, webService())
                let first = TestNode(client: client, name: "node-a")
                try await first.waitForInitialSync()
                var head: UInt64 = 0
                for index in 0..<8 { head = try await apply(client, webSlice("s\(index)")) }
                let behind = (0..<3).map { TestNode(client: client, name: "behind-\($0)", applied: 2, storeID: server.app.store.identity) }
                for node in behind { try await node.waitFor(revision: head) }
                #expect(behind.allSatisfy { $0.received.first?.from == nil && $0.received.first?.upserts == 9 })
                #expect(snapshotsRead(server) == 1)
                for node in [first] + behind { await node.close() }
            }
        }
    }

    @Test func nodeFromAnotherStoreGetsASnapshotWhateverItsRevision() async throws {
        try await withServer { server in
            try await server.withClient { client in
                for index in 0..<4 { try await apply(client, webSlice("s\(index)")) }
                let stranger = TestNode(client: client, name: "node-a", applied: 2, storeID: "0123456789abcdef0123456789abcdef")
                let unknown = TestNode(client: client, name: "node-b", applied: 2)
                try await stranger.waitForInitialSync()
                try await unknown.waitForInitialSync()
                #expect(stranger.received.map(\.from) == [nil])
                #expect(unknown.received.map(\.from) == [nil])
                #expect(stranger.received[0].upserts == 4)
                await stranger.close()
                await unknown.close()
            }
        }
    }

    @Test func revisionsOnEveryStreamStrictlyIncreaseWithoutGapsUnderConcurrentWrites() async throws {
        try await withServer { server in
            try await server.withClient { client in
                let nodes = (0..<8).map { TestNode(client: client, name: "node-\($0)") }
                for node in nodes { try await node.waitForInitialSync() }
                let revisions = try await withThrowingTaskGroup(of: UInt64.self) { group in
                    for index in 0..<100 {
                        group.addTask { try await apply(client, webSlice("s\(index % 10)", endpoints: 1 + index % 5)) }
                    }
                    return try await group.reduce(into: [UInt64]()) { $0.append($1) }
                }
                let head = try #require(revisions.max())
                for node in nodes {
                    try await node.waitFor(revision: head)
                    #expect(node.violations.isEmpty, "\(node.name): \(node.violations)")
                    let deltas = node.received.dropFirst()
                    #expect(zip(deltas, deltas.dropFirst()).allSatisfy { $0.to == $1.from })
                }
                for node in nodes { await node.close() }
            }
        }
    }

    @Test func manyNodesReceiveTheSameChange() async throws {
        try await withServer { server in
            try await server.withClient { client in
                let nodes = (0..<50).map { TestNode(client: client, name: "node-\($0)") }
                for node in nodes { try await node.waitForInitialSync() }
                let revision = try await apply(client, webService(), webSlice(endpoints: 10))
                for node in nodes { try await node.waitFor(revision: revision) }
                for node in nodes {
                    #expect(node.received.last?.to == revision)
                    #expect(node.received.last?.upserts == 2, "\(node.name) got both objects")
                }
                for node in nodes { await node.close() }
            }
        }
    }

    @Test func stalledNodeDoesNotDelayOthersAndCatchesUpWithAMergedDelta() async throws {
        try await withServer { server in
            var small = HTTP2ClientTransport.Posix.Config.defaults
            small.http2.targetWindowSize = 65535
            try await server.withClient(config: small) { slowClient in
                try await server.withClient { client in
                    let fast = TestNode(client: client, name: "fast")
                    let slow = TestNode(client: slowClient, name: "slow")
                    try await fast.waitForInitialSync()
                    try await slow.waitForInitialSync()
                    slow.pauseReading()
                    var head: UInt64 = 0
                    // ~40 KB per revision: far more than the slow node's window and buffers.
                    for index in 0..<60 {
                        head = try await apply(client, webSlice("big", endpoints: 1000, base: 0x0A00_0000 + UInt32(index % 2) * 4096))
                    }
                    try await fast.waitFor(revision: head)
                    #expect(fast.received.count >= 2)
                    #expect(slow.applied < head, "the slow node really was stalled")
                    slow.resumeReading()
                    try await slow.waitFor(revision: head, seconds: 20)
                    #expect(slow.violations.isEmpty, "\(slow.violations)")
                    let merged = slow.received.filter { ($0.from.map { $0 + 1 } ?? $0.to) < $0.to }
                    #expect(!merged.isEmpty, "caught up with a delta spanning several revisions")
                    #expect(slow.received.count < 60, "no per-revision queue was kept for the slow node")
                    await fast.close()
                    await slow.close()
                }
            }
        }
    }

    @Test func nacksAreVisibleInGetNodeAndClearedByALaterAck() async throws {
        try await withServer { server in
            try await server.withClient { client in
                let registry = Kubeproxy_V1_Registry.Client(wrapping: client)
                let node = TestNode(client: client, name: "node-a", addresses: ["10.0.0.1", "fd00::1"])
                try await node.waitForInitialSync()
                node.rejectWith("nft: Error: syntax error")
                let bad = try await apply(client, webService())
                try await node.waitFor(revision: bad)
                let status = try await within(5, "the NACK in GetNode") {
                    while true {
                        let status = try await registry.getNode(.with { $0.name = "node-a" }).node
                        if !status.lastError.isEmpty { return status }
                        try await Task.sleep(for: .milliseconds(20))
                    }
                }
                #expect(status.lastError == "nft: Error: syntax error")
                #expect(status.lastErrorRevision == bad)
                #expect(status.connected)
                #expect(status.addresses == ["10.0.0.1", "fd00::1"])
                node.rejectWith(nil)
                let good = try await apply(client, webSlice())
                try await node.waitFor(revision: good)
                let cleared = try await within(5, "the ACK in GetNode") {
                    while true {
                        let status = try await registry.getNode(.with { $0.name = "node-a" }).node
                        if status.appliedRevision == good { return status }
                        try await Task.sleep(for: .milliseconds(20))
                    }
                }
                #expect(cleared.lastError.isEmpty)
                #expect(cleared.desiredRevision == good)
                let list = try await registry.listNodes(.init())
                #expect(list.nodes.map(\.name) == ["node-a"])
                #expect(list.headRevision == good)
                await node.close()
                let disconnected = try await within(5, "the node to show as disconnected") {
                    while true {
                        let status = try await registry.getNode(.with { $0.name = "node-a" }).node
                        if !status.connected { return status }
                        try await Task.sleep(for: .milliseconds(20))
                    }
                }
                #expect(disconnected.appliedRevision == good)
            }
        }
    }

    @Test func nodeStatusSurvivesAServerRestart() async throws {
        let first = try await TestServer()
        let revision = try await first.withClient { client in
            let written = try await apply(client, webService())
            let node = TestNode(client: client, name: "node-a")
            try await node.waitFor(revision: written)
            let applied = node.applied
            _ = try await within(5, "the ACK in GetNode") {
                while try await Registry(wrapping: client).getNode(.with { $0.name = "node-a" }).node.appliedRevision != applied {
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
            await node.close()
            return applied
        }
        await first.stop(keepingData: true)
        let second = try await TestServer(directory: first.directory)
        let status = try await second.withClient { client in
            try await Registry(wrapping: client).getNode(.with { $0.name = "node-a" }).node
        }
        await second.stop()
        #expect(status.appliedRevision == revision)
        #expect(status.desiredRevision == revision)
        #expect(!status.connected)
        #expect(status.lastSeenUnixNanos > 0)
    }

    @Test func silentNodeIsDisconnectedAndHeartbeatingNodeIsKept() async throws {
        try await withServer(heartbeat: .milliseconds(100)) { server in
            try await server.withClient { client in
                let silent = TestNode(client: client, name: "silent")
                let alive = TestNode(client: client, name: "alive", heartbeats: .milliseconds(50))
                try await silent.waitForInitialSync()
                try await alive.waitForInitialSync()
                let result = try await within(5, "the silent stream to be closed") { await silent.task.result }
                guard case .failure(let error) = result, let rpcError = error as? RPCError else {
                    Issue.record("expected the server to end the silent stream with an error")
                    return
                }
                #expect(rpcError.code == .unavailable)
                let revision = try await apply(client, webService())
                try await alive.waitFor(revision: revision)
                await alive.close()
            }
        }
    }

    /// The node's gRPC transport keeps the buffer a message arrived in until the next message: a
    /// heartbeat right behind a large message lets it go (heartbeats are otherwise an hour apart here).
    @Test func aLargeMessageIsFollowedByAHeartbeat() async throws {
        try await withServer(heartbeat: .seconds(3600)) { server in
            try await server.withClient { client in
                let slices = (0..<40).map { webSlice("web-\($0)", endpoints: 1000) }
                _ = try await Kubeproxy_V1_Registry.Client(wrapping: client).apply(
                    .with { $0.items = slices.map { object in .with { $0.object = object.wire } } })
                let node = TestNode(client: client, name: "node-a")
                try await node.waitForInitialSync()
                #expect(try #require(node.received.first).bytes >= NodeSyncService.largeMessageBytes)
                try await node.waitFor(heartbeats: 1)
                #expect(node.heartbeats == 1)
                await node.close()
            }
        }
    }

    @Test func streamsMustStartWithAValidHello() async throws {
        try await withServer { server in
            try await server.withClient { client in
                let sync = Kubeproxy_V1_NodeSync.Client(wrapping: client)
                for first in [
                    Kubeproxy_V1_NodeMessage.with { $0.ack = .with { $0.revision = 1 } },
                    Kubeproxy_V1_NodeMessage.with { $0.hello = .with { $0.node.metadata.name = "Bad_Name" } },
                ] {
                    await #expect {
                        try await sync.sync(
                            requestProducer: { writer in try await writer.write(first) },
                            onResponse: { response in for try await _ in response.messages {} })
                    } throws: { error in
                        (error as? RPCError)?.code == .invalidArgument
                    }
                }
            }
        }
    }

    @Test func gracefulShutdownEndsStreamsAsUnavailable() async throws {
        let server = try await TestServer()
        try await server.withClient { client in
            let node = TestNode(client: client, name: "node-a")
            try await node.waitForInitialSync()
            await server.group.triggerGracefulShutdown()
            let result = try await within(10, "the stream to end") { await node.task.result }
            if case .failure(let error) = result {
                #expect((error as? RPCError)?.code == .unavailable)
            } else {
                Issue.record("expected the stream to end with UNAVAILABLE")
            }
        }
        await server.stop()
    }
}
