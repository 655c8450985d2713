import Dispatch
import NIOHTTP1
import NodeApplier
import ProxyAPI
import ProxyModel
import Testing

@Suite struct ApplierTests {
    func tables(_ nft: FakeNFTables) -> [NFTTable?] { NFTFamily.allCases.map { nft.table($0) } }

    /// Partial syncs (after one or two deltas) must send every packet where a full sync of the same
    /// state does, and after `rehome` leave exactly the tables it builds.
    @Test func partialSyncsEqualAFullSyncOfTheSameState() async throws {
        let (applier, nft) = try await fixtureApplier()
        var revision: UInt64 = 1
        var state = Dictionary(uniqueKeysWithValues: Fixture.slices.map { ($0.metadata.name, $0) })
        var services = Dictionary(uniqueKeysWithValues: Fixture.services.map { ($0.metadata.name, $0) })
        var generator = SystemRandomNumberGenerator()
        for step in 0..<60 {
            var upserts: [ProxyObject] = []
            var deletes: [ObjectKey] = []
            let names = state.keys.sorted()
            switch step % 5 {
            case 0:  // add an endpoint to a slice
                var slice = state[names.randomElement(using: &generator)!]!
                if slice.addressType == .ipv4 {
                    slice.endpoints.append(endpoint("10.244.\(1 + step % 2).\(100 + step)", node: step % 2 == 0 ? "node-a" : "node-b"))
                    state[slice.metadata.name] = slice
                    upserts.append(.endpointSlice(slice))
                }
            case 1:  // remove an endpoint
                var slice = state[names.randomElement(using: &generator)!]!
                if !slice.endpoints.isEmpty {
                    slice.endpoints.removeFirst()
                    state[slice.metadata.name] = slice
                    upserts.append(.endpointSlice(slice))
                }
            case 2:  // flip readiness
                var slice = state[names.randomElement(using: &generator)!]!
                if !slice.endpoints.isEmpty {
                    slice.endpoints[0].conditions.ready.toggle()
                    state[slice.metadata.name] = slice
                    upserts.append(.endpointSlice(slice))
                }
            case 3:  // delete a slice
                let name = names.randomElement(using: &generator)!
                state[name] = nil
                deletes.append(ObjectKey(kind: .endpointSlice, namespace: "default", name: name))
            default:  // add a service with endpoints, or delete one
                if step % 10 == 4 {
                    let name = "svc-\(step)"
                    let service = Service(
                        metadata: meta(name), clusterIPs: [ip("10.96.1.\(step)")], ports: [ServicePort(name: "http", port: 80)],
                        sessionAffinity: step % 20 == 4 ? .clientIP(timeoutSeconds: 30) : .none)
                    let newSlice = slice(name, service: name, [endpoint(podA1, node: "node-a"), endpoint(podB1, node: "node-b")])
                    services[name] = service
                    state[name] = newSlice
                    upserts += [.service(service), .endpointSlice(newSlice)]
                } else if let name = services.keys.sorted().randomElement(using: &generator) {
                    services[name] = nil
                    deletes.append(ObjectKey(kind: .service, namespace: "default", name: name))
                }
            }
            try await applier.receive(delta(from: revision, to: revision + 1, upserts: upserts, deletes: deletes))
            revision += 1
            // Every third delta is coalesced with the next one into one sync.
            if step % 3 != 0 { #expect(await applier.sync() == .applied(revision: revision)) }
        }
        _ = await applier.sync()
        #expect(await applier.appliedRevision == revision)
        // The same state from scratch.
        let fresh = FakeNFTables()
        let scratch = Applier(node: fixtureNode, tableName: "kube-proxy-swift", nft: fresh, logger: quietLogger())
        try await scratch.receive(
            Fixture.snapshot(revision: revision, services: Array(services.values), slices: Array(state.values)))
        _ = await scratch.sync()
        for family in NFTFamily.allCases {
            let incremental = try #require(nft.table(family))
            let full = try #require(fresh.table(family))
            let frontends = Self.frontends(of: incremental).union(Self.frontends(of: full))
            #expect(Self.traced(frontends, through: incremental) == Self.traced(frontends, through: full))
        }
        await applier.rehome()
        #expect(await applier.needsSync == false)
        for family in NFTFamily.allCases {
            let incremental = try #require(nft.table(family))
            let full = try #require(fresh.table(family))
            #expect(incremental.sets == full.sets)
            // The applier keeps pick-N chains it added until the next full program: the only extra chains.
            #expect(incremental.chains.filter { full.chains[$0.key] != nil } == full.chains)
            let named = Set(incremental.elements.values.flatMap { $0.values.compactMap(\.verdict) })
            let kept = incremental.chains.keys.filter { full.chains[$0] == nil }
            #expect(kept.allSatisfy { $0.wholeMatch(of: /(local-)?pick-[a-z]+-[0-9]+/) != nil && !named.contains(.goto($0)) }, "\(kept)")
            #expect(incremental.elements.filter { !$0.value.isEmpty } == full.elements.filter { !$0.value.isEmpty })
        }
    }

    /// The frontends a table's verdict maps and no-endpoint sets hold.
    static func frontends(of table: NFTTable) -> Set<[NFTValue]> {
        let sets = ["service-ips", "local-service-ips", "no-endpoint-services", "no-local-endpoint-services"]
        return Set(sets.flatMap { table.elements[$0]?.keys.map(\.values) ?? [] })
    }

    /// Where packets to `frontends` go through `table`, from a pod, from outside the cluster and
    /// from the node itself.
    static func traced(_ frontends: Set<[NFTValue]>, through table: NFTTable) -> [PacketTracer.Packet: Set<PacketTracer.Outcome>] {
        let tracer = PacketTracer(table: table, localAddresses: fixtureNode.nodeIPs)
        let family = table.family.ipFamily
        let pod = ip(family == .ipv4 ? podA1 : "fd00:10:244:1::11")
        let outside = family == .ipv4 ? outsideClient : ip("2001:db8:50::7")
        var traced: [PacketTracer.Packet: Set<PacketTracer.Outcome>] = [:]
        for frontend in frontends {
            guard case .address(let address) = frontend[0], case .proto(let proto) = frontend[1], case .port(let port) = frontend[2] else {
                continue
            }
            for (source, origin) in [(pod, PacketTracer.Origin.network), (outside, .network), (fixtureNode.nodeIPs[0], .localHost)] {
                let packet = PacketTracer.Packet(from: source, to: address, proto, port: port, origin: origin)
                traced[packet] = tracer.trace(packet)
            }
        }
        return traced
    }

    /// An endpoint count change touches slot elements only: the frontend keeps its verdict (the
    /// kernel validates the whole table for a new one) and reaches its endpoints through the scan
    /// chain until `rehome` gives it the verdict of its count.
    @Test func endpointCountChangeLeavesTheVerdictUntilRehome() async throws {
        let (applier, nft) = try await fixtureApplier()
        let web: NFTTuple = [.address(ip("10.96.0.10")), .proto(.tcp), .port(80)]
        let toWeb = PacketTracer.Packet(from: ip(podA1), to: ip("10.96.0.10"), .tcp, port: 80)
        let before = nft.transactions
        var slice = Fixture.slices[0]
        let removed = EndpointTarget(address: slice.endpoints.removeLast().addresses[0], port: 8080)
        try await applier.receive(delta(from: 1, to: 2, upserts: [.endpointSlice(slice)]))
        #expect(await applier.sync() == .applied(revision: 2))
        #expect(nft.transactions == before + 1)
        let changed = try #require(nft.lastTransaction)
        #expect(changed.operations.allSatisfy { operation in
            if case .addElements(_, let set, _) = operation { return set == "backends-tcp" }
            if case .deleteElements(_, let set, _) = operation { return set == "backends-tcp" }
            return false
        })
        let away = try #require(nft.table(.ip))
        #expect(away.elements["service-ips"]?[web] == [.verdict(.goto("pick-tcp-3"))])
        let tracer = PacketTracer(table: away, localAddresses: fixtureNode.nodeIPs)
        let reached = Set(tracer.trace(toWeb).map(\.result))
        #expect(reached.count == 2 && !reached.contains(.delivered(removed, masqueraded: false)))
        #expect(await applier.awayFrontends == 1)

