import Logging
import NIOHTTP1
import ProxyModel
import ServiceLifecycle
import StatusHTTP
import Synchronization

public struct NodeApplierConfiguration: Sendable {
    public var node: NodeConfig
    public var tableName: String
    public var sync: SyncClientConfiguration
    public var httpListen: HostPort
    /// Changes closer together than this are applied in one sync.
    public var minSyncInterval: Duration
    /// How often the kernel's tables are compared with the plan.
    public var driftCheckInterval: Duration
    /// How long after the last sync the away frontends (new, or their endpoint count changed) get
    /// the verdicts of their counts (`Applier.rehome`).
    public var rehomeDelay: Duration
    /// How long the first of them waits at most: changes that never pause for `rehomeDelay` would
    /// otherwise keep them on the scan chains.
    public var rehomeMaxDelay: Duration

    public init(
        node: NodeConfig, tableName: String, sync: SyncClientConfiguration, httpListen: HostPort,
        minSyncInterval: Duration = .milliseconds(100), driftCheckInterval: Duration = .seconds(10), rehomeDelay: Duration = .seconds(1),
        rehomeMaxDelay: Duration = .seconds(10)
    ) {
        self.node = node
        self.tableName = tableName
        self.sync = sync
        self.httpListen = httpListen
        self.minSyncInterval = minSyncInterval
        self.driftCheckInterval = driftCheckInterval
        self.rehomeDelay = rehomeDelay
        self.rehomeMaxDelay = rehomeMaxDelay
    }
}

/// The node-applier daemon: NodeSync stream, sync loop, status HTTP server, health-check servers.
/// Stopping it leaves the rules in place, so a restart does not interrupt traffic.
public final class NodeApplierApp: ServiceLifecycle.Service, Sendable {
    public let applier: Applier
    public let http: StatusHTTPServer
    private let client: SyncClient
    private let healthChecks: HealthCheckRegistry
    private let configuration: NodeApplierConfiguration
    private let logger: Logger
    private let triggers: AsyncStream<Void>
    private let trigger: AsyncStream<Void>.Continuation
    /// Wakes the stale-flow cleanup, which runs beside the sync loop.
    private let cleanups: AsyncStream<Void>
    private let cleanup: AsyncStream<Void>.Continuation
    /// For `/healthz`.
    private let health = SharedSyncHealth()

    public init(
        configuration: NodeApplierConfiguration, nft: any NFTablesClient, conntrack: any ConntrackClient, logger: Logger
    ) {
        self.configuration = configuration
        self.logger = logger
        let metrics = ApplierMetrics()
        healthChecks = HealthCheckRegistry(addresses: configuration.node.nodeIPs, logger: logger)
        applier = Applier(
            node: configuration.node, tableName: configuration.tableName, nft: nft, conntrack: conntrack, metrics: metrics,
            healthChecks: healthChecks, logger: logger)
        let (triggers, trigger) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        (self.triggers, self.trigger) = (triggers, trigger)
        (cleanups, cleanup) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let health = self.health
        client = SyncClient(
            configuration: configuration.sync, node: configuration.node, applier: applier, logger: logger, metrics: metrics
        ) {
            trigger.yield()
        }
        let client = self.client
        let applier = self.applier
        http = StatusHTTPServer(
            host: configuration.httpListen.host, port: configuration.httpListen.port,
            routes: [
                "/livez": {
                    let (state, pendingSince, now) = health.read(applier)
                    let body = """
                        {"lastUpdated":\(state.lastSuccessUnixNanos / 1_000_000_000),\
                        "pendingSeconds":\(SyncHealth.pendingSeconds(since: pendingSince, now: now))}

                        """
                    return Self.probeAnswer(
                        SyncHealth.isLive(now: now, pendingSince: pendingSince), body: body, counters: metrics.livezAnswers)
                },
                "/healthz": {
                    let (state, pendingSince, now) = health.read(applier)
                    let body = """
                        {"lastUpdated":\(state.lastSuccessUnixNanos / 1_000_000_000),"connected":\(client.isConnected),\
                        "failing":\(state.failing),"pendingSeconds":\(SyncHealth.pendingSeconds(since: pendingSince, now: now))}

                        """
                    return Self.probeAnswer(
                        state.isHealthy(now: now, pendingSince: pendingSince), body: body, counters: metrics.healthzAnswers)
                },
                "/metrics": { .init(.ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metrics.render()) },
            ], logger: logger)
    }

    /// 200 or 503 with `body`, counted by status code as kube-proxy counts its probe answers.
    private static func probeAnswer(_ healthy: Bool, body: String, counters: ApplierMetrics.ProbeAnswers) -> StatusHTTPServer.Response {
        (healthy ? counters.ok : counters.unavailable).increment()
        return .init(
            healthy ? .ok : .serviceUnavailable, contentType: "application/json", body: Array(body.utf8),
            headers: ["X-Content-Type-Options": "nosniff"])
    }

