import NodeApplier
import ProxyModel
import Testing

/// Where packets go through the fixture ruleset: Kubernetes service semantics, asserted with the
/// packet tracer over the fake's tables.
@Suite struct TracerTests {
    typealias Packet = PacketTracer.Packet

    func tracer(_ family: NFTFamily = .ip, node: NodeConfig = fixtureNode) async throws -> PacketTracer {
        let (_, nft) = try await fixtureApplier(node: node)
        return PacketTracer(table: try #require(nft.table(family)), localAddresses: node.nodeIPs)
    }

    func results(_ tracer: PacketTracer, _ packet: Packet) -> Set<PacketTracer.Result> { Set(tracer.trace(packet).map(\.result)) }

    func to(_ address: String, _ port: Int, masqueraded: Bool = false) -> PacketTracer.Result {
        .delivered(EndpointTarget(address: ip(address), port: port), masqueraded: masqueraded)
    }

    @Test func clusterIPSpreadsOverAllReadyEndpointsWithoutMasqueradeFromPods() async throws {
        let tracer = try await tracer()
        let packet = Packet(from: ip(podA2), to: ip("10.96.0.10"), .tcp, port: 80)
        #expect(results(tracer, packet) == [to(podA1, 8080), to(podB1, 8080), to(podB2, 8080)])
    }

    @Test func clusterIPFromOutsideTheClusterCIDRIsMasqueraded() async throws {
        let tracer = try await tracer()
        let fromNode = Packet(from: ip("192.168.10.1"), to: ip("10.96.0.11"), .tcp, port: 80, origin: .localHost)
        #expect(results(tracer, fromNode) == [to(podB1, 8080, masqueraded: true)])
    }

    /// kube-proxy's `--masquerade-all`: pods' traffic to ClusterIPs is masqueraded as well, in
    /// both families; it changes nothing for other frontends.
    @Test func masqueradeAllMasqueradesPodsToClusterIPs() async throws {
        var node = fixtureNode
        node.masqueradeAll = true
        let tracer = try await tracer(node: node)
        let packet = Packet(from: ip(podA2), to: ip("10.96.0.10"), .tcp, port: 80)
        #expect(results(tracer, packet) == [to(podA1, 8080, masqueraded: true), to(podB1, 8080, masqueraded: true), to(podB2, 8080, masqueraded: true)])
        let v6 = try await self.tracer(.ip6, node: node)
        #expect(
            results(v6, Packet(from: ip("fd00:244::99"), to: ip("fd00:10:96::10"), .tcp, port: 80))
                == [to("fd00:244::11", 8080, masqueraded: true), to("fd00:244::21", 8080, masqueraded: true)])
        // A pod through a NodePort: every endpoint, not masqueraded, as without.
        let fromPod = Packet(from: ip(podB1), to: ip("192.168.10.1"), .tcp, port: 30081)
        #expect(results(tracer, fromPod) == [to(podA2, 8080), to(podB2, 8080)])
    }

    @Test func ipv6ClusterIPReachesIPv6Endpoints() async throws {
        let tracer = try await tracer(.ip6)
        let packet = Packet(from: ip("fd00:244::99"), to: ip("fd00:10:96::10"), .tcp, port: 80)
        #expect(results(tracer, packet) == [to("fd00:244::11", 8080), to("fd00:244::21", 8080)])
    }

    @Test func singleEndpointIsPlainDNAT() async throws {
        let tracer = try await tracer()
        #expect(results(tracer, Packet(from: ip(podA1), to: ip("10.96.0.11"), .tcp, port: 80)) == [to(podB1, 8080)])
    }

    @Test func nodePortsForEveryProtocolAreMasqueradedWithClusterPolicy() async throws {
        let tracer = try await tracer()
        for (proto, port, target) in [(L4Protocol.tcp, 30080, 8080), (.udp, 30053, 5353), (.sctp, 30900, 9000)] {
            let packet = Packet(from: outsideClient, to: ip("192.168.10.1"), proto, port: port)
            #expect(results(tracer, packet) == [to(podA1, target, masqueraded: true), to(podB1, target, masqueraded: true)])
        }
        // Wrong protocol for the port: not a service.
        #expect(results(tracer, Packet(from: outsideClient, to: ip("192.168.10.1"), .udp, port: 30080)) == [to("192.168.10.1", 30080)])
    }