        // Back to three endpoints: home again, nothing left for rehome.
        try await applier.receive(delta(from: 2, to: 3, upserts: [.endpointSlice(Fixture.slices[0])]))
        #expect(await applier.sync() == .applied(revision: 3))
        #expect(await applier.awayFrontends == 0)
        try await applier.receive(delta(from: 3, to: 4, upserts: [.endpointSlice(slice)]))
        #expect(await applier.sync() == .applied(revision: 4))
        let syncs = nft.transactions
        await applier.rehome()
        #expect(nft.transactions == syncs + 1)
        #expect(await applier.awayFrontends == 0)
        let rehomed = try #require(nft.table(.ip))
        #expect(rehomed.elements["service-ips"]?[web] == [.verdict(.goto("pick-tcp-2"))])
        #expect(PacketTracer(table: rehomed, localAddresses: fixtureNode.nodeIPs).trace(toWeb).count == 2)
        await applier.rehome()
        #expect(nft.transactions == syncs + 1)
    }

    /// A service losing its last endpoint and getting it back touches no verdict map: the frontend
    /// keeps its verdict (its slots are empty meanwhile, and the filter chains refuse connections),
    /// and the rehome deletes it if nobody claims it again.
    @Test func losingTheLastEndpointTouchesNoVerdictMap() async throws {
        let (applier, nft) = try await fixtureApplier()
        let frontend: NFTTuple = [.address(ip("10.96.0.10")), .proto(.tcp), .port(80)]
        func touchesVerdictMaps() throws -> Bool {
            try #require(nft.lastTransaction).operations.contains { operation in
                switch operation {
                case .addElements(_, let set, _), .deleteElements(_, let set, _): set.hasSuffix("service-ips")
                default: false
                }
            }
        }
        var empty = Fixture.slices[0]
        empty.endpoints = []
        try await applier.receive(delta(from: 1, to: 2, upserts: [.endpointSlice(empty)]))
        #expect(await applier.sync() == .applied(revision: 2))
        #expect(try !touchesVerdictMaps())
        let refusing = try #require(nft.table(.ip))
        #expect(refusing.elements["service-ips"]?[frontend] == [.verdict(.goto("pick-tcp-3"))])
        #expect(refusing.elements["no-endpoint-services"]?[frontend] != nil)
        let tracer = PacketTracer(table: refusing, localAddresses: fixtureNode.nodeIPs)
        for (source, origin) in [(ip(podA1), PacketTracer.Origin.network), (fixtureNode.nodeIPs[0], .localHost)] {
            let packet = PacketTracer.Packet(from: source, to: ip("10.96.0.10"), .tcp, port: 80, origin: origin)
            #expect(tracer.trace(packet).map(\.result) == [.rejected])
        }
        #expect(await applier.awayFrontends == 1)

        try await applier.receive(delta(from: 2, to: 3, upserts: [.endpointSlice(Fixture.slices[0])]))
        #expect(await applier.sync() == .applied(revision: 3))
        #expect(try !touchesVerdictMaps())
        #expect(await applier.awayFrontends == 0)

        // The service goes; the rehome deletes its frontend's verdict.
        try await applier.receive(delta(from: 3, to: 4, deletes: [ObjectKey(kind: .service, namespace: "default", name: "web")]))
        #expect(await applier.sync() == .applied(revision: 4))
        #expect(nft.table(.ip)?.elements["service-ips"]?[frontend] != nil)
        await applier.rehome()
        #expect(nft.table(.ip)?.elements["service-ips"]?[frontend] == nil)
        #expect(await applier.awayFrontends == 0)
    }

    /// New frontends of `service-ips` wait in the plain set `pending-service-ips`, whatever their
    /// count: the sync adds no verdict (the kernel would validate the whole table) and no chain.
    /// Their packets go to the scan chain. The rehome gives them their verdicts, which name `pick-N`
    /// chains every table has.
    @Test func newFrontendsWaitInThePendingSetUntilRehome() async throws {
        let (applier, nft) = try await fixtureApplier()
        // Seven endpoints: a count no service has; two: one that others have.
        let counts = [("seven", "10.96.0.77", 7), ("two", "10.96.0.78", 2)]
        var upserts: [ProxyObject] = []
        for (name, address, count) in counts {
            upserts.append(.service(Service(metadata: meta(name), clusterIPs: [ip(address)], ports: [ServicePort(name: "http", port: 80)])))
            let endpoints = (1...count).map { endpoint("10.244.2.\(100 + 10 * upserts.count + $0)", node: "node-b") }
            upserts.append(.endpointSlice(slice(name, service: name, endpoints)))
        }
        try await applier.receive(delta(from: 1, to: 2, upserts: upserts))
        #expect(await applier.sync() == .applied(revision: 2))
        let added = try #require(nft.lastTransaction).operations
        #expect(!added.contains { if case .addChain = $0 { true } else { false } })
        #expect(
            !added.contains { operation in
                if case .addElements(_, let set, _) = operation { set.hasSuffix("service-ips") && !set.hasPrefix("pending-") } else { false }
            })
        let frontends = counts.map { name, address, count in (NFTTuple([.address(ip(address)), .proto(.tcp), .port(80)]), address, count) }
        let pending = try #require(nft.table(.ip))
        for (frontend, address, count) in frontends {
            #expect(pending.elements["service-ips"]?[frontend] == nil)
            #expect(pending.elements["pending-service-ips"]?[frontend] != nil)
            for (source, origin) in [(ip(podA1), PacketTracer.Origin.network), (fixtureNode.nodeIPs[0], .localHost)] {
                let packet = PacketTracer.Packet(from: source, to: ip(address), .tcp, port: 80, origin: origin)
                #expect(PacketTracer(table: pending, localAddresses: fixtureNode.nodeIPs).trace(packet).count == count)
            }
        }
        #expect(await applier.awayFrontends == 2)
        await applier.rehome()
        let rehomed = try #require(nft.table(.ip))
        #expect(!(try #require(nft.lastTransaction)).operations.contains { if case .defineChain = $0 { true } else { false } })
        #expect(rehomed.elements["pending-service-ips"]?.isEmpty ?? true)
        for (frontend, address, count) in frontends {
            #expect(rehomed.elements["service-ips"]?[frontend] == [.verdict(.goto("pick-tcp-\(count)"))])
            let packet = PacketTracer.Packet(from: ip(podA1), to: ip(address), .tcp, port: 80)
            #expect(PacketTracer(table: rehomed, localAddresses: fixtureNode.nodeIPs).trace(packet).count == count)
        }
        #expect(await applier.awayFrontends == 0)
    }

    /// A new NodePort frontend with externalTrafficPolicy Local waits in both pending sets: from
    /// outside the cluster it reaches this node's endpoints only (the local scan chain), from a pod
    /// every endpoint. The rehome gives it both verdicts.
    @Test func newLocalPolicyFrontendWaitsInBothPendingSets() async throws {
        let (applier, nft) = try await fixtureApplier()
        let service = Service(
            metadata: meta("np-local"), type: .nodePort, clusterIPs: [ip("10.96.0.80")],
            ports: [ServicePort(name: "http", port: 80, nodePort: 30090)], externalTrafficPolicy: .local)
        let endpoints = [endpoint("10.244.1.81", node: "node-a"), endpoint("10.244.1.82", node: "node-a"), endpoint("10.244.2.83", node: "node-b")]
        try await applier.receive(delta(from: 1, to: 2, upserts: [.service(service), .endpointSlice(slice("np-local", service: "np-local", endpoints))]))
        #expect(await applier.sync() == .applied(revision: 2))
        let frontend: NFTTuple = [.address(fixtureNode.nodeIPs[0]), .proto(.tcp), .port(30090)]
        let fromOutside = PacketTracer.Packet(from: outsideClient, to: fixtureNode.nodeIPs[0], .tcp, port: 30090)
        let fromPod = PacketTracer.Packet(from: ip(podA1), to: fixtureNode.nodeIPs[0], .tcp, port: 30090)
        let pending = try #require(nft.table(.ip))
        for map in ["service-ips", "local-service-ips"] {
            #expect(pending.elements[map]?[frontend] == nil)
            #expect(pending.elements["pending-" + map]?[frontend] != nil)
        }
        let tracer = PacketTracer(table: pending, localAddresses: fixtureNode.nodeIPs)
        #expect(tracer.trace(fromOutside).count == 2)
        #expect(tracer.trace(fromPod).count == 3)
        await applier.rehome()
        let rehomed = try #require(nft.table(.ip))
        #expect(rehomed.elements["local-service-ips"]?[frontend] == [.verdict(.goto("local-pick-tcp-2"))])
        #expect(rehomed.elements["service-ips"]?[frontend] == [.verdict(.goto("pick-tcp-3"))])
        #expect(rehomed.elements["pending-local-service-ips"]?.isEmpty ?? true)
        let rehomedTracer = PacketTracer(table: rehomed, localAddresses: fixtureNode.nodeIPs)
        #expect(rehomedTracer.trace(fromOutside) == tracer.trace(fromOutside))
        #expect(rehomedTracer.trace(fromPod) == tracer.trace(fromPod))
    }

    /// A pending frontend whose service goes before the rehome leaves the pending set at the rehome,
    /// and gets no verdict.
    @Test func pendingFrontendOfADeletedServiceLeavesAtTheRehome() async throws {
        let (applier, nft) = try await fixtureApplier()
        let service = Service(metadata: meta("brief"), clusterIPs: [ip("10.96.0.79")], ports: [ServicePort(name: "http", port: 80)])
        let endpoints = [endpoint("10.244.2.150", node: "node-b")]
        try await applier.receive(delta(from: 1, to: 2, upserts: [.service(service), .endpointSlice(slice("brief", service: "brief", endpoints))]))
        #expect(await applier.sync() == .applied(revision: 2))
        try await applier.receive(delta(from: 2, to: 3, deletes: [ObjectKey(kind: .service, namespace: "default", name: "brief")]))
        #expect(await applier.sync() == .applied(revision: 3))
        let frontend: NFTTuple = [.address(ip("10.96.0.79")), .proto(.tcp), .port(80)]
        #expect(nft.table(.ip)?.elements["pending-service-ips"]?[frontend] != nil)
        #expect(await applier.awayFrontends == 1)
        await applier.rehome()
        let rehomed = try #require(nft.table(.ip))
        #expect(rehomed.elements["pending-service-ips"]?[frontend] == nil)
        #expect(rehomed.elements["service-ips"]?[frontend] == nil)
        #expect(await applier.awayFrontends == 0)
    }

    /// A rehome the kernel refuses leaves the rules as they were (the frontend still reaches its
    /// endpoints through the scan chain) and a full resync follows.
    @Test func refusedRehomeIsRepairedByAFullSync() async throws {
        let (applier, nft) = try await fixtureApplier()
        var slice = Fixture.slices[0]
        slice.endpoints.removeLast()
        try await applier.receive(delta(from: 1, to: 2, upserts: [.endpointSlice(slice)]))
        #expect(await applier.sync() == .applied(revision: 2))
        let away = tables(nft)
        nft.failNextTransaction("Error: Could not process rule: Device or resource busy")
        await applier.rehome()
        #expect(tables(nft) == away)
        #expect(await applier.needsSync)
        #expect(await applier.sync() == .applied(revision: 2))
        #expect(await applier.awayFrontends == 0)
        #expect(
            nft.table(.ip)?.elements["service-ips"]?[[.address(ip("10.96.0.10")), .proto(.tcp), .port(80)]] == [.verdict(.goto("pick-tcp-2"))])
    }

    @Test func refusedTransactionIsReportedAndLeavesTheRulesAsTheyWere() async throws {
        let (applier, nft) = try await fixtureApplier()
        let before = tables(nft)
        nft.failNextTransaction("Error: Could not process rule: No buffer space available")
        var single = Fixture.slices[2]
        single.endpoints = []
        try await applier.receive(delta(from: 1, to: 2, upserts: [.endpointSlice(single)]))
        #expect(
            await applier.sync() == .failed(revision: 2, error: "Error: Could not process rule: No buffer space available"))
        #expect(tables(nft) == before)
        #expect(await applier.appliedRevision == 1)
        // The retry is a full resync that succeeds.
        #expect(await applier.sync() == .applied(revision: 2))
        let table = try #require(nft.table(.ip))
        #expect(table.elements["no-endpoint-services"]?[[.address(ip("10.96.0.11")), .proto(.tcp), .port(80)]] != nil)
    }

    /// The firewall chain of a deleted service goes in a second transaction. When the kernel
    /// refuses that one, the revision is still programmed and acknowledged (kube-proxy counts such
    /// a cleanup failure and goes on); a full resync then removes the chain.
    @Test func refusedCleanupKeepsTheSyncAndResyncsInFull() async throws {
        let metrics = ApplierMetrics()
        let (applier, nft) = try await fixtureApplier(metrics: metrics)
        let firewall = try #require(nft.table(.ip)?.chains.keys.first { $0.hasPrefix("fw-") })
        let servicesBefore = try #require(metricLines(metrics, "kubeproxy_node_applier_services").first?.split(separator: " ").last)
        let committed = nft.transactions
        nft.failNextTransaction("Error: Could not process rule: Device or resource busy", after: 1)
        try await applier.receive(delta(from: 1, to: 2, deletes: [ObjectKey(kind: .service, namespace: "default", name: "lb-local")]))
        #expect(await applier.sync() == .applied(revision: 2))
        #expect(nft.transactions == committed + 1)
        let table = try #require(nft.table(.ip))
        #expect(table.chains[firewall] != nil, "the cleanup was refused")
        // Nothing jumps to it any more: the service's load-balancer frontend went in the first.
        #expect(table.elements["firewall-ips"]?[[.address(ip("172.18.0.10")), .proto(.tcp), .port(80)]] == nil)
        #expect(metricLines(metrics, "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total") == [
            "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total 1"
        ])
        #expect(metricLines(metrics, "kubeproxy_sync_proxy_rules_nftables_sync_failures_total") == [
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total 0"
        ])
        // The count of the last planned sync until the full resync.
        #expect(metricLines(metrics, "kubeproxy_node_applier_services") == [
            "kubeproxy_node_applier_services \(servicesBefore)"
        ])
        #expect(await applier.needsSync)
        #expect(await applier.sync() == .applied(revision: 2))
        #expect(nft.table(.ip)?.chains[firewall] == nil)
        #expect(await !applier.needsSync)
    }

    /// The kernel skips 0 when its count of commits wraps.
    @Test func rulesetGenerationWrapsPastZero() {
        #expect(RulesetGeneration(id: 7).next == RulesetGeneration(id: 8))
        #expect(RulesetGeneration(id: .max).next == RulesetGeneration(id: 1))
    }

    @Test func deletedTableIsDetectedAndRepaired() async throws {
        let (applier, nft) = try await fixtureApplier()
        let before = tables(nft)
        #expect(await applier.checkDrift() == false)
        nft.removeTable(.ip6)
        #expect(await applier.checkDrift() == true)
        #expect(await applier.sync() == .applied(revision: 1))
        #expect(tables(nft) == before)
    }

    /// The tables are listed when the ruleset generation moved since they last matched, and not
    /// for the applier's own partial syncs, each the only commit since.
    @Test func driftCheckListsTheTablesOnlyAfterOtherCommits() async throws {
        let metrics = ApplierMetrics()
        let (applier, nft) = try await fixtureApplier(metrics: metrics)
        func listed(_ check: () async -> Bool) async -> Int {
            let before = nft.shapeReads
            #expect(await check() == false)
            return nft.shapeReads - before
        }
        #expect(await listed { await applier.checkDrift() } == 2, "after a full program (several commits) both families are listed")
        #expect(await listed { await applier.checkDrift() } == 0)
        var single = Fixture.slices[2]
        single.endpoints.removeLast()
        try await applier.receive(delta(from: 1, to: 2, upserts: [.endpointSlice(single)]))
        #expect(await applier.sync() == .applied(revision: 2))
        #expect(await listed { await applier.checkDrift() } == 0, "the applier's own transaction was the only commit")
        nft.commitElsewhere()
        #expect(await listed { await applier.checkDrift() } == 2)
        #expect(await listed { await applier.checkDrift() } == 0)
        // Another program's commit before the applier's own: the generation moved by two.
        nft.commitElsewhere()
        single.endpoints = Fixture.slices[2].endpoints
        try await applier.receive(delta(from: 2, to: 3, upserts: [.endpointSlice(single)]))
        #expect(await applier.sync() == .applied(revision: 3))
        #expect(await listed { await applier.checkDrift() } == 2)
        nft.appendRule(.ip, chain: "services", NFTRule([], [.verdict(.drop)]))
        #expect(await applier.checkDrift() == true)
        #expect(
            metricLines(metrics, "kubeproxy_node_applier_drift_checks_total") == [
                #"kubeproxy_node_applier_drift_checks_total{result="drifted"} 1"#,
                #"kubeproxy_node_applier_drift_checks_total{result="interrupted"} 0"#,
                #"kubeproxy_node_applier_drift_checks_total{result="matched"} 3"#,
                #"kubeproxy_node_applier_drift_checks_total{result="unchanged"} 3"#,
            ])
        #expect(metricLines(metrics, "kubeproxy_node_applier_drift_listing_duration_seconds_count") == [
            "kubeproxy_node_applier_drift_listing_duration_seconds_count 4"
        ])
    }

    /// A drift check started and held in the middle of its listing (after the first family)
    /// until `resume` is signalled.
    func driftCheckHeldInItsListing(_ applier: Applier, _ nft: FakeNFTables) async -> (check: Task<Bool, Never>, resume: DispatchSemaphore) {
        let resume = DispatchSemaphore(value: 0)
        let (started, start) = AsyncStream<Void>.makeStream()
        nft.duringNextShapeRead {
            start.yield()
            resume.wait()
        }
        let check = Task { await applier.checkDrift() }
        for await _ in started { break }
        return (check, resume)
    }

    /// The tables are listed off the applier's executor: a sync goes on while a listing runs. A
    /// listing during which a sync changed the plan may have seen the tables half changed: it is
    /// not compared, and the next check lists again. Another program's commit meanwhile does not
    /// matter (one that deletes our table is drift either way).
    @Test(.timeLimit(.minutes(1))) func syncsGoOnWhileADriftCheckListsAndAnInterruptedListingIsNotCompared() async throws {
        let metrics = ApplierMetrics()
        let (applier, nft) = try await fixtureApplier(metrics: metrics)
        let (check, resume) = await driftCheckHeldInItsListing(applier, nft)
        // The listing waits between the families; the applier takes a change and commits it
        // meanwhile: an IPv6 LoadBalancer with a firewall chain, which the listing then sees in
        // the `ip6` table but the plan it started from had not.
        let firewalled = Service(
            metadata: meta("lb-v6"), type: .loadBalancer, clusterIPs: [ip("fd00:10:96::40")],
            ports: [ServicePort(name: "http", port: 80, nodePort: 30400)], loadBalancerSourceRanges: [cidr("2001:db8::/32")],
            loadBalancerIngressIPs: [ip("2001:db8:9::40")])
        try await applier.receive(delta(from: 1, to: 2, upserts: [.service(firewalled)]))
        #expect(await applier.sync() == .applied(revision: 2))
        #expect(nft.table(.ip6)?.chains.keys.contains { $0.hasPrefix("fw-") } == true)
        resume.signal()
        #expect(await check.value == false)
        #expect(await applier.checkDrift() == false)
        // Another program commits, so the next check lists, and commits again during the
        // listing: compared all the same, and listed again next time.
        nft.commitElsewhere()
        nft.duringNextShapeRead { nft.commitElsewhere() }
        #expect(await applier.checkDrift() == false)
        #expect(await applier.checkDrift() == false)
        // It deletes our table during a listing: drift, found at once.
        nft.commitElsewhere()
        nft.duringNextShapeRead { nft.removeTable(.ip6) }
        #expect(await applier.checkDrift() == true)
        #expect(
            metricLines(metrics, "kubeproxy_node_applier_drift_checks_total") == [
                #"kubeproxy_node_applier_drift_checks_total{result="drifted"} 1"#,
                #"kubeproxy_node_applier_drift_checks_total{result="interrupted"} 1"#,
                #"kubeproxy_node_applier_drift_checks_total{result="matched"} 3"#,
                #"kubeproxy_node_applier_drift_checks_total{result="unchanged"} 0"#,
            ])
    }

    /// A steady stream of syncs cannot keep drift from being found: after
    /// `interruptionsBeforeHolding` interrupted checks in a row, the next lists on the applier's
    /// executor, and a sync waits for it.
    @Test(.timeLimit(.minutes(1))) func interruptedDriftChecksInARowMakeTheNextHoldSyncs() async throws {
        let metrics = ApplierMetrics()
        let (applier, nft) = try await fixtureApplier(metrics: metrics)
        var revision: UInt64 = 1
        @Sendable func change(_ applier: Applier, _ revision: UInt64) async throws -> SyncOutcome? {
            var single = Fixture.slices[2]
            if revision % 2 == 0 { single.endpoints.removeLast() }
            try await applier.receive(delta(from: revision - 1, to: revision, upserts: [.endpointSlice(single)]))
            return await applier.sync()
        }
        func checkWithASync(syncFirst: Bool) async throws -> (drifted: Bool, synced: SyncOutcome?) {
            let (check, resume) = await driftCheckHeldInItsListing(applier, nft)
            revision += 1
            let next = revision
            let sync = Task { try await change(applier, next) }
            // Off the executor the sync completes while the listing waits; on it, it cannot (and
            // is given the time to).
            if syncFirst { _ = try await sync.value } else { try await Task.sleep(for: .milliseconds(100)) }
            resume.signal()
            return (await check.value, try await sync.value)
        }
        for _ in 0..<Applier.interruptionsBeforeHolding {
            let (drifted, synced) = try await checkWithASync(syncFirst: true)
            #expect(!drifted && synced == .applied(revision: revision))
        }
        let (drifted, synced) = try await checkWithASync(syncFirst: false)
        #expect(!drifted && synced == .applied(revision: revision))
        #expect(
            metricLines(metrics, "kubeproxy_node_applier_drift_checks_total") == [
                #"kubeproxy_node_applier_drift_checks_total{result="drifted"} 0"#,
                #"kubeproxy_node_applier_drift_checks_total{result="interrupted"} 3"#,
                #"kubeproxy_node_applier_drift_checks_total{result="matched"} 1"#,
                #"kubeproxy_node_applier_drift_checks_total{result="unchanged"} 0"#,
            ])
    }

    /// kube-proxy's change metrics: every Service and EndpointSlice change counted, pending until
    /// a sync applies it, and when one was last queued.
    @Test func changesAreCountedAndPendingUntilSynced() async throws {
        let metrics = ApplierMetrics()
        let (applier, nft) = try await fixtureApplier(metrics: metrics)
        func value(_ name: String) -> String? { metricLines(metrics, name).first.map { String($0.dropFirst(name.count + 1)) } }
        let queuedAtSnapshot = try #require(value("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds").flatMap(Double.init))
        #expect(queuedAtSnapshot > 0)
        let slice = Fixture.slices[2]
        try await applier.receive(
            delta(
                from: 1, to: 2, upserts: [.service(Fixture.services[0]), .endpointSlice(slice)],
                deletes: [ObjectKey(kind: .endpointSlice, namespace: "default", name: Fixture.slices[0].metadata.name)]))
        #expect(value("kubeproxy_sync_proxy_rules_service_changes_total") == "1")
        #expect(value("kubeproxy_sync_proxy_rules_endpoint_changes_total") == "2")
        #expect(value("kubeproxy_sync_proxy_rules_service_changes_pending") == "1.0")
        #expect(value("kubeproxy_sync_proxy_rules_endpoint_changes_pending") == "2.0")
        #expect(try #require(value("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds").flatMap(Double.init)) >= queuedAtSnapshot)
        nft.failNextTransaction("Error: refused")
        #expect(await applier.sync() == .failed(revision: 2, error: "Error: refused"))
        #expect(value("kubeproxy_sync_proxy_rules_endpoint_changes_pending") == "2.0", "not applied yet")
        #expect(await applier.sync() == .applied(revision: 2))
        #expect(value("kubeproxy_sync_proxy_rules_service_changes_pending") == "0.0")
        #expect(value("kubeproxy_sync_proxy_rules_endpoint_changes_pending") == "0.0")
        #expect(value("kubeproxy_sync_proxy_rules_endpoint_changes_total") == "2")
    }

    /// kube-proxy's `sync_proxy_rules_no_local_endpoints_total`: on node-a, itp-local (internal)
    /// and lb-remote (external) have endpoints on node-b only; full and partial syncs keep it.
    @Test func portsWithoutLocalEndpointsAreCountedByPolicy() async throws {
        let metrics = ApplierMetrics()
        let (applier, _) = try await fixtureApplier(metrics: metrics)
        func expect(internal: Int, external: Int) {
            #expect(metricLines(metrics, "kubeproxy_sync_proxy_rules_no_local_endpoints_total") == [
                "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\"} \(Double(external))",
                "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\"} \(Double(`internal`))",
            ])
        }
        expect(internal: 1, external: 1)
        var lbLocal = Fixture.slices[4]
        lbLocal.endpoints.removeFirst()  // podA2, node-a's
        var itpLocal = Fixture.slices[7]
        itpLocal.endpoints.append(endpoint(podA1, node: "node-a"))
        try await applier.receive(delta(from: 1, to: 2, upserts: [.endpointSlice(lbLocal), .endpointSlice(itpLocal)]))
        #expect(await applier.sync() == .applied(revision: 2))
        expect(internal: 0, external: 2)
        try await applier.receive(delta(from: 2, to: 3, deletes: [ObjectKey(kind: .service, namespace: "default", name: "lb-remote")]))
        #expect(await applier.sync() == .applied(revision: 3))
        expect(internal: 0, external: 1)
    }

    @Test func ruleAddedByHandIsDetectedAndRepaired() async throws {
        let (applier, nft) = try await fixtureApplier()
        let before = tables(nft)
        nft.appendRule(.ip, chain: "services", NFTRule([], [.verdict(.drop)]))
        #expect(await applier.checkDrift() == true)
        #expect(await applier.sync() == .applied(revision: 1))
        #expect(tables(nft) == before)
    }

    /// `/healthz` (kube-proxy's meaning): unhealthy before the first sync, after a failed one, and
    /// while a received change has waited a minute without being programmed (a sync that hangs).
    @Test func healthFollowsSyncsAndChangesLeftWaiting() {
        let second: Int64 = 1_000_000_000
        var health = SyncHealth()
        #expect(!health.isHealthy(now: 100 * second, pendingSince: 0))
        health.applied(at: 100 * second)
        #expect(health.isHealthy(now: 1000 * second, pendingSince: 0), "no change waiting: healthy however long ago the last sync")
        #expect(health.isHealthy(now: 259 * second, pendingSince: 200 * second))
        #expect(SyncHealth.pendingSeconds(since: 200 * second, now: 259 * second) == 59)
        #expect(!health.isHealthy(now: 260 * second, pendingSince: 200 * second))
        health.failed()
        #expect(!health.isHealthy(now: 261 * second, pendingSince: 0))
        health.applied(at: 262 * second)
        #expect(health.isHealthy(now: 262 * second, pendingSince: 0))
    }

    /// `/livez` (kube-proxy's meaning): only a change left waiting a minute fails it; not a failed
    /// sync, nor the time before the first.
    @Test func livenessFailsOnlyWhileAChangeWaitsAMinute() {
        let second: Int64 = 1_000_000_000
        #expect(SyncHealth.isLive(now: 100 * second, pendingSince: 0))
        #expect(SyncHealth.isLive(now: 259 * second, pendingSince: 200 * second))
        #expect(!SyncHealth.isLive(now: 260 * second, pendingSince: 200 * second))
    }

    @Test func aChangeIsPendingFromItsArrivalUntilItIsProgrammed() async throws {
        let applier = Applier(node: fixtureNode, tableName: "kube-proxy-swift", nft: FakeNFTables(), logger: quietLogger())
        #expect(applier.oldestPendingChangeUnixNanos == 0)
        let before = WallClock.nowUnixNanos()
        try await applier.receive(Fixture.snapshot())
        #expect(applier.oldestPendingChangeUnixNanos >= before)
        #expect(await applier.sync() == .applied(revision: 1))
        #expect(applier.oldestPendingChangeUnixNanos == 0)
        try await applier.receive(.with { $0.heartbeat = .init() })
        #expect(applier.oldestPendingChangeUnixNanos == 0, "a heartbeat changes nothing")
        try await applier.receive(delta(from: 1, to: 2))
        let pending = applier.oldestPendingChangeUnixNanos
        #expect(pending >= before)
        try await applier.receive(delta(from: 2, to: 3))
        #expect(applier.oldestPendingChangeUnixNanos == pending, "the oldest change counts")
        #expect(await applier.sync() == .applied(revision: 3))
        #expect(applier.oldestPendingChangeUnixNanos == 0)
    }

    /// `node-applier --cleanup`: both tables go, whether or not they are there.
    @Test func removingTheTablesLeavesNoneAndCanBeRepeated() async throws {
        let (_, nft) = try await fixtureApplier()
        #expect(tables(nft).allSatisfy { $0 != nil })
        try Applier.removeTables("kube-proxy-swift", nft: nft)
        #expect(tables(nft) == [nil, nil])
        try Applier.removeTables("kube-proxy-swift", nft: nft)
        #expect(tables(nft) == [nil, nil])
    }

    @Test func nothingIsTouchedBeforeTheFirstSnapshot() async throws {
        let nft = FakeNFTables()
        let applier = Applier(node: fixtureNode, tableName: "kube-proxy-swift", nft: nft, logger: quietLogger())
        #expect(await applier.sync() == nil)
        #expect(nft.transactions == 0)
        await #expect(throws: RevisionGap.self) { try await applier.receive(delta(from: 0, to: 1)) }
    }

    @Test func deltaThatDoesNotStartAtTheHeldRevisionIsRefused() async throws {
        let (applier, _) = try await fixtureApplier()
        await #expect(throws: RevisionGap.self) { try await applier.receive(delta(from: 5, to: 6)) }
        #expect(await applier.held.revision == 1)
    }

    /// Counts beyond the scan chains' go to the large slot map, at their power of two's slots:
    /// elements only. The verdict waits for the rehome (the scan reaches every endpoint
    /// meanwhile), then is the power's static pick chain; a count of another power moves again.
    @Test func countsBeyondTheScanChangeElementsOnlyAndTheirPowersVerdict() async throws {
        let (applier, nft) = try await fixtureApplier()
        let frontend: NFTTuple = [.address(ip("10.96.0.10")), .proto(.tcp), .port(80)]
        var revision: UInt64 = 1
        func grow(to count: Int) async throws -> Set<PacketTracer.Outcome> {
            let many = (0..<count).map { endpoint("10.244.\(3 + $0 / 250).\($0 % 250 + 1)", node: "node-b") }
            try await applier.receive(delta(from: revision, to: revision + 1, upserts: [.endpointSlice(slice("web-v4", service: "web", many))]))
            revision += 1
            #expect(await applier.sync() == .applied(revision: revision))
            #expect(nft.lastTransaction?.operations.allSatisfy { if case .addElements = $0 { true } else if case .deleteElements = $0 { true } else { false } } == true)
            let table = try #require(nft.table(.ip))
            let tracer = PacketTracer(table: table, localAddresses: fixtureNode.nodeIPs)
            return tracer.trace(.init(from: ip(podA1), to: ip("10.96.0.10"), .tcp, port: 80))
        }
        for (count, power) in [(70, 128), (200, 256), (129, 256), (128, 128)] {
            let before = try #require(nft.table(.ip)).elements["service-ips"]?[frontend]
            #expect(try await grow(to: count).count == count, "every endpoint while the verdict waits")
            #expect(try #require(nft.table(.ip)).elements["service-ips"]?[frontend] == before)
            let large = try #require(nft.table(.ip)).elements["backends-tcp-large"] ?? [:]
            #expect(Set(large.keys.filter { $0.values.first == .address(ip("10.96.0.10")) }.map { $0.values.last }) == Set((power..<power + count).map { NFTValue.integer($0) }))
            await applier.rehome()
            let table = try #require(nft.table(.ip))
            #expect(table.elements["service-ips"]?[frontend] == [.verdict(.goto("pick-tcp-upto-\(power)"))])
            let tracer = PacketTracer(table: table, localAddresses: fixtureNode.nodeIPs)
            #expect(tracer.trace(.init(from: ip(podA1), to: ip("10.96.0.10"), .tcp, port: 80)).count == count)
        }
        #expect(try await grow(to: 3).count == 3)
        #expect((try #require(nft.table(.ip)).elements["backends-tcp-large"] ?? [:]).isEmpty)
    }

    /// Past `servicesPerShard` ClientIP-affinity services the applier resyncs in full with more
    /// affinity tables (and back with fewer once a quarter of them is left); in between, changes
    /// are partial. Every affinity service stays sticky to its endpoint from a pod throughout.
    @Test func affinityServicesSpreadOverMoreTablesAsTheyGrowAndFewerAsTheyShrink() async throws {
        let (applier, nft) = try await fixtureApplier()
        func affine(_ index: Int) -> Service {
            Service(
                metadata: meta("affine-\(index)"), clusterIPs: [ip("10.96.\(10 + index / 200).\(1 + index % 200)")],
                ports: [ServicePort(name: "http", port: 80)], sessionAffinity: .clientIP(timeoutSeconds: 60))
        }
        let added = Layout.AffinityShards.servicesPerShard  // and the fixture's `sticky`
        var revision: UInt64 = 1
        func apply(upserts: [ProxyObject] = [], deletes: [ObjectKey] = []) async throws {
            try await applier.receive(delta(from: revision, to: revision + 1, upserts: upserts, deletes: deletes))
            revision += 1
            #expect(await applier.sync() == .applied(revision: revision))
        }
        func wasFull() -> Bool { nft.lastTransaction?.operations.allSatisfy { if case .replaceTable = $0 { true } else { false } } == true }
        let endpoints = [endpoint(podA1, node: "node-a"), endpoint(podB1, node: "node-b")]
        let targets = Set([podA1, podB1].map { PacketTracer.Result.delivered(EndpointTarget(address: ip($0), port: 8080), masqueraded: false) })
        func expectSticky(_ indices: Range<Int>) throws {
            let table = try #require(nft.table(.ip))
            var tracer = PacketTracer(table: table, localAddresses: fixtureNode.nodeIPs)
            for index in indices {
                let packet = PacketTracer.Packet(from: ip(podA2), to: affine(index).clusterIPs[0], .tcp, port: 80)
                let outcomes = tracer.trace(packet)
                #expect(Set(outcomes.map(\.result)) == targets)
                let first = try #require(outcomes.first)
                tracer.remember(first)
                #expect(tracer.trace(packet).map(\.result) == [first.result])
            }
        }

        try await apply(
            upserts: (0..<added).flatMap { index -> [ProxyObject] in
                [.service(affine(index)), .endpointSlice(slice("affine-\(index)", service: "affine-\(index)", endpoints))]
            })
        #expect(wasFull())
        let grown = try #require(nft.table(.ip))
        #expect(KernelTables.names(of: grown) == ["kube-proxy-swift", "kube-proxy-swift-affinity", "kube-proxy-swift-affinity-1"])
        let shardChains = grown.chains.keys.filter { $0.wholeMatch(of: /aff1?-[0-9a-f]{16}/) != nil }
        #expect(shardChains.count == added + 2)  // `sticky` has a cluster and a local chain
        #expect(shardChains.contains { $0.hasPrefix("aff-") } && shardChains.contains { $0.hasPrefix("aff1-") })
        try expectSticky(0..<added)

        // Within the count: partial.
        try await apply(upserts: [.endpointSlice(slice("affine-0", service: "affine-0", [endpoint(podB2, node: "node-b")]))])
        #expect(!wasFull())
        try await apply(upserts: [.endpointSlice(slice("affine-0", service: "affine-0", endpoints))])
        #expect(!wasFull())

        // Down to a quarter of two shards' worth: one table again.
        let kept = Layout.AffinityShards.servicesPerShard / 2 - 1
        try await apply(deletes: (kept..<added).map { ObjectKey(kind: .service, namespace: "default", name: "affine-\($0)") })
        #expect(wasFull())
        let shrunk = try #require(nft.table(.ip))
        #expect(KernelTables.names(of: shrunk) == ["kube-proxy-swift", "kube-proxy-swift-affinity"])
        try expectSticky(0..<kept)
    }

    @Test func affinityShardCountsGrowInPowersOfTwoAndShrinkLate() {
        let perShard = Layout.AffinityShards.servicesPerShard
        #expect([0, 1, perShard].map { Layout.AffinityShards(for: $0).count } == [1, 1, 1])
        #expect([perShard + 1, 2 * perShard, 2 * perShard + 1, 5 * perShard].map { Layout.AffinityShards(for: $0).count } == [2, 2, 4, 8])
        let four = Layout.AffinityShards(for: 3 * perShard)
        #expect(four.fits(4 * perShard) && four.fits(perShard + 1))
        #expect(!four.fits(4 * perShard + 1) && !four.fits(perShard))
        #expect(Layout.AffinityShards(for: 0).fits(0))
    }

    @Test func objectsLiveInTheKernelTableTheirNamesSay() {
        #expect(KernelTables.name("t", holding: "services") == "t")
        #expect(KernelTables.name("t", holding: "aff-nat-output.b") == "t-affinity")
        #expect(KernelTables.name("t", holding: "aff12-9139a2d558e0fadc-1797ede28a9709ab") == "t-affinity-12")
        #expect(KernelTables.name("t", holding: "affinity") == "t")
        #expect(["t", "t-affinity", "t-affinity-3"].allSatisfy { KernelTables.isOurs($0, of: "t") })
        #expect(!["u", "t-affinity-", "t-affinity-x", "t-other", "tt-affinity"].contains { KernelTables.isOurs($0, of: "t") })
    }

    @Test func healthCheckCountsLocalReadyEndpoints() {
        let service = Fixture.services.first { $0.metadata.name == "lb-local" }!
        let slices = Fixture.slices.filter { $0.serviceName == "lb-local" }
        #expect(NodeView.localReadyEndpoints(of: service, slices: slices, node: fixtureNode) == 1)
        let name = ServiceName(namespace: "default", name: "lb-local")
        let registry = HealthCheckRegistry(addresses: [], logger: quietLogger())
        registry.replaceAll([.init(service: name, port: 32100, localEndpoints: 2)])
        func answer(proxyHealthy: Bool) -> (status: HTTPResponseStatus, body: String, weight: [String]) {
            let response = registry.response(port: 32100, proxyHealthy: proxyHealthy)
            #expect(response.contentType == "application/json")
            #expect(response.headers["X-Content-Type-Options"] == ["nosniff"])
            return (response.status, String(decoding: response.body, as: UTF8.self), response.headers["X-Load-Balancing-Endpoint-Weight"])
        }
        let healthy = #"{"service":{"namespace":"default","name":"lb-local"},"localEndpoints":2,"serviceProxyHealthy":true}"#
        #expect(answer(proxyHealthy: true) == (.ok, healthy, ["2"]))
        // kube-proxy: an unhealthy proxy fails every service's check, so load balancers drain the node.
        let unhealthy = #"{"service":{"namespace":"default","name":"lb-local"},"localEndpoints":2,"serviceProxyHealthy":false}"#
        #expect(answer(proxyHealthy: false) == (.serviceUnavailable, unhealthy, ["2"]))
        registry.update(name, .init(service: name, port: 32100, localEndpoints: 0))
        #expect(answer(proxyHealthy: true).status == .serviceUnavailable)
        #expect(answer(proxyHealthy: true).weight == ["0"])
        #expect(registry.response(port: 32101, proxyHealthy: true).status == .notFound)
    }
}
