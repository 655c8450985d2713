import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import ProxyAPI
import ProxyGRPC
import Synchronization

/// Fresh nodes joining at once while changes are committed (a node-applier rollout, nodes added
/// to a busy cluster): how long each waits until it holds what was committed before it joined,
/// and what that costs the server.
struct Joins: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fresh nodes joining at once while changes are committed: time until each holds the state, server CPU.")

    @OptionGroup var server: ServerOptions

    @Option(help: "Services in the store, 10 endpoints each.")
    var services: Int = 10_000

    @Option(help: "Fresh nodes joining at once, comma-separated (a server of its own for each count).")
    var nodes: String = "1,10,50"

    @Option(help: "Milliseconds between the one-endpoint changes committed while nodes join (0: none).")
    var changeInterval: Int = 50

    @Option(help: "Waves of fresh nodes per server, one after the other; the first has the server read its store.")
    var waves: Int = 2

    func run() async throws {
        print("joins: \(services) services x 10 endpoints stored; a one-endpoint change every \(changeInterval) ms while nodes join")
        print("Per node: from joining until it holds the revision committed before it joined. Server: CPU over the wave,")
        print("snapshots read from its store (kubeproxy_nodesync_snapshots_total), resident memory after the wave and its")
        print("peak so far (VmHWM).")
        print("nodes  wave  p50 s  max s  server CPU s  snapshots read  server RSS MB  server peak MB")
        for count in nodes.split(separator: ",").compactMap({ Int($0) }) {
            try await runOnce(nodeCount: count)
        }
    }

    private func runOnce(nodeCount: Int) async throws {
        let process = try await ServerProcess(binary: server.serverBinary)
        defer { process.stop() }
        let address = process.grpc
        try await store(services: services, endpoints: 10, at: address)
        let committed = Committed()
        let changes = Task {
            guard changeInterval > 0 else { return }
            try await withClient(address) { client in
                let registry = Kubeproxy_V1_Registry.Client(wrapping: client)
                var change = 1
                while !Task.isCancelled {
                    let object = benchSlice(service: change % services, endpoints: 10, generation: change)
                    let response = try await registry.apply(.with { $0.items = [.with { $0.object = object }] })
                    committed.revision.store(response.revision, ordering: .relaxed)
                    change += 1
                    try await Task.sleep(for: .milliseconds(changeInterval))
                }
            }
        }
        defer { changes.cancel() }
        print(
            String(
                format: "%5d  server RSS before the first wave: %.0f MB (peak %.0f MB)", nodeCount, Double(try process.residentBytes()) / 1e6,
                Double(try process.peakResidentBytes()) / 1e6))
        for wave in 1...max(1, waves) {
            // Let changes flow before the nodes join.
            try await Task.sleep(for: .seconds(1))
            let target = committed.revision.load(ordering: .relaxed)
            try await join(wave: wave, nodeCount: nodeCount, process: process, target: target)
            guard changeInterval == 0 || committed.revision.load(ordering: .relaxed) > target else {
                throw BenchError("no change was committed during wave \(wave): \(await changes.result)")
            }
        }
    }

    /// `nodeCount` fresh nodes join at once and stay until each holds `target`.
    private func join(wave: Int, nodeCount: Int, process: ServerProcess, target: UInt64) async throws {
        let address = process.grpc
        let cpuBefore = try process.cpuSeconds()
        let snapshotsBefore = try await process.metric("kubeproxy_nodesync_snapshots_total")
        let start = ContinuousClock.now
        let synced = Synced()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await simulatedNodes(wave * nodeCount..<(wave + 1) * nodeCount, at: address) { node, revision, _, _ in
                    guard revision >= target else { return }
                    let now = ContinuousClock.now
                    synced.times.withLock { if $0[node] == nil { $0[node] = now - start } }
                }
                throw BenchError("the nodes' streams ended")
            }
            group.addTask {
                while synced.times.withLock({ $0.count }) < nodeCount {
                    guard ContinuousClock.now - start < .seconds(300) else { throw BenchError("nodes did not all sync within 300 s") }
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
            try await group.next()
            group.cancelAll()
        }
        let cpu = try process.cpuSeconds() - cpuBefore
        let snapshots = try await process.metric("kubeproxy_nodesync_snapshots_total") - snapshotsBefore
        let times = synced.times.withLock { $0.values.sorted() }
        print(
            String(
                format: "%5d  %4d  %5.2f  %5.2f  %12.2f  %14.0f  %13.0f  %14.0f", nodeCount, wave, percentile(times, 50).milliseconds / 1000,
                (times.last ?? .zero).milliseconds / 1000, cpu, snapshots, Double(try process.residentBytes()) / 1e6,
                Double(try process.peakResidentBytes()) / 1e6))
    }
}

/// The revision of the newest change committed.
private final class Committed: Sendable {
    let revision = Atomic<UInt64>(0)
}

/// Per node of a wave, when it held the target revision, from the wave's start.
private final class Synced: Sendable {
    let times = Mutex<[Int: Duration]>([:])
}