    @Test func externalPolicyLocalKeepsTheClientAddressAndUsesOnlyLocalEndpoints() async throws {
        let tracer = try await tracer()
        let viaLoadBalancer = Packet(from: allowedClient, to: ip("172.18.0.10"), .tcp, port: 80)
        #expect(results(tracer, viaLoadBalancer) == [to(podA2, 8080)])
        let viaNodePort = Packet(from: allowedClient, to: ip("192.168.10.1"), .tcp, port: 30081)
        #expect(results(tracer, viaNodePort) == [to(podA2, 8080)])
        // Pods reach all endpoints through the NodePort (kube-proxy's short-circuit), not masqueraded.
        let fromPod = Packet(from: ip(podB1), to: ip("192.168.10.1"), .tcp, port: 30081)
        #expect(results(tracer, fromPod) == [to(podA2, 8080), to(podB2, 8080)])
    }

    @Test func externalPolicyLocalWithoutLocalEndpointsDrops() async throws {
        let tracer = try await tracer()
        #expect(results(tracer, Packet(from: outsideClient, to: ip("172.18.0.11"), .tcp, port: 80)) == [.dropped])
        #expect(results(tracer, Packet(from: outsideClient, to: ip("192.168.10.1"), .tcp, port: 30082)) == [.dropped])
        // Pods still get there (cluster-wide endpoints) ...
        #expect(results(tracer, Packet(from: ip(podA1), to: ip("172.18.0.11"), .tcp, port: 80)) == [to(podB2, 8080)])
        // ... and so does the node itself (masqueraded).
        let fromNode = Packet(from: ip("192.168.10.1"), to: ip("172.18.0.11"), .tcp, port: 80, origin: .localHost)
        #expect(results(tracer, fromNode) == [to(podB2, 8080, masqueraded: true)])
    }

    /// kube-proxy's rule: an ingress IP in ipMode Proxy gets nothing (the load balancer does not
    /// send its traffic to that address).
    @Test func loadBalancerIngressInProxyModeIsNotAService() async throws {
        let tracer = try await tracer()
        #expect(results(tracer, Packet(from: allowedClient, to: ip("172.18.0.12"), .tcp, port: 80)) == [to("172.18.0.12", 80)])
    }

    @Test func loadBalancerSourceRangesBlockOtherClients() async throws {
        let tracer = try await tracer()
        #expect(results(tracer, Packet(from: outsideClient, to: ip("172.18.0.10"), .tcp, port: 80)) == [.dropped])
        #expect(results(tracer, Packet(from: allowedClient, to: ip("172.18.0.10"), .tcp, port: 80)) == [to(podA2, 8080)])
    }

    /// kube-proxy's exception: when a source range holds one of the node's addresses, the
    /// LoadBalancer IP is let through as a source too. A VIP-like load balancer's IP is often a
    /// local address of the node, and the node's own connections to it then come from it.
    @Test func loadBalancerSourceRangeHoldingTheNodeLetsTheNodeInFromTheLoadBalancerIP() async throws {
        let fromLoadBalancerIP = Packet(from: ip("172.18.0.10"), to: ip("172.18.0.10"), .tcp, port: 80, origin: .localHost)
        #expect(results(try await tracer(), fromLoadBalancerIP) == [.dropped])
        var node = fixtureNode
        node.nodeIPs.append(ip("203.0.113.1"))
        let tracer = try await tracer(node: node)
        // From the node: the cluster-wide endpoints, masqueraded (kube-proxy's short-circuit).
        #expect(results(tracer, fromLoadBalancerIP) == [to(podA2, 8080, masqueraded: true), to(podB2, 8080, masqueraded: true)])
        #expect(results(tracer, Packet(from: outsideClient, to: ip("172.18.0.10"), .tcp, port: 80)) == [.dropped])
        // The ingress IP in ipMode Proxy is not a VIP: not let through.
        let fromProxyIP = Packet(from: ip("172.18.0.12"), to: ip("172.18.0.10"), .tcp, port: 80, origin: .localHost)
        #expect(results(tracer, fromProxyIP) == [.dropped])
    }

    @Test func sessionAffinitySticksToTheFirstChoice() async throws {
        var tracer = try await tracer()
        let packet = Packet(from: ip(podA2), to: ip("10.96.0.15"), .tcp, port: 80)
        let first = tracer.trace(packet)
        #expect(Set(first.map(\.result)) == [to(podA1, 8080), to(podB1, 8080)])
        let chosen = try #require(first.first { $0.result == to(podB1, 8080) })
        tracer.remember(chosen)
        #expect(results(tracer, packet) == [to(podB1, 8080)])
        // Another client is not affected.
        #expect(results(tracer, Packet(from: ip(podA1), to: ip("10.96.0.15"), .tcp, port: 80)).count == 2)
    }

