import ProxyModel
import StateStore

/// Everything the control server is configured with; every field has a documented default.
public struct ControlServerConfiguration: Sendable {
    /// gRPC (Registry + NodeSync) listen address (default `127.0.0.1:7700`; port 0 picks one).
    public var listen: HostPort
    /// `/healthz`, `/readyz`, `/metrics` listen address (default `127.0.0.1:7701`).
    public var httpListen: HostPort
    /// Database, service CIDRs, NodePort range and change-log retention.
    public var store: StoreConfiguration
    /// Heartbeats, liveness timeout and in-memory history of NodeSync.
    public var nodeSync: NodeSyncConfiguration
    /// How often live node status is written to the database (default 1 s).
    public var statusFlushInterval: Duration
    /// Buffered revisions per Watch stream before a slow watcher is ended (default 1024).
    public var watchBufferLimit: Int

    public static let defaultListen = HostPort(host: "127.0.0.1", port: 7700)
    public static let defaultHTTPListen = HostPort(host: "127.0.0.1", port: 7701)

    public init(
        listen: HostPort = Self.defaultListen, httpListen: HostPort = Self.defaultHTTPListen, store: StoreConfiguration,
        nodeSync: NodeSyncConfiguration = .init(), statusFlushInterval: Duration = .seconds(1), watchBufferLimit: Int = 1024
    ) {
        self.listen = listen
        self.httpListen = httpListen
        self.store = store
        self.nodeSync = nodeSync
        self.statusFlushInterval = statusFlushInterval
        self.watchBufferLimit = watchBufferLimit
    }
}
