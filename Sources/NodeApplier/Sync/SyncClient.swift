import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import ProxyAPI
import ProxyGRPC
import ProxyModel
import Synchronization

public struct SyncClientConfiguration: Sendable {
    public var server: HostPort
    public var heartbeatInterval: Duration
    /// A stream on which nothing arrives for this long is given up (default 3 heartbeats).
    public var deadPeerTimeout: Duration
    public var initialBackoff: Duration
    public var maximumBackoff: Duration

    public init(
        server: HostPort, heartbeatInterval: Duration = .seconds(5), deadPeerTimeout: Duration? = nil,
        initialBackoff: Duration = .milliseconds(250), maximumBackoff: Duration = .seconds(30)
    ) {
        self.server = server
        self.heartbeatInterval = heartbeatInterval
        self.deadPeerTimeout = deadPeerTimeout ?? heartbeatInterval * 3
        self.initialBackoff = initialBackoff
        self.maximumBackoff = maximumBackoff
    }
}

/// The NodeSync stream: Hello with the held revision, Snapshots and Deltas into the applier in
/// order, ACK/NACK for what the kernel took, heartbeats both ways, reconnect with jittered
/// exponential backoff. While disconnected nothing changes on the node (fail static).
public final class SyncClient: Sendable {
    private let configuration: SyncClientConfiguration
    private let node: NodeConfig
    private let applier: Applier
    private let logger: Logger
    private let metrics: ApplierMetrics
    /// The open stream's outgoing queue, if any.
    private let outgoing = Mutex<AsyncStream<Kubeproxy_V1_NodeMessage>.Continuation?>(nil)
    /// Called after each Snapshot or Delta taken into the applier's state.
    private let onChange: @Sendable () -> Void
    private let connected = Atomic<Bool>(false)
    /// When the open stream last brought anything (dead-peer detection).
    private let lastHeard = Atomic<Int64>(0)

    public init(
        configuration: SyncClientConfiguration, node: NodeConfig, applier: Applier, logger: Logger, metrics: ApplierMetrics,
        onChange: @escaping @Sendable () -> Void
    ) {
        self.configuration = configuration
        self.node = node
        self.applier = applier
        self.logger = logger
        self.metrics = metrics
        self.onChange = onChange
    }

    static let maxMessageBytes = 1 << 30

    public var isConnected: Bool { connected.load(ordering: .relaxed) }

    /// Reports a sync's outcome on the open stream (dropped when there is none: the next Hello
    /// carries the revision anyway).
    public func report(_ outcome: SyncOutcome) {
        let message = Kubeproxy_V1_NodeMessage.with {
            switch outcome {
            case .applied(let revision): $0.ack = .with { $0.revision = revision }
            case .failed(let revision, let error):
                $0.nack = .with {
                    $0.revision = revision
                    $0.error = error
                }
            }
        }
        _ = outgoing.withLock { $0?.yield(message) }
    }

    /// Runs until cancelled.
    public func run() async throws {
        let address = configuration.server
        let target: any ResolvableTarget =
            switch address.resolvedIP {
            case let ip? where ip.family == .ipv4: .ipv4(address: ip.description, port: address.port)
            case let ip?: .ipv6(address: ip.description, port: address.port)
            case nil: .dns(host: address.host, port: address.port)
            }
        let transport = try HTTP2ClientTransport.Posix(target: target, transportSecurity: .plaintext)
        try await withGRPCClient(transport: transport) { client in
            let sync = Kubeproxy_V1_NodeSync.Client(wrapping: client)
            var backoff = configuration.initialBackoff
            while !Task.isCancelled {
                let start = ContinuousClock.now
                do {
                    try await stream(sync)
                } catch is CancellationError {
                    break
                } catch {
                    logger.warning("NodeSync stream ended", metadata: ["server": "\(address)", "error": "\(error)"])
                }
                connected.store(false, ordering: .relaxed)
                if ContinuousClock.now - start > configuration.maximumBackoff { backoff = configuration.initialBackoff }
                let jittered = backoff * Double.random(in: 0.5...1.0)
                logger.info("reconnecting", metadata: ["in": "\(jittered)"])
                try? await Task.sleep(for: jittered)
                backoff = min(backoff * 2, configuration.maximumBackoff)
            }
        }
    }

    private func stream(_ sync: Kubeproxy_V1_NodeSync.Client<HTTP2ClientTransport.Posix>) async throws {
        let held = await applier.held
        let hello = Kubeproxy_V1_NodeMessage.with {
            $0.hello = .with {
                $0.node = .with {
                    $0.metadata.name = node.nodeName
                    $0.addresses = node.nodeIPs.map(\.description)
                    $0.zone = node.zone ?? ""
                }
                $0.lastAppliedRevision = held.revision
                $0.storeID = held.storeID
            }
        }
        let (queue, continuation) = AsyncStream<Kubeproxy_V1_NodeMessage>.makeStream()
        outgoing.withLock { $0 = continuation }
        defer {
            outgoing.withLock { $0 = nil }
            continuation.finish()
        }
        lastHeard.store(WallClock.nowUnixNanos(), ordering: .relaxed)
        metrics.streamsOpened.increment()
        let configuration = self.configuration
        // A snapshot of a large cluster is far above gRPC's default 4 MiB message limit.
        var options = CallOptions.defaults
        options.maxRequestMessageBytes = Self.maxMessageBytes
        options.maxResponseMessageBytes = Self.maxMessageBytes
        try await sync.sync(
            options: options,
            requestProducer: { [self] writer in
                try await writer.write(hello)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await message in queue { try await writer.write(message) }
                    }
                    group.addTask {
                        while true {
                            try await Task.sleep(for: configuration.heartbeatInterval)
                            let silence = Duration.nanoseconds(WallClock.nowUnixNanos() - self.lastHeard.load(ordering: .relaxed))
                            if silence > configuration.deadPeerTimeout { throw DeadPeer(silence: silence) }
                            try await writer.write(.with { $0.heartbeat = .with { $0.unixNanos = WallClock.nowUnixNanos() } })
                        }
                    }
                    try await group.next()
                    group.cancelAll()
                }
            },
            onResponse: { [self] response in
                // Reading never waits for the applier: a sync can hold it for seconds, and the
                // server's heartbeats must still be heard meanwhile (dead-peer detection).
                let (inbox, deliver) = AsyncStream<Kubeproxy_V1_ServerMessage>.makeStream()
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        defer { deliver.finish() }
                        for try await message in response.messages {
                            self.lastHeard.store(WallClock.nowUnixNanos(), ordering: .relaxed)
                            if case .heartbeat = message.message { continue }
                            if !self.connected.load(ordering: .relaxed) {
                                self.connected.store(true, ordering: .relaxed)
                                self.logger.info("NodeSync stream open")
                            }
                            deliver.yield(message)
                        }
                    }
                    group.addTask {
                        for await message in inbox {
                            try await self.applier.receive(message)
                            self.onChange()
                        }
                    }
                    try await group.waitForAll()
                }
            })
    }

}

struct DeadPeer: Error, CustomStringConvertible {
    var silence: Duration
    var description: String { "nothing heard from the control server for \(silence)" }
}
