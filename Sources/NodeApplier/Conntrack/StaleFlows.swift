import ProxyModel

/// kube-proxy's conntrack reconciliation, for UDP. The kernel decides DNAT once per flow, on its
/// first packet, and a UDP flow lives as long as its client keeps sending from the same port
/// (DNS resolvers do). Without cleanup such a client keeps reaching an endpoint that was removed,
/// or stays un-NATed once our rules are back (a flow that began while they were missing: before
/// the first program, or with our table deleted by hand). So after a sync, a UDP flow to a service
/// frontend whose answers do not come from a serving endpoint of that service port is deleted; the
/// next datagram starts a new flow through the current rules. TCP needs none of this: a removed
/// endpoint's connections end (or time out) on their own, as in kube-proxy.
public enum StaleFlows {
    /// An address and port a UDP service port is reached on.
    public struct Frontend: Hashable, Sendable {
        public var address: IPAddress
        public var port: UInt16

        public init(address: IPAddress, port: Int) {
            self.address = address
            self.port = UInt16(truncatingIfNeeded: port)
        }
    }

    /// The frontends of a service's UDP ports (ClusterIPs, external IPs, LoadBalancer IPs, and the
    /// node's addresses with the NodePort), from its node view `ports` and its `slices`, each with
    /// the addresses of the endpoints that serve that port on any node. Serving counts, ready or
    /// not; traffic policies and topology do not: they decide where new flows go, not whether an
    /// existing flow's endpoint still exists (kube-proxy's rule). A port without serving endpoints
    /// is left alone, as in kube-proxy: no endpoint could take its flows over.
    public static func frontends(of ports: [ServicePortView], slices: [EndpointSlice]) -> [Frontend: Set<IPAddress>] {
        var frontends: [Frontend: Set<IPAddress>] = [:]
        for view in ports where view.port.protocol == .udp {
            let serving = Set(
                NodeView.endpoints(for: view.port, in: slices.filter { $0.addressType == view.family }).filter(\.serving)
                    .map(\.target.address))
            guard !serving.isEmpty else { continue }
            for address in [view.clusterIP] + view.externalIPs + view.loadBalancerIPs {
                frontends[Frontend(address: address, port: view.port.port), default: []].formUnion(serving)
            }
            if let nodePort = view.port.nodePort {
                for address in view.nodePortIPs { frontends[Frontend(address: address, port: nodePort), default: []].formUnion(serving) }
            }
        }
        return frontends
    }

    /// Whether `flow` is a UDP flow sent to one of `frontends` and answered by an address that
    /// does not serve it (or not NATed at all: then the frontend itself answers).
    public static func isStale(_ flow: ConntrackFlow, frontends: [Frontend: Set<IPAddress>]) -> Bool {
        guard flow.original.protocolNumber == ConntrackTuple.udp,
            let serving = frontends[Frontend(address: flow.original.destination, port: Int(flow.original.destinationPort))]
        else { return false }
        return !serving.contains(flow.reply.source)
    }
}
