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

    /// Whether `flow` is a UDP flow sent to one of the frontends of `index` and answered by an
    /// address that does not serve it (or not NATed at all: then the frontend itself answers).
    public static func isStale(_ flow: ConntrackFlow, in index: FrontendIndex) -> Bool {
        guard flow.original.protocolNumber == ConntrackTuple.udp else { return false }
        let frontend = Frontend(address: flow.original.destination, port: Int(flow.original.destinationPort))
        return index.serves(frontend, from: flow.reply.source) == false
    }

    /// Every UDP service's frontends, by frontend: what a cleanup checks flows against. Kept up to
    /// date service by service as syncs change them, so a cleanup takes it as it is (a
    /// copy-on-write value) instead of merging every service's frontends, which at 50k UDP services
    /// held up the syncs behind it. A frontend two services share is served by the endpoints of both.
    public struct FrontendIndex: Sendable {
        private var byService: [ServiceName: [Frontend: Set<IPAddress>]] = [:]
        /// The services that have each frontend (almost always one).
        private var owners: [Frontend: [ServiceName]] = [:]

        public init() {}

        /// The index of these services' frontends (`frontends(of:slices:)` of each).
        public init(_ services: [ServiceName: [Frontend: Set<IPAddress>]]) {
            byService = services.filter { !$0.value.isEmpty }
            owners.reserveCapacity(byService.count)
            for (name, frontends) in byService {
                for frontend in frontends.keys { owners[frontend, default: []].append(name) }
            }
        }

        public var isEmpty: Bool { owners.isEmpty }

        /// Whether a frontend of `family` is indexed.
        public func contains(_ family: IPFamily) -> Bool { owners.keys.contains { $0.address.family == family } }

        /// The frontends of `name`, with their serving endpoints.
        public func frontends(of name: ServiceName) -> [Frontend: Set<IPAddress>] { byService[name] ?? [:] }

        /// Gives `name` these frontends (none: takes it out); returns whether that changed any.
        @discardableResult
        public mutating func replace(_ name: ServiceName, with frontends: [Frontend: Set<IPAddress>]) -> Bool {
            guard frontends != self.frontends(of: name) else { return false }
            for frontend in (byService.removeValue(forKey: name) ?? [:]).keys {
                owners[frontend]?.removeAll { $0 == name }
                if owners[frontend]?.isEmpty == true { owners[frontend] = nil }
            }
            guard !frontends.isEmpty else { return true }
            byService[name] = frontends
            for frontend in frontends.keys { owners[frontend, default: []].append(name) }
            return true
        }

        /// Whether a service with `frontend` has `address` among its serving endpoints; nil when no
        /// service has the frontend.
        public func serves(_ frontend: Frontend, from address: IPAddress) -> Bool? {
            guard let names = owners[frontend] else { return nil }
            return names.contains { byService[$0]?[frontend]?.contains(address) == true }
        }
    }
}
