import Foundation
import GRPCCore
import Logging
import NodeApplier
import ProxyAPI
import ProxyGRPC
import ProxyModel
import Synchronization
import Testing

/// The real node-applier's NodeSync client against a real control server.
@Suite(.serialized) struct NodeApplierStreamTests {
    /// A kernel whose first transaction takes `seconds`, blocking the applier as the real one does.
    final class SlowNFTables: NFTablesClient {
        let inner = FakeNFTables()
        let seconds: Double
        let started: AsyncStream<Void>.Continuation

        init(seconds: Double, started: AsyncStream<Void>.Continuation) {
            self.seconds = seconds
            self.started = started
        }

        func apply(_ transaction: consuming NFTTransaction) throws {
            if inner.transactions == 0 {
                started.yield()
                Thread.sleep(forTimeInterval: seconds)
            }
            try inner.apply(transaction)
        }

        func shape(family: NFTFamily, table: String) throws -> NFTTableShape? { try inner.shape(family: family, table: table) }

        func kernelTables(family: NFTFamily, table: String) throws -> [String] { try inner.kernelTables(family: family, table: table) }

        func generation() throws -> RulesetGeneration { try inner.generation() }
    }

    /// A Delta that arrives while a sync holds the applier for longer than the dead-peer timeout
    /// must not cost the stream: the server's heartbeats are still read meanwhile.
    @Test func syncLongerThanTheDeadPeerTimeoutKeepsTheStream() async throws {
        try await withServer(heartbeat: .milliseconds(500)) { server in
            try await server.withClient { client in
                let registry = Kubeproxy_V1_Registry.Client(wrapping: client)
                let first = try await apply(client, webService(), webSlice())
                let (started, startedContinuation) = AsyncStream<Void>.makeStream()
                var logger = Logger(label: "test-applier")
                logger.logLevel = .warning
                let metrics = ApplierMetrics()
                let node = NodeConfig(nodeName: "node-0")
                let applier = Applier(
                    node: node, tableName: "kp",
                    nft: SlowNFTables(seconds: 4, started: startedContinuation), metrics: metrics, logger: logger)
                let (changes, changed) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
                let sync = SyncClient(
                    configuration: SyncClientConfiguration(server: server.address, heartbeatInterval: .milliseconds(500)),
                    node: node, applier: applier, logger: logger, metrics: metrics
                ) { changed.yield() }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await sync.run() }
                    group.addTask {
                        for await _ in changes {
                            if let outcome = await applier.sync() { sync.report(outcome) }
                        }
                    }
                    // While the snapshot's sync holds the applier (8 heartbeats), a Delta arrives.
                    var iterator = started.makeAsyncIterator()
                    _ = await iterator.next()
                    let second = try await apply(client, webSlice(endpoints: 3))
                    try await within(20, "node-0 to apply revision \(second)") {
                        while try await registry.getNode(.with { $0.name = "node-0" }).node.appliedRevision != second {
                            try await Task.sleep(for: .milliseconds(20))
                        }
                    }
                    #expect(second > first)
                    let opened = String(decoding: metrics.render(), as: UTF8.self).split(separator: "\n")
                        .filter { $0.hasPrefix("kubeproxy_node_applier_sync_streams_opened_total ") }
                    #expect(opened == ["kubeproxy_node_applier_sync_streams_opened_total 1"])
                    group.cancelAll()
                }
            }
        }
    }
}
