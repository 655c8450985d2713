import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import ProxyAPI
import ProxyGRPC
import ProxyModel
import Synchronization

@main
struct ProxyBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy-bench", abstract: "Benchmarks against real control-server and node-applier processes and the kernel's nftables.",
        subcommands: [Writes.self, Fanout.self, Joins.self, NFTablesBench.self])
}

struct ServerOptions: ParsableArguments {
    @Option(help: "The control-server binary to start (default: next to this binary).")
    var serverBinary: String = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        .appendingPathComponent("control-server").path
}

/// Durable endpoint updates per second through Apply.
struct Writes: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Durable one-endpoint updates per second through Apply.")

    @OptionGroup var server: ServerOptions

    @Option(help: "Concurrent clients, comma-separated.")
    var clients: String = "1,8,64"

    @Option(help: "Seconds per concurrency level.")
    var seconds: Double = 5

    @Option(help: "Endpoints per EndpointSlice.")
    var endpoints: Int = 10

    func run() async throws {
        let levels = clients.split(separator: ",").compactMap { Int($0) }
        print("writes: one-endpoint EndpointSlice updates (\(endpoints) endpoints per slice), synchronous=FULL")
        print("Server CPU: the control-server process's user and system time over the run, per update (the load generator")
        print("runs on the same cores and is not counted).")
        print("clients  updates  seconds  updates/s  p50 ms  p99 ms  revisions/commit  server CPU ms/update")
        for level in levels {
            let process = try await ServerProcess(binary: server.serverBinary)
            defer { process.stop() }
            let address = process.grpc
            let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
            let cpuBefore = try process.cpuSeconds()
            let started = ContinuousClock.now
            // One HTTP/2 connection per 16 clients.
            let connections = max(1, (level + 15) / 16)
            let latencies = try await withThrowingTaskGroup(of: [Duration].self) { group in
                for connection in 0..<connections {
                    let workers = (0..<level).filter { $0 % connections == connection }
                    group.addTask {
                        try await withClient(address) { client in
                            let registry = Kubeproxy_V1_Registry.Client(wrapping: client)
                            return try await withThrowingTaskGroup(of: [Duration].self) { inner in
                                for worker in workers {
                                    inner.addTask {
                                        var samples: [Duration] = []
                                        var generation = 0
                                        while ContinuousClock.now < deadline {
                                            generation += 1
                                            let object = benchSlice(service: worker, endpoints: endpoints, generation: generation)
                                            let begin = ContinuousClock.now
                                            _ = try await registry.apply(.with { $0.items = [.with { $0.object = object }] })
                                            samples.append(ContinuousClock.now - begin)
                                        }
                                        return samples
                                    }
                                }
                                return try await inner.reduce(into: []) { $0 += $1 }
                            }
                        }
                    }
                }
                return try await group.reduce(into: [Duration]()) { $0 += $1 }
            }
            let elapsed = (ContinuousClock.now - started).milliseconds / 1000
            let cpu = try process.cpuSeconds() - cpuBefore
            let sorted = latencies.sorted()
            let groupSize =
                try await process.metric("kubeproxy_store_committed_revisions_total")
                / process.metric("kubeproxy_store_commit_batches_total")
            print(
                String(
                    format: "%7d  %7d  %7.2f  %9.0f  %6.2f  %6.2f  %16.1f  %20.3f", level, latencies.count, elapsed,
                    Double(latencies.count) / elapsed, percentile(sorted, 50).milliseconds, percentile(sorted, 99).milliseconds,
                    groupSize, cpu * 1000 / Double(latencies.count)))
        }
    }
}

