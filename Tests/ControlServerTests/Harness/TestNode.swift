import GRPCCore
import GRPCNIOTransportHTTP2
import ProxyAPI
import ProxyGRPC
import ProxyModel
import Synchronization

/// A simulated node-applier holding a real NodeSync stream. It records every Snapshot and
/// Delta it receives, checks the revision contract, and ACKs what it "applied" (or NACKs,
/// when told to). Reading can be paused to simulate a stalled node.
final class TestNode: Sendable {
    struct Received: Sendable {
        var from: UInt64?  // nil for a snapshot
        var to: UInt64
        var upserts: Int
        var deletes: Int
        var bytes: Int
    }

    let name: String
    private let outgoing: AsyncStream<Kubeproxy_V1_NodeMessage>.Continuation
    /// What the stream task and the test share.
    private final class Shared: Sendable {
        let state = Mutex<(received: [Received], applied: UInt64, violations: [String], heartbeats: Int)>(([], 0, [], 0))
        let gate = Mutex<CheckedContinuation<Void, Never>?>(nil)
        let paused = Atomic<Bool>(false)
        let nack = Mutex<String?>(nil)
        /// What the node holds: the snapshot, with the deltas since applied.
        let objects = Mutex<[ObjectKey: ProxyObject]>([:])
    }

    private let shared = Shared()
    private let updates: AsyncStream<Void>
    private let updatesContinuation: AsyncStream<Void>.Continuation
    let task: Task<Void, any Error>

    init(
        client: GRPCClient<HTTP2ClientTransport.Posix>, name: String, applied: UInt64 = 0, storeID: String = "",
        addresses: [String] = ["10.0.0.1"], heartbeats: Duration? = nil
    ) {
        self.name = name
        let (outgoingStream, outgoing) = AsyncStream<Kubeproxy_V1_NodeMessage>.makeStream()
        self.outgoing = outgoing
        (updates, updatesContinuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let shared = self.shared
        shared.state.withLock { $0.applied = applied }
        let hello = Kubeproxy_V1_NodeMessage.with {
            $0.hello = .with {
                $0.node = .with {
                    $0.metadata.name = name
                    $0.addresses = addresses
                    $0.zone = "zone-a"
                }
                $0.lastAppliedRevision = applied
                $0.storeID = storeID
            }
        }
        let sync = Kubeproxy_V1_NodeSync.Client(wrapping: client)
        task = Task { [updatesContinuation] in
            defer { updatesContinuation.finish() }
            try await sync.sync(
                requestProducer: { writer in
                    try await writer.write(hello)
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        if let heartbeats {
                            group.addTask {
                                while true {
                                    try await Task.sleep(for: heartbeats)
                                    outgoing.yield(.with { $0.heartbeat = .with { $0.unixNanos = 1 } })
                                }
                            }
                        }
                        group.addTask {
                            for await message in outgoingStream { try await writer.write(message) }
                        }
                        try await group.next()
                        group.cancelAll()
                    }
                },
                onResponse: { response in
                    for try await message in response.messages {
                        if shared.paused.load(ordering: .acquiring) {
                            await withCheckedContinuation { continuation in
                                shared.gate.withLock { $0 = continuation }
                            }
                        }
                        let received: Received
                        switch message.message {
                        case .snapshot(let snapshot):
                            let held =
                                try snapshot.services.map { ProxyObject.service(try Service(wire: $0)) }
                                + snapshot.endpointSlices.map { ProxyObject.endpointSlice(try EndpointSlice(wire: $0)) }
                            shared.objects.withLock { $0 = Dictionary(held.map { ($0.key, $0) }, uniquingKeysWith: { $1 }) }
                            received = Received(
                                from: nil, to: snapshot.revision, upserts: snapshot.services.count + snapshot.endpointSlices.count,
                                deletes: 0, bytes: (try message.serializedBytes() as [UInt8]).count)
                        case .delta(let delta):
                            let upserts = try delta.upserts.map { try ProxyObject(wire: $0) }
                            let deletes = try delta.deletes.map { try ObjectKey(wire: $0) }
                            shared.objects.withLock { objects in
                                for object in upserts { objects[object.key] = object }
                                for key in deletes { objects[key] = nil }
                            }
                            received = Received(
                                from: delta.fromRevision, to: delta.toRevision, upserts: delta.upserts.count,
                                deletes: delta.deletes.count, bytes: (try message.serializedBytes() as [UInt8]).count)
                        case .heartbeat:
                            shared.state.withLock { $0.heartbeats += 1 }
                            updatesContinuation.yield()
                            continue
                        case nil:
                            continue
                        }
                        shared.state.withLock { state in
                            if let from = received.from {
                                if from != state.applied {
                                    state.violations.append("delta \(from)->\(received.to) applied at \(state.applied)")
                                }
                                if received.to <= from { state.violations.append("delta \(from)->\(received.to) does not advance") }
                            }
                            state.received.append(received)
                            state.applied = received.to
                        }
                        if let error = shared.nack.withLock({ $0 }) {
                            outgoing.yield(.with { $0.nack = .with { $0.revision = received.to; $0.error = error } })
                        } else {
                            outgoing.yield(.with { $0.ack = .with { $0.revision = received.to } })
                        }
                        updatesContinuation.yield()
                    }
                })
        }
    }

    var received: [Received] { shared.state.withLock { $0.received } }
    var objects: [ObjectKey: ProxyObject] { shared.objects.withLock { $0 } }
    var applied: UInt64 { shared.state.withLock { $0.applied } }
    var violations: [String] { shared.state.withLock { $0.violations } }
    var heartbeats: Int { shared.state.withLock { $0.heartbeats } }

    /// Waits until the node has applied `revision` (or later).
    func waitFor(revision: UInt64, seconds: Double = 10) async throws {
        try await waitUntil("revision \(revision) (at \(applied))", seconds: seconds) { $0.applied >= revision }
    }

    /// Waits until the node has received `count` heartbeats.
    func waitFor(heartbeats count: Int) async throws {
        try await waitUntil("\(count) heartbeats (at \(heartbeats))", seconds: 10) { $0.heartbeats >= count }
    }

    /// Waits for the first Snapshot or Delta of the stream.
    func waitForInitialSync() async throws {
        try await waitUntil("its initial sync", seconds: 10) { !$0.received.isEmpty }
    }

    private func waitUntil(_ what: String, seconds: Double, _ done: @escaping @Sendable (TestNode) -> Bool) async throws {
        let updates = self.updates
        try await within(seconds, "node \(name) to reach \(what)") { [self] in
            while !done(self) {
                var iterator = updates.makeAsyncIterator()
                if await iterator.next() == nil, !done(self) { throw TimedOut(what: "stream of \(name) ended") }
            }
        }
    }

    func pauseReading() { shared.paused.store(true, ordering: .releasing) }

    func resumeReading() {
        shared.paused.store(false, ordering: .releasing)
        shared.gate.withLock { gate in
            gate?.resume()
            gate = nil
        }
    }

    /// From now on, answer every message with a NACK carrying `error`.
    func rejectWith(_ error: String?) { shared.nack.withLock { $0 = error } }

    func send(_ message: Kubeproxy_V1_NodeMessage) { outgoing.yield(message) }

    func close() async {
        outgoing.finish()
        resumeReading()
        task.cancel()
        _ = await task.result
    }
}
