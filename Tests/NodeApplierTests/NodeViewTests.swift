import NodeApplier
import ProxyModel
import Testing

@Suite struct NodeViewTests {
    /// kube-proxy's LoadBalancer firewall, per family: the service's ranges of that family, and
    /// its LoadBalancer IPs of that family when one of those ranges holds a node address; none in
    /// a family without ranges, or with one of length 0.
    @Test func loadBalancerSourceRangesPerFamilyLetTheLoadBalancerIPsInWhenTheyHoldTheNode() {
        let service = Service(
            metadata: meta("lb"), type: .loadBalancer, clusterIPs: [ip("10.96.0.40"), ip("fd00:10:96::40")],
            ipFamilies: [.ipv4, .ipv6], ipFamilyPolicy: .requireDualStack,
            ports: [ServicePort(name: "http", port: 80, nodePort: 30400)],
            loadBalancerSourceRanges: [cidr("203.0.113.0/24"), cidr("2001:db8:1::/48")],
            loadBalancerIngressIPs: [ip("172.18.0.40"), ip("203.0.113.40"), ip("2001:db8:9::40"), ip("172.18.0.41")],
            loadBalancerIngressIPModes: [.vip, .vip, .vip, .proxy])
        func ranges(_ node: NodeConfig) -> [IPFamily: [String]] {
            Dictionary(uniqueKeysWithValues: NodeView.ports(of: service, slices: [], node: node).map {
                ($0.family, ($0.loadBalancerSourceRanges ?? []).map(\.description))
            })
        }
        // fixtureNode's addresses are in neither range.
        #expect(ranges(fixtureNode) == [.ipv4: ["203.0.113.0/24"], .ipv6: ["2001:db8:1::/48"]])
        var node = fixtureNode
        node.nodeIPs = [ip("203.0.113.1"), ip("2001:db8:1::1")]
        // VIPs only (not the one in ipMode Proxy), each family its own; one a range holds already is left out.
        #expect(ranges(node) == [.ipv4: ["203.0.113.0/24", "172.18.0.40/32"], .ipv6: ["2001:db8:1::/48", "2001:db8:9::40/128"]])
        node.nodeIPs = [ip("203.0.113.1")]
        #expect(ranges(node) == [.ipv4: ["203.0.113.0/24", "172.18.0.40/32"], .ipv6: ["2001:db8:1::/48"]])
        var changed = service
        func firewalled(_ ranges: [CIDR]) -> Set<IPFamily> {
            changed.loadBalancerSourceRanges = ranges
            return Set(NodeView.ports(of: changed, slices: [], node: fixtureNode).filter { $0.loadBalancerSourceRanges != nil }.map(\.family))
        }
        #expect(firewalled([]) == [])
        #expect(firewalled([cidr("203.0.113.0/24")]) == [.ipv4])
        #expect(firewalled([cidr("0.0.0.0/0"), cidr("203.0.113.0/24"), cidr("2001:db8:1::/48")]) == [.ipv6])
        #expect(firewalled([cidr("::/0")]) == [])
    }

    /// kube-proxy's topology, from hints: node hints first, then zone hints, each only when every
    /// ready endpoint carries hints of its kind and one is for this node (or its zone); with no
    /// ready endpoint anywhere, the serving and terminating ones, whatever their hints.
    @Test func topologyHintsChooseTheClusterEndpoints() {
        let node = NodeConfig(nodeName: "node-a", zone: "zone-a", nodeIPs: [ip("192.168.10.1")])
        let service = Service(metadata: meta("web"), clusterIPs: [ip("10.96.0.50")], ports: [ServicePort(name: "http", port: 80)])
        func chosen(_ endpoints: [Endpoint], on node: NodeConfig = node) -> [String] {
            let slice = EndpointSlice(
                metadata: meta("web-1"), serviceName: "web", addressType: .ipv4, ports: [EndpointPort(name: "http", port: 8080)],
                endpoints: endpoints)
            return NodeView.ports(of: service, slices: [slice], node: node)[0].clusterEndpoints.map { "\($0.address)" }
        }
        func at(_ last: Int, zones: [String] = [], nodes: [String] = [], ready: Bool = true, terminating: Bool = false) -> Endpoint {
            Endpoint(
                addresses: [ip("10.244.0.\(last)")], conditions: EndpointConditions(ready: ready, serving: ready || terminating, terminating: terminating),
                hintZones: zones, hintNodes: nodes)
        }
        let zoned = [at(1, zones: ["zone-a"]), at(2, zones: ["zone-b"]), at(3, zones: ["zone-a", "zone-b"])]
        #expect(chosen(zoned) == ["10.244.0.1", "10.244.0.3"])
        // Node hints win over zone hints; without the service's trafficDistribution saying so.
        let noded = [at(1, zones: ["zone-a"], nodes: ["node-b"]), at(2, zones: ["zone-b"], nodes: ["node-a"]), at(3, zones: ["zone-a"], nodes: ["node-c"])]
        #expect(chosen(noded) == ["10.244.0.2"])
        // None for this node: the zone hints.
        var elsewhere = node
        elsewhere.nodeName = "node-z"
        #expect(chosen(noded, on: elsewhere) == ["10.244.0.1", "10.244.0.3"])
        // A ready endpoint without a node hint: the zone hints.
        #expect(chosen(noded + [at(4, zones: ["zone-b"])]) == ["10.244.0.1", "10.244.0.3"])
        // A ready endpoint without a zone hint, no hint for this zone, or a node without a zone: every endpoint.
        #expect(chosen(zoned + [at(4)]) == ["10.244.0.1", "10.244.0.2", "10.244.0.3", "10.244.0.4"])
        #expect(chosen([at(2, zones: ["zone-b"]), at(3, zones: ["zone-c"])]) == ["10.244.0.2", "10.244.0.3"])
        var zoneless = node
        zoneless.zone = nil
        #expect(chosen(zoned, on: zoneless) == ["10.244.0.1", "10.244.0.2", "10.244.0.3"])
        // Endpoints that are not ready do not count for the hints, nor are they chosen.
        #expect(chosen(zoned + [at(4, ready: false)]) == ["10.244.0.1", "10.244.0.3"])
        // No ready endpoint: the serving and terminating ones, hints or not.
        let terminating = [at(1, zones: ["zone-b"], ready: false, terminating: true), at(2, ready: false, terminating: true), at(3, ready: false)]
        #expect(chosen(terminating) == ["10.244.0.1", "10.244.0.2"])
    }
}