/// Fan-out latency, server memory per node and bytes per change.
struct Fanout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "N simulated nodes hold NodeSync streams; time from Apply returning to every node having the change.")

    @OptionGroup var server: ServerOptions

    @Option(help: "Simulated node counts, comma-separated.")
    var nodes: String = "100,1000"

    @Option(help: "Changes applied per run (one-endpoint updates, 20 ms apart).")
    var changes: Int = 50

    @Option(help: "Endpoints per EndpointSlice.")
    var endpoints: Int = 10

    @Option(help: "Services in the store before the nodes connect.")
    var services: Int = 100

    func run() async throws {
        print("fanout: \(changes) one-endpoint changes, \(services) services x \(endpoints) endpoints in the store")
        print("Latencies: until every node holds the change, measured from Apply returning (0 when all nodes had it first)")
        print("and from Apply being called. Bytes: the protobuf ServerMessage per node per change, as received and as counted by the server.")
        print("nodes  all p50 ms  all p99 ms  node p99 ms  from-call p50 ms  from-call p99 ms  RSS/node KiB  msg bytes  server bytes")
        for count in nodes.split(separator: ",").compactMap({ Int($0) }) {
            try await runOnce(nodeCount: count)
        }
    }

    private func runOnce(nodeCount: Int) async throws {
        let process = try await ServerProcess(binary: server.serverBinary)
        defer { process.stop() }
        let address = process.grpc
        try await store(services: services, endpoints: endpoints, at: address)
        let baseline = try process.residentBytes()
        let recorder = Recorder(nodes: nodeCount)
        let (ready, readyContinuation) = AsyncStream<Void>.makeStream()
        let nodesTask = Task {
            try await simulatedNodes(0..<nodeCount, at: address) { node, revision, message, first in
                if first {
                    readyContinuation.yield()
                } else {
                    recorder.received(node: node, to: revision, bytes: (try message.serializedBytes() as [UInt8]).count)
                }
            }
        }
        var connected = 0
        for await _ in ready {
            connected += 1
            if connected == nodeCount { break }
        }
        try await Task.sleep(for: .milliseconds(500))
        let withNodes = try process.residentBytes()
        let sentBefore = try await process.metric("kubeproxy_nodesync_sent_bytes_total")
        let (allNodes, perNodeLatencies, fromCall) = try await withClient(address) { client in
            var allNodes: [Duration] = []
            var perNode: [Duration] = []
            var fromCall: [Duration] = []
            let registry = Kubeproxy_V1_Registry.Client(wrapping: client)
            for change in 1...changes {
                let object = benchSlice(service: change % max(1, services), endpoints: endpoints, generation: change)
                let called = ContinuousClock.now
                let response = try await registry.apply(.with { $0.items = [.with { $0.object = object }] })
                let returned = ContinuousClock.now
                try await recorder.waitForAll(revision: response.revision)
                let latencies = recorder.latencies(revision: response.revision, since: returned)
                perNode += latencies
                allNodes.append(latencies.max() ?? .zero)
                fromCall.append(recorder.latencies(revision: response.revision, since: called).max() ?? .zero)
                try await Task.sleep(for: .milliseconds(20))
            }
            return (allNodes, perNode, fromCall)
        }
        let sentAfter = try await process.metric("kubeproxy_nodesync_sent_bytes_total")
        nodesTask.cancel()
        _ = await nodesTask.result
        let sorted = allNodes.sorted()
        let perNode = perNodeLatencies.sorted()
        let call = fromCall.sorted()
        print(
            String(
                format: "%5d  %10.2f  %10.2f  %11.2f  %16.2f  %16.2f  %12.1f  %9.0f  %12.0f", nodeCount,
                percentile(sorted, 50).milliseconds, percentile(sorted, 99).milliseconds, percentile(perNode, 99).milliseconds,
                percentile(call, 50).milliseconds, percentile(call, 99).milliseconds,
                Double(withNodes - baseline) / Double(nodeCount) / 1024, recorder.meanDeltaBytes(),
                (sentAfter - sentBefore) / Double(changes * nodeCount)))
    }
}

/// When each simulated node received each revision.
final class Recorder: Sendable {
    private struct State {
        /// Per node: (revision reached, when), in arrival order.
        var arrivals: [Int: [(revision: UInt64, at: ContinuousClock.Instant)]] = [:]
        var deltaBytes: [Int] = []
        var waiter: (revision: UInt64, continuation: CheckedContinuation<Void, Never>)?

        func reached(_ revision: UInt64, nodes: Int) -> Bool {
            arrivals.count == nodes && arrivals.values.allSatisfy { ($0.last?.revision ?? 0) >= revision }
        }
    }

    private let state = Mutex(State())
    let nodes: Int

    init(nodes: Int) { self.nodes = nodes }

