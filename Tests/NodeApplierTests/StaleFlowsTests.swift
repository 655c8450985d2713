import Dispatch
import NodeApplier
import ProxyAPI
import ProxyModel
import Testing

/// A flow from `client` to `frontend`, DNATed to (answered by) `endpoint`.
func flow(
    _ client: String, to frontend: String, _ port: UInt16, answeredBy endpoint: String, _ endpointPort: UInt16,
    protocolNumber: UInt8 = ConntrackTuple.udp
) -> ConntrackFlow {
    ConntrackFlow(
        original: ConntrackTuple(
            source: ip(client), destination: ip(frontend), protocolNumber: protocolNumber, sourcePort: 40053, destinationPort: port),
        reply: ConntrackTuple(
            source: ip(endpoint), destination: ip(client), protocolNumber: protocolNumber, sourcePort: endpointPort,
            destinationPort: 40053),
        id: 7)
}

@Suite struct StaleFlowsTests {
    /// Dual-stack LoadBalancer with a UDP and a TCP port, an external IP and NodePorts.
    let dns = Service(
        metadata: meta("dns"), type: .loadBalancer, clusterIPs: [ip("10.96.0.53"), ip("fd00:10:96::53")],
        ipFamilies: [.ipv4, .ipv6], ipFamilyPolicy: .requireDualStack,
        ports: [
            ServicePort(name: "dns", protocol: .udp, port: 53, nodePort: 30053),
            ServicePort(name: "http", protocol: .tcp, port: 80, nodePort: 30080),
        ],
        externalTrafficPolicy: .local, externalIPs: [ip("198.51.100.53")], loadBalancerIngressIPs: [ip("172.18.0.53")])
    let ports = [EndpointPort(name: "dns", protocol: .udp, port: 5353), EndpointPort(name: "http", protocol: .tcp, port: 8080)]

