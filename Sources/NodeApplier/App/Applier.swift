import CMalloc
import Dispatch
import Foundation
import Logging
import ProxyAPI
import ProxyModel
import Synchronization

/// The result of one sync: the revision the kernel now holds, or why it refused.
public enum SyncOutcome: Hashable, Sendable {
    case applied(revision: UInt64)
    case failed(revision: UInt64, error: String)
}

/// A Delta that does not start at the revision held: the stream must resume from the right one.
public struct RevisionGap: Error, CustomStringConvertible {
    public var held: UInt64
    public var from: UInt64
    public var description: String { "delta from revision \(from) while holding \(held)" }
}

/// Holds the cluster state, derives this node's rules and programs them: a full sync at start,
/// after any failure and on drift; partial syncs (changed services only) otherwise.
/// Until the first Snapshot arrives nothing is touched (fail static: a restarted applier leaves the
/// rules of its predecessor in place until it knows better).
public actor Applier {
    public let node: NodeConfig
    public let tableName: String
    private let nft: any NFTablesClient
    private let metrics: ApplierMetrics
    private let logger: Logger
    private let healthChecks: HealthCheckRegistry?
    private let conntrack: ConntrackWorker?
    private let lister: TableLister
    private let executor = SerialQueueExecutor(label: "node-applier")
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    private var state = ClusterState()
    private var hasState = false
    private var planner: Planner? { didSet { planChanges &+= 1 } }
    /// Counts the planner's changes: a drift check compares its listing with the plan only when
    /// no sync changed the plan while it listed.
    private var planChanges = 0
    private var dirty: Set<ServiceName> = []
    /// The contributions of dirty services as of the last sync (what the planner has claimed).
    private var before: [ServiceName: [NFTFamily: Contribution]] = [:]
    /// The proxied services with ClientIP affinity, as of the last sync, and the shards the
    /// planner's contributions spread them over (a full sync counts them afresh).
    private var affinityServices: Set<ServiceName> = []
    public private(set) var affinityShards = Layout.AffinityShards(for: 0)
    /// The ruleset generation at which the kernel's tables matched the plan, as far as the applier
    /// knows (see `checkDrift`): a drift check found them so, and the applier's own transactions
    /// since each moved it on by one (the only commit in between). Unset after anything else: a
    /// full program (several commits), another program's commit, a failure.
    private var verifiedGeneration: RulesetGeneration?
    /// Commit times of received changes not yet applied (network-programming latency).
    private var pendingCommitTimes: [Int64] = []
    /// Received Service and EndpointSlice changes not yet synced, by kind (kube-proxy's metrics).
    private var pendingChanges: [ObjectKind: Int] = [:]
    /// As of the last sync, the services that have ports without local endpoints, and their sum
    /// (kube-proxy's metric).
    private var noLocalEndpoints: [ServiceName: NoLocalEndpoints] = [:]
    private var noLocalEndpointsTotal = NoLocalEndpoints()
    private let pendingSince = Atomic<Int64>(0)
    /// Whether partial syncs ran since the heap was last trimmed.
    private var freedSinceTrim = false
    /// Every UDP service's frontends and serving endpoints, as of the last sync (`StaleFlows`).
    private var udpFrontends = StaleFlows.FrontendIndex()
    /// Frontends whose service or endpoints partial syncs changed since stale flows were last
    /// removed: only flows to them can have become stale.
    private var changedUDPFrontends: Set<StaleFlows.Frontend> = []
    /// Whether any UDP flow may be stale: after a full sync (before one, flows may have gone
    /// anywhere: a failed program, a deleted table).
    private var anyUDPFlowMayBeStale = false
    /// Up to this many changed frontends are checked with a dump each that the kernel filters on
    /// the frontend; more, and one dump of every UDP flow is cheaper. Each filtered dump still
    /// walks every tracked flow: with 100k UDP flows, 45 ms for one frontend against 254 ms for
    /// all of them (`proxy-bench nftables`).
    public static let filteredDumpLimit = 4
    public private(set) var appliedRevision: UInt64 = 0

    /// Without `conntrack` no flows are ever deleted (`removeStaleFlows` does nothing).
    public init(
        node: NodeConfig, tableName: String, nft: any NFTablesClient, conntrack: (any ConntrackClient)? = nil,
        metrics: ApplierMetrics = ApplierMetrics(), healthChecks: HealthCheckRegistry? = nil, logger: Logger
    ) {
        self.node = node
        self.tableName = tableName
        self.nft = nft
        self.conntrack = conntrack.map(ConntrackWorker.init)
        lister = TableLister(nft)
        self.metrics = metrics
        self.healthChecks = healthChecks
        self.logger = logger
    }

    /// When the oldest Snapshot or Delta that is not programmed yet arrived (0: none), for
    /// `/healthz`: readable while a sync runs.
    public nonisolated var oldestPendingChangeUnixNanos: Int64 { pendingSince.load(ordering: .relaxed) }

    /// What a Hello reports: the revision and store the held state belongs to.
    public var held: (revision: UInt64, storeID: String) { (state.revision, state.storeID) }

    /// Frontends whose verdict waits for `rehome` (see `Layout`).
    public var awayFrontends: Int { planner?.awayFrontends ?? 0 }

    /// Whether a sync has work to do.
    public var needsSync: Bool { hasState && (planner == nil || !dirty.isEmpty || appliedRevision != state.revision) }

    /// Takes a Snapshot or Delta into the held state (not yet into the kernel).
    public func receive(_ message: Kubeproxy_V1_ServerMessage) throws {
        switch message.message {
        case .snapshot(let snapshot):
            var received = ClusterState(revision: snapshot.revision, storeID: snapshot.storeID)
            for service in snapshot.services { received.insert(.service(try Service(wire: service))) }
            for slice in snapshot.endpointSlices { received.insert(.endpointSlice(try EndpointSlice(wire: slice))) }
            state = received
            hasState = true
            planner = nil
            dirty = []
            before = [:]
            // A snapshot's commit time can be arbitrarily old (a restart): not a programming latency.
            pendingCommitTimes = []
            markPending()
            logger.info(
                "snapshot received",
                metadata: [
                    "revision": "\(snapshot.revision)", "services": "\(snapshot.services.count)",
                    "endpointSlices": "\(snapshot.endpointSlices.count)",
                ])
        case .delta(let delta):
            guard hasState, delta.fromRevision == state.revision else {
                throw RevisionGap(held: state.revision, from: delta.fromRevision)
            }
            let upserts = try delta.upserts.map { (object) throws -> ProxyObject in try ProxyObject(wire: object) }
            let deletes = try delta.deletes.map { (ref) throws -> ObjectKey in try ObjectKey(wire: ref) }
            if planner != nil {
                for name in state.affected(upserts: upserts, deletes: deletes) where before[name] == nil && !dirty.contains(name) {
                    before[name] = contribution(name)
                }
            }
            dirty.formUnion(state.apply(to: delta.toRevision, upserts: upserts, deletes: deletes))
            pendingCommitTimes.append(delta.commitTimeUnixNanos)
            for kind in upserts.map(\.kind) + deletes.map(\.kind) {
                guard let counter = metrics.changes[kind] else { continue }
                counter.increment()
                pendingChanges[kind, default: 0] += 1
            }
            for (kind, count) in pendingChanges { metrics.changesPending[kind]?.set(Double(count)) }
            markPending()
        case .heartbeat, nil:
            break
        }
    }

    private func markPending() {
        let now = WallClock.nowUnixNanos()
        metrics.lastQueuedTimestamp.set(Double(now) / 1e9)
        if pendingSince.load(ordering: .relaxed) == 0 { pendingSince.store(now, ordering: .relaxed) }
    }

    /// Programs the kernel with the held state, when there is anything to do.
    public func sync() -> SyncOutcome? {
        guard needsSync else { return nil }
        let revision = state.revision
        let start = ContinuousClock.now
        if planner != nil, !affinityShardsFit() { planner = nil }
        let full = planner == nil
        do {
            if planner == nil {
                try fullSync()
                // A full program's transient objects (contributions, the whole table) are gone
                // now: give their pages back. libnftables' cache may still be being freed on
                // another thread: the next periodic trim takes its pages.
                malloc_trim(0)
                freedSinceTrim = true
            } else {
                try partialSync()
                freedSinceTrim = true
            }
        } catch {
            planner = nil
            before = [:]
            let text = failure(error)
            logger.error("sync failed; the previous rules stay in place", metadata: ["revision": "\(revision)", "error": "\(text)"])
            return .failed(revision: revision, error: text)
        }
        let elapsed = ContinuousClock.now - start
        metrics.syncDuration.record(elapsed)
        (full ? metrics.fullSyncDuration : metrics.partialSyncDuration).record(elapsed)
        let now = WallClock.nowUnixNanos()
        for commit in pendingCommitTimes where commit > 0 && commit <= now {
            metrics.networkProgramming.record(Duration.nanoseconds(now - commit))
        }
        pendingCommitTimes = []
        for kind in pendingChanges.keys { metrics.changesPending[kind]?.set(Double(0)) }
        pendingChanges = [:]
        metrics.lastSyncTimestamp.set(Double(now) / 1e9)
        metrics.appliedRevision.set(Double(revision))
        // No planner after a refused cleanup: the counts stay until the full resync that follows.
        if let planner {
            metrics.services.set(Double(planner.serviceCount))
            metrics.awayFrontends.set(Double(planner.awayFrontends))
        }
        metrics.affinityServices.set(Double(affinityServices.count))
        metrics.affinityTables.set(Double(affinityShards.count))
        metrics.noLocalEndpoints.internal.set(Double(noLocalEndpointsTotal.internal))
        metrics.noLocalEndpoints.external.set(Double(noLocalEndpointsTotal.external))
        appliedRevision = revision
        pendingSince.store(0, ordering: .relaxed)
        logger.debug(
            "synced", metadata: ["revision": "\(revision)", "mode": "\(full ? "full" : "partial")", "duration": "\(elapsed)"])
        return .applied(revision: revision)
    }

    /// Deletes the UDP flows the last syncs left pointing where no serving endpoint is (see
    /// `StaleFlows`). The daemon runs it beside the sync loop once a sync is acknowledged, so it
    /// adds nothing to the programming latency; flows created meanwhile went through the new rules
    /// already. After partial syncs only the changed services' frontends are looked at; after a
    /// full sync, every UDP flow. The kernel is read and written off the applier's executor: syncs
    /// go on meanwhile. So the flows read are checked again against the last sync before they are
    /// deleted (a flow a sync sent to an endpoint it added stays), and each is deleted by its id (a
    /// flow that expired and started again since stays too).
    /// Failures are logged: the rules are right regardless, and the next change tries again.
    /// Returns how many flows were deleted.
    @discardableResult
    public nonisolated func removeStaleFlows() async -> Int {
        guard let conntrack, let (dumps, frontends) = await takeStaleFlowDumps() else { return 0 }
        let start = ContinuousClock.now
        var total = 0
        for (family, destination) in dumps {
            do {
                let read = try await conntrack.staleFlows(family, to: destination, frontends: frontends)
                guard !read.isEmpty else { continue }
                let stale = await stillStale(read)
                guard !stale.isEmpty else { continue }
                let deleted = try await conntrack.delete(stale)
                total += deleted
                metrics.staleFlowsDeleted[family]?.increment(by: Int64(deleted))
                logger.info(
                    "stale UDP flows deleted",
                    metadata: ["family": "\(family.rawValue)", "deleted": "\(deleted)", "first": "\(stale[0])"])
            } catch {
                logger.warning("removing stale UDP flows failed", metadata: ["family": "\(family.rawValue)", "error": "\(error)"])
            }
        }
        metrics.staleFlowsDuration.record(ContinuousClock.now - start)
        return total
    }

    /// The dumps the next cleanup reads, and every UDP frontend with its serving endpoints as of
    /// the last sync; nil when no flow can have become stale. Syncs after this mark anew.
    private func takeStaleFlowDumps() -> ([(IPFamily, StaleFlows.Frontend?)], StaleFlows.FrontendIndex)? {
        guard anyUDPFlowMayBeStale || !changedUDPFrontends.isEmpty else { return nil }
        let dumps: [(IPFamily, StaleFlows.Frontend?)] =
            !anyUDPFlowMayBeStale && changedUDPFrontends.count <= Self.filteredDumpLimit
            ? changedUDPFrontends.sorted { $0.address < $1.address }.map { ($0.address.family, $0) }
            : IPFamily.allCases.filter(udpFrontends.contains).map { ($0, nil) }
        anyUDPFlowMayBeStale = false
        changedUDPFrontends = []
        return (dumps, udpFrontends)
    }

    /// Those of `flows` that are still stale after the syncs since they were read.
    private func stillStale(_ flows: [ConntrackFlow]) -> [ConntrackFlow] {
        flows.filter { StaleFlows.isStale($0, in: udpFrontends) }
    }

    /// Gives freed heap pages back to the system if syncs ran since the last time: partial syncs
    /// free what they allocated (contributions, libnftables' objects), a full sync's libnftables
    /// cache is freed on another thread, and glibc keeps the pages until trimmed. Walking the heap
    /// takes milliseconds (2.7 ms at 50k services), too slow to do after every sync, so this runs
    /// on the drift-check cadence.
    public func releaseFreedMemory() {
        guard freedSinceTrim else { return }
        malloc_trim(0)
        freedSinceTrim = false
    }

    /// Sets glibc's heap up for the applier; call it before other threads start allocating.
    ///
    /// One heap arena for every thread. By default each thread that allocates gets an arena of its
    /// own (up to eight per core), and pages freed in one arena cannot serve another: at 50k
    /// services the applier's RSS after a full program varied between 155 and 179 MB from run to
    /// run, and its peak was 1.26 GB; with one arena it was 154–156 MB, peak 1.15 GB (`proxy-bench
    /// nftables`). The applier's work runs on one actor, so the arena's lock is not contended.
    ///
    /// No fastbins. A full program frees millions of small blocks (libnftables' cache, the
    /// contributions); in fastbins they wait unmerged until an allocation that misses the small
    /// caches merges them all at once. That allocation came inside the next sync: a change 1 s after
    /// a full program of 50k UDP services took 5.9–9.0 ms, 1.3–1.6 ms without fastbins (eleventh
    /// session, 4 runs each); full programs, changes and RSS were unchanged. Small blocks still go
    /// through glibc's per-thread cache first.
    public static func configureHeap() {
        mallopt(M_ARENA_MAX, 1)
        mallopt(M_MXFAST, 0)
    }

    /// Gives every away frontend (a new one, or one whose endpoint count changed) the verdict of its
    /// endpoint count, or deletes it where it has no endpoints or service left, in one transaction
    /// (see `Layout`): the kernel validates the whole table for it, which is why a sync leaves it
    /// for a quiet moment. A failure schedules a full resync.
    public func rehome() {
        guard var plan = planner, plan.awayFrontends > 0 else { return }
        let frontends = plan.awayFrontends
        let start = ContinuousClock.now
        planner = nil  // restored only when the kernel took the transaction
        do {
            try commit(plan.rehome())
        } catch {
            logger.error("rehome failed; resyncing", metadata: ["error": "\(failure(error))"])
            return
        }
        planner = plan
        let elapsed = ContinuousClock.now - start
        metrics.awayFrontends.set(Double(0))
        metrics.rehomeDuration.record(elapsed)
        logger.debug("rehomed", metadata: ["frontends": "\(frontends)", "duration": "\(elapsed)"])
    }

    /// Counts a transaction the kernel refused; returns its error text.
    private func failure(_ error: any Error) -> String {
        metrics.syncFailures.increment()
        return Self.text(of: error)
    }

    private static func text(of error: any Error) -> String { (error as? NFTError)?.message ?? "\(error)" }

    /// Compares the kernel's tables with the plan; a difference schedules a full resync.
    /// Returns whether drift was found.
    ///
    /// Nothing is listed while the ruleset generation is the one the tables last matched at:
    /// nobody has committed anything since (reading it takes ~0.1 ms). Otherwise the tables are
    /// listed off the applier's executor (`TableLister`): syncs go on meanwhile. A listing during
    /// which a sync changed the plan may have seen the tables half changed: it is not compared,
    /// and the next check lists again. Another program's commit meanwhile does not matter: one
    /// that touched our tables is drift either way. After `interruptionsBeforeHolding` checks
    /// interrupted in a row, the next lists on the applier's executor, syncs waiting for it: a
    /// steady stream of syncs cannot keep drift from being found.
    @discardableResult
    public nonisolated func checkDrift() async -> Bool {
        let check: DriftCheck
        switch await startDriftCheck() {
        case .done(let drifted): return drifted
        case .list(let started): check = started
        }
        let start = ContinuousClock.now
        do {
            let listing = try await lister.shapes(of: tableName)
            metrics.driftListingDuration.record(ContinuousClock.now - start)
            return await finishDriftCheck(check, listing)
        } catch {
            return driftCheckFailed(error)
        }
    }

    public static let interruptionsBeforeHolding = 3

    /// Drift checks interrupted since the last one that compared its listing.
    private var interruptedChecks = 0

    /// What a drift check compares its listing with.
    private struct DriftCheck {
        var generation: RulesetGeneration
        var planChanges: Int
        var expected: [NFTFamily: NFTTableShape]
    }

    private enum DriftCheckStart {
        /// Nothing to list, or listed and compared already (whether drift was found).
        case done(drifted: Bool)
        /// To be listed off the applier's executor, then compared.
        case list(DriftCheck)
    }

    /// The plan's shapes, when the generation moved since the tables last matched; after
    /// `interruptionsBeforeHolding` interrupted checks, the listing and the comparison too.
    private func startDriftCheck() -> DriftCheckStart {
        guard let planner else { return .done(drifted: false) }
        let generation: RulesetGeneration
        do { generation = try nft.generation() } catch { return .done(drifted: driftCheckFailed(error)) }
        guard generation != verifiedGeneration else {
            metrics.driftChecks[.unchanged]?.increment()
            return .done(drifted: false)
        }
        let check = DriftCheck(
            generation: generation, planChanges: planChanges,
            expected: Dictionary(uniqueKeysWithValues: NFTFamily.allCases.map { ($0, planner.expectedShape($0)) }))
        guard interruptedChecks >= Self.interruptionsBeforeHolding else { return .list(check) }
        let start = ContinuousClock.now
        do {
            let listing = try TableLister.shapes(of: tableName, nft: nft)
            metrics.driftListingDuration.record(ContinuousClock.now - start)
            return .done(drifted: finishDriftCheck(check, listing))
        } catch {
            return .done(drifted: driftCheckFailed(error))
        }
    }

    private nonisolated func driftCheckFailed(_ error: any Error) -> Bool {
        logger.warning("drift check failed", metadata: ["error": "\(error)"])
        return false
    }

    private func finishDriftCheck(_ check: DriftCheck, _ listing: [NFTFamily: NFTTableShape?]) -> Bool {
        guard planChanges == check.planChanges else {
            metrics.driftChecks[.interrupted]?.increment()
            interruptedChecks += 1
            return false
        }
        interruptedChecks = 0
        for family in NFTFamily.allCases {
            let expected = check.expected[family]!
            let actual = listing[family] ?? nil
            if actual != expected {
                logger.warning(
                    "table changed outside the applier; resyncing",
                    metadata: [
                        "table": "\(family.rawValue) \(tableName)", "expected": "\(expected)",
                        "found": "\(actual.map { "\($0)" } ?? "no table")",
                    ])
                metrics.driftChecks[.drifted]?.increment()
                metrics.driftRepairs.increment()
                planner = nil
                return true
            }
        }
        metrics.driftChecks[.matched]?.increment()
        // Read before the listing: a commit during it moved the generation on, and the next check lists again.
        verifiedGeneration = check.generation
        return false
    }

    /// Applies `transaction`; the verified generation follows it when it was the only commit since.
    private func commit(_ transaction: consuming NFTTransaction) throws {
        try nft.apply(transaction)
        guard let verified = verifiedGeneration else { return }
        let now = try? nft.generation()
        // An empty transaction commits nothing.
        verifiedGeneration = now == verified || now == verified.next ? now : nil
    }

    /// Deletes the `ip` and `ip6` tables named `tableName` (with their affinity tables,
    /// `KernelTables`) where they exist, in one transaction, and nothing else: what `node-applier
    /// --cleanup` does, as kube-proxy's `--cleanup`, to take a node off this proxy (stopping the
    /// daemon leaves its rules in place).
    public static func removeTables(_ tableName: String, nft: any NFTablesClient) throws {
        let operations = try NFTFamily.allCases.flatMap { family in
            try nft.kernelTables(family: family, table: tableName).map { NFTOperation.deleteTable(family, $0) }
        }
        try nft.apply(NFTTransaction(table: tableName, operations: operations))
    }

    /// What a service gives this node, all from one node view.
    struct Derived {
        var contribution: [NFTFamily: Contribution]
        /// For the stale-flow cleanup.
        var udpFrontends: [StaleFlows.Frontend: Set<IPAddress>]
        /// For the metric.
        var noLocalEndpoints: NoLocalEndpoints
    }

    private func derive(_ name: ServiceName) -> Derived? {
        Self.derive(name, state: state, node: node, affinityShards: affinityShards)
    }

    /// A service's share of the rules alone (empty without the service).
    private func contribution(_ name: ServiceName) -> [NFTFamily: Contribution] {
        guard let service = state.service(name) else { return [:] }
        let ports = NodeView.ports(of: service, slices: state.slices(of: name), node: node)
        return Layout.contribution(of: ports, affinityShards: affinityShards)
    }

    private static func derive(_ name: ServiceName, state: ClusterState, node: NodeConfig, affinityShards: Layout.AffinityShards) -> Derived? {
        guard let service = state.service(name) else { return nil }
        let slices = state.slices(of: name)
        let ports = NodeView.ports(of: service, slices: slices, node: node)
        return Derived(
            contribution: Layout.contribution(of: ports, affinityShards: affinityShards),
            udpFrontends: StaleFlows.frontends(of: ports, slices: slices), noLocalEndpoints: NoLocalEndpoints(of: ports))
    }

    /// Whether `name` is a proxied service with ClientIP affinity.
    private static func hasAffinity(_ name: ServiceName, in state: ClusterState) -> Bool {
        guard let service = state.service(name), NodeView.isProxied(service), case .clientIP = service.sessionAffinity else { return false }
        return true
    }

    private func fullSync() throws {
        affinityServices = Set(state.serviceNames.filter { Self.hasAffinity($0, in: state) })
        affinityShards = Layout.AffinityShards(for: affinityServices.count)
        let derived = Self.derive(state, node: node, affinityShards: affinityShards)
        let (plan, transaction) = Planner.full(
            tableName: tableName, node: node, affinityShards: affinityShards, contributions: derived.contributions)
        let (frontends, noLocal) = (derived.udpFrontends, derived.noLocalEndpoints)
        // The per-service contributions are as large as the transaction itself; freeing them
        // (0.2 s at 50k services) overlaps the kernel's work.
        let released = BackgroundRelease(consume derived)
        verifiedGeneration = nil
        // Handed over, not copied: the client splits the tables into the staged program's parts
        // and frees the elements while the kernel takes the last netlink batch.
        try nft.apply(consume transaction)
        released.wait()
        planner = plan
        dirty = []
        before = [:]
        healthChecks?.replaceAll(state.serviceNames.compactMap(healthCheck))
        udpFrontends = StaleFlows.FrontendIndex(frontends)
        anyUDPFlowMayBeStale = !udpFrontends.isEmpty
        changedUDPFrontends = []
        noLocalEndpoints = noLocal
        noLocalEndpointsTotal = NoLocalEndpoints()
        for part in noLocal.values { noLocalEndpointsTotal += part }
        logger.info(
            "full sync",
            metadata: [
                "revision": "\(state.revision)", "services": "\(plan.serviceCount)", "affinityShards": "\(affinityShards.count)",
            ])
    }

    /// What every service gives this node; the UDP frontends and ports without local endpoints of
    /// those that have any.
    public struct DerivedState: Sendable {
        public var contributions: [ServiceName: [NFTFamily: Contribution]] = [:]
        var udpFrontends: [ServiceName: [StaleFlows.Frontend: Set<IPAddress>]] = [:]
        var noLocalEndpoints: [ServiceName: NoLocalEndpoints] = [:]
    }

    /// Every service's `Derived`, on every core: each depends on the service's own objects only.
    /// At 50k TCP services 0.50–0.63 s on two cores, 0.65–1.10 s on one (fifth session). UDP
    /// services' frontends add about half: in one later period 0.29–0.35 s for TCP services,
    /// 0.43–0.65 s for UDP ones (`proxy-bench nftables --service-protocol UDP`).
    public static func derive(_ state: ClusterState, node: NodeConfig, affinityShards: Layout.AffinityShards) -> DerivedState {
        let names = Array(state.serviceNames)
        let workers = max(1, min(ProcessInfo.processInfo.activeProcessorCount, names.count / 1000))
        let parts = Mutex([DerivedState](repeating: DerivedState(), count: workers))
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            var part = DerivedState(contributions: Dictionary(minimumCapacity: names.count / workers + 1))
            for index in stride(from: worker, to: names.count, by: workers) {
                guard let derived = derive(names[index], state: state, node: node, affinityShards: affinityShards) else { continue }
                part.contributions[names[index]] = derived.contribution
                if !derived.udpFrontends.isEmpty { part.udpFrontends[names[index]] = derived.udpFrontends }
                if !derived.noLocalEndpoints.isZero { part.noLocalEndpoints[names[index]] = derived.noLocalEndpoints }
            }
            parts.withLock { $0[worker] = part }
        }
        return parts.withLock { parts in
            var derived = parts.removeFirst()
            derived.contributions.reserveCapacity(names.count)
            for part in parts {
                derived.contributions.merge(part.contributions) { first, _ in first }
                derived.udpFrontends.merge(part.udpFrontends) { first, _ in first }
                derived.noLocalEndpoints.merge(part.noLocalEndpoints) { first, _ in first }
            }
            return derived
        }
    }

    /// Counts the changed services' affinity in; false when the affinity services no longer fit
    /// the planner's shards: every affinity service's objects move, in a full program (staged,
    /// swapped in at once).
    private func affinityShardsFit() -> Bool {
        for name in dirty {
            if Self.hasAffinity(name, in: state) { affinityServices.insert(name) } else { affinityServices.remove(name) }
        }
        guard !affinityShards.fits(affinityServices.count) else { return true }
        logger.info(
            "affinity services need another shard count; resyncing in full",
            metadata: ["affinityServices": "\(affinityServices.count)", "affinityShards": "\(affinityShards.count)"])
        return false
    }

    private func partialSync() throws {
        guard var plan = planner else { return }
        let changed = dirty
        var changes: [ServiceName: Planner.Change] = [:]
        var derivedFrontends: [ServiceName: [StaleFlows.Frontend: Set<IPAddress>]] = [:]
        var derivedNoLocal: [ServiceName: NoLocalEndpoints] = [:]
        for name in changed {
            let derived = derive(name)
            changes[name] = Planner.Change(old: before[name] ?? [:], new: derived?.contribution ?? [:])
            derivedFrontends[name] = derived?.udpFrontends ?? [:]
            derivedNoLocal[name] = derived?.noLocalEndpoints ?? NoLocalEndpoints()
        }
        planner = nil  // restored only when the kernel took the transaction
        guard let transaction = plan.update(changes, current: contribution) else {
            try fullSync()
            return
        }
        try commit(transaction)
        // The revision is programmed; what is left is deleting what nobody uses any more. When the
        // kernel refuses that (something jumps to a chain that should go), the sync still stands,
        // as kube-proxy's does, and a full resync follows.
        let cleanup = plan.cleanup()
        do {
            if !cleanup.isEmpty { try commit(cleanup) }
            planner = plan
        } catch {
            metrics.cleanupFailures.increment()
            logger.error(
                "deleting chains and sets no longer used failed; resyncing in full",
                metadata: ["error": "\(Self.text(of: error))"])
        }
        dirty = []
        before = [:]
        if let healthChecks {
            for name in changed { healthChecks.update(name, healthCheck(name)) }
        }
        for (name, frontends) in derivedFrontends where udpFrontends.replace(name, with: frontends) {
            // A frontend no longer there has nothing to clean up (its service or its serving
            // endpoints are gone); the others' flows are checked.
            changedUDPFrontends.formUnion(frontends.keys)
        }
        for (name, noLocal) in derivedNoLocal {
            noLocalEndpointsTotal -= noLocalEndpoints[name] ?? NoLocalEndpoints()
            noLocalEndpointsTotal += noLocal
            noLocalEndpoints[name] = noLocal.isZero ? nil : noLocal
        }
    }

    private func healthCheck(_ name: ServiceName) -> HealthCheckRegistry.Entry? {
        guard let service = state.service(name), NodeView.isProxied(service), service.needsHealthCheckNodePort,
            let port = service.healthCheckNodePort
        else { return nil }
        return HealthCheckRegistry.Entry(
            service: name, port: port,
            localEndpoints: NodeView.localReadyEndpoints(of: service, slices: state.slices(of: name), node: node))
    }
}
