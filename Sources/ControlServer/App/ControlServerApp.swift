import CMalloc
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import ProxyAPI
import ProxyModel
import ServiceLifecycle
import StateStore
import StatusHTTP
import Synchronization

/// The control server assembled: store, broadcaster, watch hub, status tracker, the gRPC
/// server and the status HTTP server, as services of one `ServiceGroup`. Shutdown runs in
/// reverse start order: HTTP stops, streams end and the gRPC server drains, then the
/// last node status is flushed.
public final class ControlServerApp: Sendable {
    public let configuration: ControlServerConfiguration
    public let store: Store
    public let metrics: ServerMetrics
    let broadcaster: Broadcaster
    let watchHub: WatchHub
    let tracker: NodeStatusTracker
    let grpc: GRPCService
    public let http: StatusHTTPServer
    private let logger: Logger

    /// Sets glibc's heap up for the server; call it at start.
    ///
    /// Blocks of 128 KiB and more are mapped on their own and unmapped when freed. glibc's default
    /// raises that threshold to the size of each such block freed (up to 32 MiB), and from then
    /// on serves blocks of that size from the heap, which keeps freed pages. A snapshot goes out
    /// through a buffer of its own per node (the gRPC framer copies the message), so nodes that
    /// join together left their snapshots' pages behind: with 50 nodes joining at 10k services
    /// the server's RSS grew from 70 MB to 895 MB and stayed there; at 1,000 nodes on 1,000
    /// services it held 650 KiB per node. With the threshold fixed: 103–110 MB and 43–45 KiB
    /// (`proxy-bench joins`, `proxy-bench fanout --services 1000`). Write throughput did not
    /// change.
    public static func configureHeap() {
        mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    }

    public init(configuration: ControlServerConfiguration, logger: Logger) async throws {
        guard let grpcIP = configuration.listen.resolvedIP else {
            throw StoreError.invalid(ValidationError(field: "--listen", message: "host must be an IP address or localhost"))
        }
        self.configuration = configuration
        self.logger = logger
        let metrics = ServerMetrics()
        self.metrics = metrics
        let store = try Store(configuration: configuration.store, logger: logger)
        self.store = store
        let head = try await store.headRevision()
        metrics.headRevision.set(Double(head.rawValue))
        broadcaster = Broadcaster(
            store: store, head: head,
            // Never serve deltas from further back than the store retains: past that, a snapshot.
            historyLimit: min(configuration.nodeSync.historyLimit, Int(clamping: configuration.store.retainedRevisions)),
            metrics: metrics, logger: logger)
        watchHub = WatchHub(bufferLimit: configuration.watchBufferLimit)
        tracker = NodeStatusTracker(store: store, flushInterval: configuration.statusFlushInterval, logger: logger)
        store.addObserver(broadcaster)
        store.addObserver(watchHub)
        store.addObserver(StoreMetricsObserver(metrics: metrics))

        let address: GRPCNIOTransportCore.SocketAddress =
            grpcIP.family == .ipv4
            ? .ipv4(host: grpcIP.description, port: configuration.listen.port)
            : .ipv6(host: grpcIP.description, port: configuration.listen.port)
        let transport = HTTP2ServerTransport.Posix(
            address: address, transportSecurity: .plaintext,
            config: .defaults { $0.rpc.maxRequestPayloadSize = MessageLimits.registryBytes })
        let registry = RegistryService(
            store: store, tracker: tracker, broadcaster: broadcaster, watchHub: watchHub, metrics: metrics, logger: logger)
        let nodeSync = NodeSyncService(
            store: store, broadcaster: broadcaster, tracker: tracker, configuration: configuration.nodeSync, metrics: metrics,
            logger: logger)
        let broadcaster = self.broadcaster
        let watchHub = self.watchHub
        grpc = GRPCService(
            server: GRPCServer(transport: transport, services: [registry, nodeSync]),
            onShutdown: {
                broadcaster.close()
                watchHub.close()
            }, logger: logger)

        let ready = grpc.ready
        http = StatusHTTPServer(
            host: configuration.httpListen.host, port: configuration.httpListen.port,
            routes: [
                "/healthz": { .text(.ok, "ok\n") },
                "/readyz": { ready.isSet ? .text(.ok, "ready\n") : .text(.serviceUnavailable, "not ready\n") },
                "/metrics": { .init(.ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metrics.render()) },
            ], logger: logger)
    }

    /// The services in start order.
    public var services: [any ServiceLifecycle.Service] { [tracker, grpc, http] }

    /// The bound gRPC address once listening (useful with port 0).
    public func grpcListeningAddress() async throws -> HostPort {
        let address = try await grpc.server.listeningAddress
        if let ipv4 = address?.ipv4 { return HostPort(host: ipv4.host, port: ipv4.port) }
        if let ipv6 = address?.ipv6 { return HostPort(host: ipv6.host, port: ipv6.port) }
        throw StoreError.storage("the gRPC server is not listening")
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully.
    public func run() async throws {
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// Runs the gRPC server as a lifecycle service. On graceful shutdown, long-lived streams
/// (NodeSync, Watch) are ended first so that the server can drain.
final class GRPCService: ServiceLifecycle.Service, Sendable {
    let server: GRPCServer<HTTP2ServerTransport.Posix>
    let ready = ReadyFlag()
    private let onShutdown: @Sendable () -> Void
    private let logger: Logger

    init(server: GRPCServer<HTTP2ServerTransport.Posix>, onShutdown: @escaping @Sendable () -> Void, logger: Logger) {
        self.server = server
        self.onShutdown = onShutdown
        self.logger = logger
    }

    func run() async throws {
        let server = self.server
        let ready = self.ready
        let logger = self.logger
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await server.serve() }
                if let address = try await server.listeningAddress {
                    ready.set(true)
                    logger.info("gRPC server listening", metadata: ["address": "\(address)"])
                }
            }
        } onGracefulShutdown: {
            ready.set(false)
            self.onShutdown()
            server.beginGracefulShutdown()
        }
    }
}

/// Keeps the store metrics current.
private struct StoreMetricsObserver: CommitObserver {
    let metrics: ServerMetrics

    func committed(_ revisions: [CommittedRevision]) {
        guard let last = revisions.last else { return }
        metrics.headRevision.set(Double(last.revision.rawValue))
        metrics.commitBatches.increment()
        metrics.committedRevisions.increment(by: Int64(revisions.count))
    }

    func failed(_ error: StoreError, writes: Int) {
        if case .full = error {
            metrics.failedWritesFull.increment(by: Int64(writes))
        } else {
            metrics.failedWritesError.increment(by: Int64(writes))
        }
    }
}

/// Whether the gRPC server is accepting calls (for `/readyz`).
final class ReadyFlag: Sendable {
    private let value = Atomic<Bool>(false)

    var isSet: Bool { value.load(ordering: .acquiring) }
    func set(_ ready: Bool) { value.store(ready, ordering: .releasing) }
}
