import Prometheus
import ProxyModel
import StatusHTTP

/// The applier's Prometheus metrics; the names and meanings of kube-proxy's where one exists.
public struct ApplierMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let syncDuration: DurationHistogram
    let fullSyncDuration: DurationHistogram
    let partialSyncDuration: DurationHistogram
    let networkProgramming: DurationHistogram
    let lastSyncTimestamp: Gauge
    let lastQueuedTimestamp: Gauge
    let changes: [ObjectKind: Counter]
    let changesPending: [ObjectKind: Gauge]
    let noLocalEndpoints: (internal: Gauge, external: Gauge)
    let syncFailures: Counter
    let cleanupFailures: Counter
    let healthzAnswers: ProbeAnswers
    let livezAnswers: ProbeAnswers
    let appliedRevision: Gauge
    let driftRepairs: Counter
    let driftChecks: [DriftCheckResult: Counter]
    let services: Gauge
    let awayFrontends: Gauge
    let affinityServices: Gauge
    let affinityTables: Gauge
    let rehomeDuration: DurationHistogram
    let driftListingDuration: DurationHistogram
    let streamsOpened: Counter
    let staleFlowsDuration: DurationHistogram
    let staleFlowsDeleted: [IPFamily: Counter]

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        func name(_ subsystem: String, _ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(namespace: "kubeproxy", subsystem: subsystem, metricName: metric, unitName: unit, helpText: help)
        }
        let syncBuckets: [Duration] = [
            .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
            .seconds(2), .seconds(5), .seconds(10),
        ]
        self.registry = registry
        syncDuration = registry.makeDurationHistogram(
            descriptor: name("sync", "proxy_rules_duration", "seconds", "Duration of syncing the rules (full and partial)."),
            buckets: syncBuckets)
        fullSyncDuration = registry.makeDurationHistogram(
            descriptor: name("sync", "full_proxy_rules_duration", "seconds", "Duration of full syncs (both tables replaced)."),
            buckets: syncBuckets)
        partialSyncDuration = registry.makeDurationHistogram(
            descriptor: name("sync", "partial_proxy_rules_duration", "seconds", "Duration of partial syncs (changed services only)."),
            buckets: syncBuckets)
        networkProgramming = registry.makeDurationHistogram(
            descriptor: name(
                "", "network_programming_duration", "seconds",
                "From the control server's commit of a change to its application on this node."),
            buckets: syncBuckets + [.seconds(30), .seconds(60)])
        lastSyncTimestamp = registry.makeGauge(
            descriptor: name("sync", "proxy_rules_last_timestamp", "seconds", "When the rules were last synced successfully."))
        lastQueuedTimestamp = registry.makeGauge(
            descriptor: name(
                "sync", "proxy_rules_last_queued_timestamp", "seconds",
                "When a change was last received for a sync (much later than the last sync: something is hung)."))
        let kinds: [(ObjectKind, String)] = [(.service, "service"), (.endpointSlice, "endpoint")]
        changes = Dictionary(
            uniqueKeysWithValues: kinds.map { kind, word in
                (kind, registry.makeCounter(descriptor: name("sync", "proxy_rules_\(word)_changes", "total", "Cumulative \(kind.rawValue) changes received.")))
            })
        changesPending = Dictionary(
            uniqueKeysWithValues: kinds.map { kind, word in
                (kind, registry.makeGauge(descriptor: name("sync", "proxy_rules_\(word)_changes_pending", "", "\(kind.rawValue) changes received and not yet synced.")))
            })
        let noLocal = name(
            "sync", "proxy_rules_no_local_endpoints", "total",
            "Service ports (per IP family) with a Local traffic policy and no local endpoints, while they have endpoints elsewhere.")
        noLocalEndpoints = (
            registry.makeGauge(descriptor: noLocal, labels: [("traffic_policy", "internal")]),
            registry.makeGauge(descriptor: noLocal, labels: [("traffic_policy", "external")])
        )
        syncFailures = registry.makeCounter(
            descriptor: name("sync", "proxy_rules_nftables_sync_failures", "total", "Transactions the kernel refused."))
        cleanupFailures = registry.makeCounter(
            descriptor: name(
                "sync", "proxy_rules_nftables_cleanup_failures", "total",
                "Transactions deleting chains and sets no longer used that the kernel refused (a full resync follows)."))
        func answers(_ path: String) -> ProbeAnswers {
            let descriptor = name("proxy", "\(path)", "total", "Answers of /\(path) by HTTP status code.")
            return ProbeAnswers(
                ok: registry.makeCounter(descriptor: descriptor, labels: [("code", "200")]),
                unavailable: registry.makeCounter(descriptor: descriptor, labels: [("code", "503")]))
        }
        healthzAnswers = answers("healthz")
        livezAnswers = answers("livez")
        appliedRevision = registry.makeGauge(
            descriptor: name("node_applier", "applied_revision", "", "Last revision applied to the kernel."))
        driftRepairs = registry.makeCounter(
            descriptor: name("node_applier", "drift_repairs", "total", "Full resyncs because the table differed from the plan."))
        let checks = name(
            "node_applier", "drift_checks", "total",
            "Drift checks: the ruleset generation unchanged since the tables matched (nothing listed), tables listed and matched or drifted, or a sync changed the plan during the listing (listed again next time).")
        driftChecks = Dictionary(
            uniqueKeysWithValues: DriftCheckResult.allCases.map { ($0, registry.makeCounter(descriptor: checks, labels: [("result", $0.rawValue)])) })
        services = registry.makeGauge(descriptor: name("node_applier", "services", "", "Services with rules on this node."))
        awayFrontends = registry.makeGauge(
            descriptor: name(
                "node_applier", "away_frontends", "",
                "Frontends whose verdict waits for the next rehome: new ones, or their endpoint count changed or none "
                    + "is left (new connections scan the counts)."))
        affinityServices = registry.makeGauge(
            descriptor: name("node_applier", "affinity_services", "", "Services with ClientIP affinity (proxied by this node)."))
        affinityTables = registry.makeGauge(
            descriptor: name(
                "node_applier", "affinity_tables", "",
                "Kernel tables per family that ClientIP affinity is spread over (more past 64 affinity services each)."))
        rehomeDuration = registry.makeDurationHistogram(
            descriptor: name(
                "node_applier", "rehome_duration", "seconds", "Duration of giving away frontends the verdicts of their endpoint counts."),
            buckets: syncBuckets)
        driftListingDuration = registry.makeDurationHistogram(
            descriptor: name(
                "node_applier", "drift_listing_duration", "seconds",
                "Duration of listing the tables for a drift check (beside the sync loop; checks with the ruleset generation unchanged list nothing)."),
            buckets: syncBuckets)
        streamsOpened = registry.makeCounter(
            descriptor: name("node_applier", "sync_streams_opened", "total", "NodeSync streams opened: the first and every reconnect."))
        staleFlowsDuration = registry.makeDurationHistogram(
            descriptor: name(
                "conntrack_reconciler", "sync_duration", "seconds", "Duration of finding and deleting stale UDP conntrack flows."),
            buckets: syncBuckets)
        let deleted = name("conntrack_reconciler", "deleted_entries", "total", "UDP conntrack flows deleted as stale.")
        staleFlowsDeleted = Dictionary(
            uniqueKeysWithValues: IPFamily.allCases.map { ($0, registry.makeCounter(descriptor: deleted, labels: [("ip_family", $0.rawValue)])) })
    }

    /// A probe path's answers, by status code.
    struct ProbeAnswers: Sendable {
        let ok: Counter
        let unavailable: Counter
    }

    public func render() -> [UInt8] {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        ProcessMetrics.append(to: &buffer)
        return buffer
    }
}

/// What a drift check found (`Applier.checkDrift`).
enum DriftCheckResult: String, CaseIterable, Sendable {
    /// The ruleset generation was the one the tables last matched at: nothing was listed.
    case unchanged
    case matched
    case drifted
    /// A sync changed the plan while the tables were listed: the listing is not compared, and the
    /// next check lists again.
    case interrupted
}