    /// Affinity frontends are translated by the affinity table's chains, after ours: the policies
    /// and the masquerade marks of ours still hold.
    @Test func sessionAffinityKeepsTheTrafficPolicies() async throws {
        var tracer = try await tracer()
        // Local policy from outside: the local endpoint only, the client address kept.
        let outside = Packet(from: outsideClient, to: ip("192.168.10.1"), .tcp, port: 30083)
        let first = tracer.trace(outside)
        #expect(Set(first.map(\.result)) == [to(podA1, 8080)])
        tracer.remember(try #require(first.first))
        #expect(results(tracer, outside) == [to(podA1, 8080)])
        // From a pod: every endpoint (kube-proxy's short-circuit); from the node: masqueraded.
        #expect(results(tracer, Packet(from: ip(podB1), to: ip("192.168.10.1"), .tcp, port: 30083)) == [to(podA1, 8080), to(podB1, 8080)])
        let fromNode = Packet(from: ip("192.168.10.1"), to: ip("10.96.0.15"), .tcp, port: 80, origin: .localHost)
        #expect(results(tracer, fromNode) == [to(podA1, 8080, masqueraded: true), to(podB1, 8080, masqueraded: true)])
    }

    @Test func internalPolicyLocalWithoutLocalEndpointsDrops() async throws {
        let tracer = try await tracer()
        #expect(results(tracer, Packet(from: ip(podA1), to: ip("10.96.0.16"), .tcp, port: 80)) == [.dropped])
    }

    @Test func serviceWithoutEndpointsRejects() async throws {
        let tracer = try await tracer()
        #expect(results(tracer, Packet(from: ip(podA1), to: ip("10.96.0.17"), .tcp, port: 80)) == [.rejected])
        #expect(
            results(tracer, Packet(from: ip("192.168.10.1"), to: ip("10.96.0.17"), .tcp, port: 80, origin: .localHost)) == [.rejected])
    }

    @Test func clusterIPOnAnUnknownPortRejectsAndUnallocatedAddressesDrop() async throws {
        let tracer = try await tracer()
        #expect(results(tracer, Packet(from: ip(podA1), to: ip("10.96.0.10"), .tcp, port: 81)) == [.rejected])
        #expect(results(tracer, Packet(from: ip(podA1), to: ip("10.96.99.99"), .tcp, port: 80)) == [.dropped])
        // Outside the service CIDR: untouched.
        #expect(results(tracer, Packet(from: ip(podA1), to: ip("10.20.0.1"), .tcp, port: 80)) == [to("10.20.0.1", 80)])
    }

    @Test func servingTerminatingEndpointsAreTheFallback() async throws {
        let tracer = try await tracer()
        #expect(results(tracer, Packet(from: ip(podA2), to: ip("10.96.0.18"), .tcp, port: 80)) == [to(podA1, 8080)])
    }

    @Test func zoneHintsKeepTrafficInTheZone() async throws {
        let tracer = try await tracer()
        #expect(results(tracer, Packet(from: ip(podA2), to: ip("10.96.0.19"), .tcp, port: 80)) == [to(podA1, 8080)])
    }

    @Test func externalIPsWithClusterPolicyAreMasqueraded() async throws {
        let tracer = try await tracer()
        #expect(
            results(tracer, Packet(from: outsideClient, to: ip("198.51.100.5"), .tcp, port: 80)) == [to(podB1, 8080, masqueraded: true)])
    }

    @Test func hairpinTrafficIsMasqueraded() async throws {
        let tracer = try await tracer()
        // lb-local's ClusterIP from its own local endpoint, landing on itself.
        let outcomes = results(tracer, Packet(from: ip(podA2), to: ip("10.96.0.13"), .tcp, port: 80))
        #expect(outcomes == [to(podA2, 8080, masqueraded: true), to(podB2, 8080)])
    }

    @Test func servicesOfOtherProxiesHeadlessAndExternalNameAreIgnored() async throws {
        let tracer = try await tracer()
        // other-proxy's ClusterIP is allocated but not ours: treated as an unallocated address.
        #expect(results(tracer, Packet(from: ip(podA1), to: ip("10.96.0.21"), .tcp, port: 80)) == [.dropped])
    }
}