    public func run() async throws {
        /// Runs a part until graceful shutdown; the cancellation that ends it is not an error.
        @Sendable func untilShutdown(_ part: @escaping @Sendable () async throws -> Void) async throws {
            do { try await cancelWhenGracefulShutdown(part) } catch is CancellationError {}
        }
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await self.http.run() }
            group.addTask { try await untilShutdown { await self.healthChecks.run { self.health.isHealthy(self.applier) } } }
            group.addTask { try await untilShutdown { try await self.client.run() } }
            group.addTask { try await untilShutdown { try await self.ticker() } }
            group.addTask { try await untilShutdown { await self.syncLoop() } }
            group.addTask { try await untilShutdown { try await self.driftChecks() } }
            group.addTask { try await untilShutdown { for await _ in self.cleanups { await self.applier.removeStaleFlows() } } }
            try? await gracefulShutdown()
            trigger.finish()
            cleanup.finish()
            healthChecks.finish()
        }
        logger.info("stopped; rules left in place")
    }

    /// Wakes the sync loop regularly, for retries and rehomes.
    private func ticker() async throws {
        let interval = min(configuration.minSyncInterval * 5, .milliseconds(500))
        while true {
            try await Task.sleep(for: interval)
            trigger.yield()
        }
    }

    /// Compares the kernel's tables with the plan every `driftCheckInterval`, beside the sync
    /// loop (a listing does not hold syncs up); drift wakes the sync loop for a full resync.
    private func driftChecks() async throws {
        while true {
            try await Task.sleep(for: configuration.driftCheckInterval)
            if await applier.checkDrift() { trigger.yield() }
            await applier.releaseFreedMemory()
        }
    }

    private func syncLoop() async {
        let clock = ContinuousClock()
        var lastSync = clock.now - configuration.minSyncInterval
        var retryBackoff = Duration.seconds(1)
        var retryAt: ContinuousClock.Instant?
        /// When the first of the away frontends went away.
        var awaySince: ContinuousClock.Instant?
        for await _ in triggers {
            let needsSync = await applier.needsSync
            // Away frontends' verdicts take the kernel's table validation in a quiet moment, or
            // before the next sync once the first has waited long enough.
            if let since = awaySince,
                clock.now >= since + configuration.rehomeMaxDelay || (!needsSync && clock.now >= lastSync + configuration.rehomeDelay)
            {
                await applier.rehome()
                awaySince = nil
            }
            guard await applier.needsSync else { continue }
            if let retryAt, clock.now < retryAt { continue }
            let due = lastSync + configuration.minSyncInterval
            if clock.now < due { try? await Task.sleep(until: due, clock: clock) }
            guard let outcome = await applier.sync() else { continue }
            lastSync = clock.now
            awaySince = await applier.awayFrontends > 0 ? awaySince ?? lastSync : nil
            client.report(outcome)
            switch outcome {
            case .applied:
                health.state.withLock { $0.applied(at: WallClock.nowUnixNanos()) }
                retryAt = nil
                retryBackoff = .seconds(1)
                cleanup.yield()
            case .failed:
                health.state.withLock { $0.failed() }
                retryAt = clock.now + retryBackoff
                retryBackoff = min(retryBackoff * 2, .seconds(30))
            }
        }
    }
}

/// What `/healthz` answers, with kube-proxy's meaning: healthy once a sync succeeded, unless the
/// last attempt failed or a received change has waited `staleAfterNanos` without being programmed (a
/// sync that hangs). An unreachable control server alone is healthy: the rules are as it left them.
public struct SyncHealth: Hashable, Sendable {
    /// 60 s, kube-proxy's default: twice its 30 s sync period.
    public static let staleAfterNanos: Int64 = 60_000_000_000

    public private(set) var lastSuccessUnixNanos: Int64 = 0
    public private(set) var failing = false

    public init() {}

    public mutating func applied(at now: Int64) {
        lastSuccessUnixNanos = now
        failing = false
    }

    public mutating func failed() { failing = true }

    /// How long a change that arrived at `since` (0: none is waiting) has waited, in whole seconds.
    public static func pendingSeconds(since: Int64, now: Int64) -> Int64 { since == 0 ? 0 : (now - since) / 1_000_000_000 }

    /// `pendingSince`: when the oldest change not yet programmed arrived, 0 for none
    /// (`Applier.oldestPendingChangeUnixNanos`).
    public func isHealthy(now: Int64, pendingSince: Int64) -> Bool {
        lastSuccessUnixNanos > 0 && !failing && Self.isLive(now: now, pendingSince: pendingSince)
    }

    /// What `/livez` answers: no received change has waited 60 s without being programmed (a sync
    /// loop that hangs, or syncs that keep failing). As kube-proxy's `/livez`, a liveness probe's
    /// path: unlike `/healthz` it tolerates a failed sync that the next ones repair, and it holds
    /// before the first sync (a node whose control server is unreachable has nothing to program,
    /// and a restart would not change that).
    public static func isLive(now: Int64, pendingSince: Int64) -> Bool {
        pendingSince == 0 || now - pendingSince < staleAfterNanos
    }
}

private final class SharedSyncHealth: Sendable {
    let state = Mutex(SyncHealth())

    /// What `SyncHealth.isHealthy` needs, now.
    func read(_ applier: Applier) -> (state: SyncHealth, pendingSince: Int64, now: Int64) {
        (state.withLock { $0 }, applier.oldestPendingChangeUnixNanos, WallClock.nowUnixNanos())
    }

    /// What `/healthz` answers, and what service health checks add to their count.
    func isHealthy(_ applier: Applier) -> Bool {
        let (state, pendingSince, now) = read(applier)
        return state.isHealthy(now: now, pendingSince: pendingSince)
    }
}
