import GRPCCore
import Synchronization
import GRPCProtobuf
import Logging
import ProxyAPI
import ProxyGRPC
import ProxyModel
import ServiceLifecycle
import StateStore

/// The NodeSync service: one bidirectional stream per node.
///
/// Registered by hand rather than through the generated protocol so that responses can be
/// pre-encoded `EncodedMessage`s (encode once, write to many). Clients use the generated
/// `Kubeproxy_V1_NodeSync.Client`; the bytes are ordinary `ServerMessage`s.
///
/// Status codes: INVALID_ARGUMENT (first message not a Hello, invalid node identity, a
/// second Hello), UNAVAILABLE (server shutting down, or no message from the node within
/// the liveness timeout).
public struct NodeSyncService: RegistrableRPCService {
    let store: Store
    let broadcaster: Broadcaster
    let tracker: NodeStatusTracker
    let configuration: NodeSyncConfiguration
    let metrics: ServerMetrics
    let logger: Logger

    public init(
        store: Store, broadcaster: Broadcaster, tracker: NodeStatusTracker, configuration: NodeSyncConfiguration,
        metrics: ServerMetrics, logger: Logger
    ) {
        self.store = store
        self.broadcaster = broadcaster
        self.tracker = tracker
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
    }

    public func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        router.registerHandler(
            forMethod: Kubeproxy_V1_NodeSync.Method.Sync.descriptor,
            deserializer: ProtobufDeserializer<Kubeproxy_V1_NodeMessage>(),
            serializer: EncodedMessageSerializer(),
            handler: { request, context in
                StreamingServerResponse(of: EncodedMessage.self) { writer in
                    try await self.sync(request.messages, writer: writer, context: context)
                    return [:]
                }
            })
    }

    private func sync(
        _ messages: RPCAsyncSequence<Kubeproxy_V1_NodeMessage, any Error>, writer: RPCWriter<EncodedMessage>,
        context: ServerContext
    ) async throws {
        var iterator = messages.makeAsyncIterator()
        guard let first = try await iterator.next(), case .hello(let hello) = first.message else {
            throw RPCError(code: .invalidArgument, message: "the first NodeSync message must be a Hello")
        }
        let node: Node
        do {
            node = try Node(wire: hello.node)
            try node.validate()
        } catch {
            throw RPCError(code: .invalidArgument, message: "hello.node: \(error)")
        }
        let name = node.metadata.name
        do {
            _ = try await store.registerNode(node)
        } catch {
            guard error.isStorageFailure else { throw error }
            // A server that cannot write (its disk full) still serves the state it has: the node
            // gets its rules, and registers when it next connects.
            logger.error("cannot register node; syncing it all the same", metadata: ["node": "\(name)", "error": "\(error)"])
        }
        let stored = try await store.nodeStatuses(named: name).first
        tracker.connected(node, stored: stored)
        // A revision from another store's history means nothing here: start from a snapshot.
        let applied = hello.storeID == store.identity ? Revision(hello.lastAppliedRevision) : .zero
        let (id, signals) = broadcaster.join(appliedRevision: applied)
        var streamLogger = self.logger
        streamLogger[metadataKey: "node"] = "\(name)"
        streamLogger[metadataKey: "stream"] = "\(id)"
        let logger = streamLogger
        logger.info(
            "node connected",
            metadata: ["applied": "\(hello.lastAppliedRevision)", "resumes": "\(applied != .zero)", "addresses": "\(node.addresses)"])
        defer {
            broadcaster.leave(id)
            tracker.disconnected(name)
            logger.info("node disconnected")
        }
        let liveness = Liveness()
        let rest = HandOff(iterator)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                while let message = try await rest.value.next() {
                    liveness.heard()
                    try self.handle(message, name: name, id: id, logger: logger)
                }
            }
            group.addTask {
                try await broadcaster.runWriter(id, signals: signals) { message in
                    try await writer.write(message)
                    // The node's gRPC transport keeps the buffer a message arrived in until the
                    // next message arrives (grpc-swift-nio-transport 2.9): after a snapshot of 50k
                    // services that held 18 MB for up to a heartbeat interval. One right behind a
                    // large message lets the node free it at once.
                    if message.bytes.count >= Self.largeMessageBytes {
                        try await writer.write(try SyncMessages.heartbeat(unixNanos: WallClock.nowUnixNanos()))
                    }
                    liveness.wrote()
                    if let sent = broadcaster.sentRevision(id) { tracker.sent(name, revision: sent) }
                } idle: {
                    if liveness.heartbeatDue(interval: configuration.heartbeatInterval) {
                        try await writer.write(try SyncMessages.heartbeat(unixNanos: WallClock.nowUnixNanos()))
                        liveness.wrote()
                    }
                }
                throw RPCError(code: .unavailable, message: "the control server is shutting down")
            }
            group.addTask {
                while true {
                    try await Task.sleep(for: configuration.heartbeatInterval)
                    if liveness.silentFor > configuration.livenessTimeout {
                        throw RPCError(
                            code: .unavailable,
                            message: "no message from node \(name) for \(configuration.livenessTimeout); closing the stream")
                    }
                    broadcaster.wake(id)
                }
            }
            group.addTask {
                // A bidi handler is not cancelled when its client goes away: watch for it.
                try await context.cancellation.cancelled
            }
            _ = try await group.next()
            group.cancelAll()
        }
        // A task may also end without an error as the server shuts down (the RPC cancelled, or
        // the node's half of the stream closed, before the writer saw the shutdown): the node must
        // still be told to reconnect, not that the stream is done. (CI once saw the stream end OK.)
        if context.cancellation.isCancelled || Task.isShuttingDownGracefully {
            throw RPCError(code: .unavailable, message: "the control server is shutting down")
        }
    }

    /// Messages from this size on are followed by a heartbeat (see the writer).
    static let largeMessageBytes = 1 << 20

    private func handle(_ message: Kubeproxy_V1_NodeMessage, name: String, id: ConnectionID, logger: Logger) throws {
        switch message.message {
        case .ack(let ack):
            tracker.acked(name, revision: Revision(ack.revision))
        case .nack(let nack):
            metrics.nacks.increment()
            logger.warning("node rejected revision", metadata: ["revision": "\(nack.revision)", "error": "\(nack.error)"])
            tracker.nacked(name, revision: Revision(nack.revision), error: nack.error)
        case .heartbeat:
            tracker.seen(name)
        case .resync(let request):
            logger.info("node asked for a resync", metadata: ["applied": "\(request.lastAppliedRevision)"])
            broadcaster.resync(id, appliedRevision: Revision(request.lastAppliedRevision))
        case .hello:
            throw RPCError(code: .invalidArgument, message: "Hello may only be the first message of a stream")
        case nil:
            throw RPCError(code: .invalidArgument, message: "message: required (ack, nack, heartbeat or resync)")
        }
    }
}