    @Test func frontendsAreEveryAddressOfAUDPPortWithTheEndpointsServingIt() {
        let slices = [
            slice(
                "dns-v4", service: "dns", ports: ports,
                [
                    endpoint(podA1, node: "node-a"),
                    // Serving while terminating counts; zones, nodes and policies do not.
                    endpoint(podB1, node: "node-b", ready: false, serving: true, terminating: true, zone: "zone-b"),
                    endpoint(podB2, node: "node-b", ready: false, serving: false),
                ]),
            slice("dns-v6", service: "dns", family: .ipv6, ports: ports, [endpoint("fd00:244::21", node: "node-b")]),
        ]
        let v4: Set = [ip(podA1), ip(podB1)]
        let v6: Set = [ip("fd00:244::21")]
        #expect(
            StaleFlows.frontends(of: NodeView.ports(of: dns, slices: slices, node: fixtureNode), slices: slices) == [
                StaleFlows.Frontend(address: ip("10.96.0.53"), port: 53): v4,
                StaleFlows.Frontend(address: ip("198.51.100.53"), port: 53): v4,
                StaleFlows.Frontend(address: ip("172.18.0.53"), port: 53): v4,
                StaleFlows.Frontend(address: ip("192.168.10.1"), port: 30053): v4,
                StaleFlows.Frontend(address: ip("fd00:10:96::53"), port: 53): v6,
                StaleFlows.Frontend(address: ip("fd00:10::1"), port: 30053): v6,
            ])
    }

    @Test func aPortWithoutServingEndpointsOrAServiceWithoutUDPHasNoFrontends() {
        let notServing = slice("dns-v4", service: "dns", ports: ports, [endpoint(podA1, node: "node-a", ready: false, serving: false)])
        #expect(StaleFlows.frontends(of: NodeView.ports(of: dns, slices: [notServing], node: fixtureNode), slices: [notServing]).isEmpty)
        let web = Fixture.services[0]
        #expect(StaleFlows.frontends(of: NodeView.ports(of: web, slices: [Fixture.slices[0]], node: fixtureNode), slices: [Fixture.slices[0]]).isEmpty)
    }

    @Test func aFlowIsStaleWhenNoServingEndpointAnswersIt() {
        let frontends: [StaleFlows.Frontend: Set<IPAddress>] = [
            StaleFlows.Frontend(address: ip("10.96.0.53"), port: 53): [ip(podA1)],
            StaleFlows.Frontend(address: ip("192.168.10.1"), port: 30053): [ip(podA1)],
        ]
        let current = flow(podA2, to: "10.96.0.53", 53, answeredBy: podA1, 5353)
        let removedEndpoint = flow(podA2, to: "10.96.0.53", 53, answeredBy: podB1, 5353)
        let notNATed = flow(podA2, to: "10.96.0.53", 53, answeredBy: "10.96.0.53", 53)
        let nodePortToRemoved = flow("192.168.50.7", to: "192.168.10.1", 30053, answeredBy: podB1, 5353)
        let otherPort = flow(podA2, to: "10.96.0.53", 54, answeredBy: podB1, 5353)
        let otherAddress = flow(podA2, to: "192.168.10.2", 30053, answeredBy: podB1, 5353)
        let tcp = flow(podA2, to: "10.96.0.53", 53, answeredBy: podB1, 5353, protocolNumber: 6)
        let flows = [current, removedEndpoint, notNATed, nodePortToRemoved, otherPort, otherAddress, tcp]
        let index = StaleFlows.FrontendIndex([ServiceName(namespace: "default", name: "dns"): frontends])
        #expect(flows.filter { StaleFlows.isStale($0, in: index) } == [removedEndpoint, notNATed, nodePortToRemoved])
    }

    @Test func theIndexServesASharedFrontendFromEveryServiceThatHasIt() {
        let a = ServiceName(namespace: "default", name: "a")
        let b = ServiceName(namespace: "default", name: "b")
        let shared = StaleFlows.Frontend(address: ip("198.51.100.53"), port: 53)
        let own = StaleFlows.Frontend(address: ip("10.96.0.53"), port: 53)
        var index = StaleFlows.FrontendIndex([a: [shared: [ip(podA1)], own: [ip(podA1)]], b: [shared: [ip(podB1)]]])
        #expect(index.serves(shared, from: ip(podA1)) == true)
        #expect(index.serves(shared, from: ip(podB1)) == true)
        #expect(index.serves(shared, from: ip(podA2)) == false)
        #expect(index.serves(StaleFlows.Frontend(address: ip("10.96.0.54"), port: 53), from: ip(podA1)) == nil)
        #expect(index.frontends(of: a) == [shared: [ip(podA1)], own: [ip(podA1)]])

        let unchanged = index.replace(b, with: [shared: [ip(podB1)]])
        #expect(!unchanged, "the same frontends change nothing")
        let removed = index.replace(b, with: [:])
        #expect(removed)
        #expect(index.serves(shared, from: ip(podB1)) == false)
        #expect(index.frontends(of: b).isEmpty)
        let replaced = index.replace(a, with: [own: [ip(podA2)]])
        #expect(replaced)
        #expect(index.serves(shared, from: ip(podA1)) == nil, "a frontend no service has any more is gone")
        #expect(index.serves(own, from: ip(podA2)) == true)
        #expect(index.contains(.ipv4) && !index.contains(.ipv6))
        index.replace(a, with: [:])
        #expect(index.isEmpty)
    }

    /// The fixture's `nodeport` service has a UDP port: 10.96.0.12:53 and NodePort 30053 on
    /// 192.168.10.1, to port 5353 of podA1 and podB1.
    @Test func theApplierDeletesTheFlowsItsSyncsMadeStale() async throws {
        let current = flow(podA2, to: "10.96.0.12", 53, answeredBy: podA1, 5353)
        let removedEndpoint = flow(podA2, to: "10.96.0.12", 53, answeredBy: "10.244.9.9", 5353)
        let notNATed = flow(podB2, to: "10.96.0.12", 53, answeredBy: "10.96.0.12", 53)
        let nodePort = flow("192.168.50.7", to: "192.168.10.1", 30053, answeredBy: podB1, 5353)
        let tcp = flow(podA2, to: "10.96.0.12", 80, answeredBy: "10.244.9.9", 8080, protocolNumber: 6)
        let conntrack = FakeConntrack([current, removedEndpoint, notNATed, nodePort, tcp])
        let metrics = ApplierMetrics()
        let applier = Applier(
            node: fixtureNode, tableName: "kube-proxy-swift", nft: FakeNFTables(), conntrack: conntrack, metrics: metrics,
            logger: quietLogger())
        try await applier.receive(Fixture.snapshot())
        await applier.removeStaleFlows()
        #expect(conntrack.listings.isEmpty, "nothing is cleaned up before the rules are programmed")
        #expect(await applier.sync() == .applied(revision: 1))
        #expect(await applier.removeStaleFlows() == 2)
        #expect(conntrack.tracked == [current, nodePort, tcp])
        #expect(conntrack.listings == ["IPv4"], "after a full sync every UDP flow is looked at")
        let text = String(decoding: metrics.render(), as: UTF8.self)
        #expect(text.contains(#"kubeproxy_conntrack_reconciler_deleted_entries_total{ip_family="IPv4"} 2"#))

        // podA1 leaves the service: its flow goes; podB1's stays.
        var nodeportSlice = Fixture.slices[3]
        nodeportSlice.endpoints.removeFirst()
        try await applier.receive(delta(from: 1, to: 2, upserts: [.endpointSlice(nodeportSlice)]))
        #expect(await applier.sync() == .applied(revision: 2))
        #expect(await applier.removeStaleFlows() == 1)
        #expect(conntrack.tracked == [nodePort, tcp])
        #expect(conntrack.listings == ["IPv4", "10.96.0.12:53", "192.168.10.1:30053"], "after a partial sync, the changed frontends")

        // Syncs that change no UDP service leave the table unread, as does a second run.
        await applier.removeStaleFlows()
        var single = Fixture.slices[2]
        single.endpoints.append(endpoint(podA2, node: "node-a"))
        try await applier.receive(delta(from: 2, to: 3, upserts: [.endpointSlice(single)]))
        #expect(await applier.sync() == .applied(revision: 3))
        await applier.removeStaleFlows()
        #expect(conntrack.listings.count == 3)
    }

    /// The cleanup reads the kernel off the applier's executor: a sync runs while it reads (were
    /// it blocked, this test would wait forever and fail on its time limit), and a flow that sync
    /// made current again is not deleted.
    @Test(.timeLimit(.minutes(1))) func aFlowASyncMadeCurrentWhileItWasReadStays() async throws {
        let returning = flow(podA2, to: "10.96.0.12", 53, answeredBy: podA1, 5353)
        let removedEndpoint = flow(podB2, to: "10.96.0.12", 53, answeredBy: "10.244.9.9", 5353)
        let (listing, listingStarted) = AsyncStream<Void>.makeStream()
        let proceed = DispatchSemaphore(value: 0)
        let conntrack = FakeConntrack([returning, removedEndpoint]) {
            listingStarted.yield()
            // Bounded: were the test to fail before it signals, a wait forever would keep the
            // test process from exiting.
            _ = proceed.wait(timeout: .now() + .seconds(70))
        }
        let applier = Applier(node: fixtureNode, tableName: "kube-proxy-swift", nft: FakeNFTables(), conntrack: conntrack, logger: quietLogger())
        try await applier.receive(Fixture.snapshot())
        #expect(await applier.sync() == .applied(revision: 1))
        // podA1 leaves the service (its flow is stale now), and comes back while the flows are read.
        var nodeportSlice = Fixture.slices[3]
        nodeportSlice.endpoints.removeAll { $0.addresses == [ip(podA1)] }
        try await applier.receive(delta(from: 1, to: 2, upserts: [.endpointSlice(nodeportSlice)]))
        #expect(await applier.sync() == .applied(revision: 2))
        let cleanup = Task { await applier.removeStaleFlows() }
        for await _ in listing { break }
        try await applier.receive(delta(from: 2, to: 3, upserts: [.endpointSlice(Fixture.slices[3])]))
        #expect(await applier.sync() == .applied(revision: 3))
        proceed.signal()
        #expect(await cleanup.value == 1)
        #expect(conntrack.tracked == [returning])
        #expect(conntrack.listings == ["IPv4"])
    }

    @Test func manyChangedFrontendsAreLookedAtInOneDump() async throws {
        let conntrack = FakeConntrack()
        let applier = Applier(node: fixtureNode, tableName: "kube-proxy-swift", nft: FakeNFTables(), conntrack: conntrack, logger: quietLogger())
        try await applier.receive(Fixture.snapshot())
        #expect(await applier.sync() == .applied(revision: 1))
        await applier.removeStaleFlows()
        var upserts: [ProxyObject] = []
        for index in 0...Applier.filteredDumpLimit {
            let name = "dns-\(index)"
            upserts.append(
                .service(
                    Service(
                        metadata: meta(name), clusterIPs: [ip("10.96.5.\(index)")],
                        ports: [ServicePort(name: "dns", protocol: .udp, port: 53)])))
            upserts.append(
                .endpointSlice(
                    slice(name, service: name, ports: [EndpointPort(name: "dns", protocol: .udp, port: 53)], [endpoint(podB1, node: "node-b")])))
        }
        try await applier.receive(delta(from: 1, to: 2, upserts: upserts))
        #expect(await applier.sync() == .applied(revision: 2))
        await applier.removeStaleFlows()
        #expect(conntrack.listings == ["IPv4", "IPv4"])
    }
}
