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
}