    func received(node: Int, to revision: UInt64, bytes: Int) {
        let now = ContinuousClock.now
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.arrivals[node, default: []].append((revision, now))
            state.deltaBytes.append(bytes)
            guard let waiter = state.waiter, state.reached(waiter.revision, nodes: nodes) else { return nil }
            state.waiter = nil
            return waiter.continuation
        }
        waiter?.resume()
    }

    /// Waits until every node holds `revision` (at most 30 s).
    func waitForAll(revision: UInt64) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let done = self.state.withLock { state in
                        if state.reached(revision, nodes: self.nodes) { return true }
                        state.waiter = (revision, continuation)
                        return false
                    }
                    if done { continuation.resume() }
                }
            }
            group.addTask {
                try await Task.sleep(for: .seconds(30))
                throw BenchError("revision \(revision) did not reach every node within 30 s")
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// Per node, how long after `returned` it held `revision`.
    func latencies(revision: UInt64, since returned: ContinuousClock.Instant) -> [Duration] {
        state.withLock { state in
            state.arrivals.values.compactMap { arrivals in
                arrivals.first { $0.revision >= revision }.map { max(.zero, $0.at - returned) }
            }
        }
    }

    func meanDeltaBytes() -> Double {
        state.withLock { state in
            state.deltaBytes.isEmpty ? 0 : Double(state.deltaBytes.reduce(0, +)) / Double(state.deltaBytes.count)
        }
    }
}

/// Stores `services` services of `endpoints` endpoints each through Apply, 500 of each per call.
func store(services: Int, endpoints: Int, at address: HostPort) async throws {
    try await withClient(address) { client in
        let registry = Kubeproxy_V1_Registry.Client(wrapping: client)
        for batch in stride(from: 0, to: services, by: 500) {
            let items = (batch..<min(services, batch + 500)).flatMap { index in
                [benchService(index), benchSlice(service: index, endpoints: endpoints, generation: 0)]
            }
            _ = try await registry.apply(.with { $0.items = items.map { object in .with { $0.object = object } } })
        }
    }
}

/// Nodes `indices` (`simulatedNode`), 50 streams to an HTTP/2 connection, until their streams end;
/// `received` gets each message with the node's index.
func simulatedNodes(
    _ indices: Range<Int>, at address: HostPort,
    received: @escaping @Sendable (_ node: Int, _ revision: UInt64, _ message: Kubeproxy_V1_ServerMessage, _ first: Bool) throws -> Void
) async throws {
    try await withThrowingTaskGroup(of: Void.self) { connections in
        for connection in stride(from: indices.lowerBound, to: indices.upperBound, by: 50) {
            connections.addTask {
                try await withClient(address) { client in
                    try await withThrowingTaskGroup(of: Void.self) { streams in
                        for node in connection..<min(indices.upperBound, connection + 50) {
                            streams.addTask {
                                try await simulatedNode(client: client, index: node) { try received(node, $0, $1, $2) }
                            }
                        }
                        try await streams.waitForAll()
                    }
                }
            }
        }
        try await connections.waitForAll()
    }
}

/// Node `index`: joins with nothing applied over a NodeSync stream of its own and ACKs every Snapshot
/// and Delta; `received` gets each one, with its revision and whether it is the stream's first.
func simulatedNode(
    client: GRPCClient<HTTP2ClientTransport.Posix>, index: Int,
    received: @escaping @Sendable (_ revision: UInt64, _ message: Kubeproxy_V1_ServerMessage, _ first: Bool) throws -> Void
) async throws {
    let (outgoing, continuation) = AsyncStream<Kubeproxy_V1_NodeMessage>.makeStream()
    continuation.yield(
        .with {
            $0.hello = .with {
                $0.node = .with {
                    $0.metadata.name = "node-\(index)"
                    $0.addresses = ["10.250.\(index / 250 % 250).\(index % 250 + 1)"]
                }
            }
        })
    // A snapshot of thousands of services is far above gRPC's default 4 MiB message limit. The
    // transport checks responses against the request limit (grpc-swift-nio-transport 2.9.2).
    var options = CallOptions.defaults
    options.maxRequestMessageBytes = 1 << 30
    options.maxResponseMessageBytes = 1 << 30
    try await Kubeproxy_V1_NodeSync.Client(wrapping: client).sync(
        options: options,
        requestProducer: { writer in
            for await message in outgoing { try await writer.write(message) }
        },
        onResponse: { response in
            var first = true
            for try await message in response.messages {
                let revision: UInt64
                switch message.message {
                case .snapshot(let snapshot): revision = snapshot.revision
                case .delta(let delta): revision = delta.toRevision
                default: continue
                }
                try received(revision, message, first)
                first = false
                continuation.yield(.with { $0.ack = .with { $0.revision = revision } })
            }
        })
}