/// Moves the request iterator, after the Hello was read from it, to the one child task that
/// reads the rest of the stream. Nothing else touches it after the hand-off.
private final class HandOff<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}

/// Timing of one stream's traffic, for heartbeats and dead-peer detection.
private final class Liveness: Sendable {
    private let lastHeard = Atomic<Int64>(WallClock.nowUnixNanos())
    private let lastWritten = Atomic<Int64>(WallClock.nowUnixNanos())

    func heard() { lastHeard.store(WallClock.nowUnixNanos(), ordering: .relaxed) }
    func wrote() { lastWritten.store(WallClock.nowUnixNanos(), ordering: .relaxed) }

    var silentFor: Duration { .nanoseconds(WallClock.nowUnixNanos() - lastHeard.load(ordering: .relaxed)) }

    func heartbeatDue(interval: Duration) -> Bool {
        .nanoseconds(WallClock.nowUnixNanos() - lastWritten.load(ordering: .relaxed)) >= interval
    }
}

/// Timing of NodeSync streams.
public struct NodeSyncConfiguration: Sendable {
    /// How often each side sends a heartbeat when it has nothing else to send (default 5 s).
    public var heartbeatInterval: Duration
    /// A stream on which nothing arrives for this long is closed (default 3 heartbeats).
    public var livenessTimeout: Duration
    /// Recent revisions kept in memory to serve nodes that fell slightly behind (default 4096).
    public var historyLimit: Int

    public init(heartbeatInterval: Duration = .seconds(5), livenessTimeout: Duration? = nil, historyLimit: Int = 4096) {
        self.heartbeatInterval = heartbeatInterval
        self.livenessTimeout = livenessTimeout ?? heartbeatInterval * 3
        self.historyLimit = historyLimit
    }
}
