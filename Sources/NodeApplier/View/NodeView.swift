import ProxyModel

/// What the applier knows about the node it runs on.
public struct NodeConfig: Hashable, Sendable {
    public var nodeName: String
    public var zone: String?
    /// The addresses NodePorts (and health-check ports) listen on.
    public var nodeIPs: [IPAddress]
    /// Pod networks: traffic to ClusterIPs from outside them is masqueraded.
    public var clusterCIDRs: [CIDR]
    /// Traffic to an unallocated address in these ranges is dropped.
    public var serviceCIDRs: [CIDR]
    /// Traffic to ClusterIPs is masqueraded whatever its source (kube-proxy's `--masquerade-all`).
    public var masqueradeAll: Bool

    public init(
        nodeName: String, zone: String? = nil, nodeIPs: [IPAddress] = [], clusterCIDRs: [CIDR] = [],
        serviceCIDRs: [CIDR] = ValidationContext.defaultServiceCIDRs, masqueradeAll: Bool = false
    ) {
        self.nodeName = nodeName
        self.zone = zone
        self.nodeIPs = nodeIPs
        self.clusterCIDRs = clusterCIDRs
        self.serviceCIDRs = serviceCIDRs
        self.masqueradeAll = masqueradeAll
    }
}

public struct ServiceName: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var namespace: String
    public var name: String

    public init(namespace: String, name: String) {
        self.namespace = namespace
        self.name = name
    }

    public var description: String { "\(namespace)/\(name)" }

    public static func < (lhs: ServiceName, rhs: ServiceName) -> Bool { (lhs.namespace, lhs.name) < (rhs.namespace, rhs.name) }
}

public struct EndpointTarget: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var address: IPAddress
    public var port: Int

    public init(address: IPAddress, port: Int) {
        self.address = address
        self.port = port
    }

    public var description: String { address.family == .ipv4 ? "\(address):\(port)" : "[\(address)]:\(port)" }

    public static func < (lhs: EndpointTarget, rhs: EndpointTarget) -> Bool { (lhs.address, lhs.port) < (rhs.address, rhs.port) }
}

/// One service port in one address family, as this node serves it.
public struct ServicePortView: Hashable, Sendable {
    public var service: ServiceName
    public var family: IPFamily
    public var port: ServicePort
    public var clusterIP: IPAddress
    /// Endpoints for cluster-wide traffic: ready ones (topology-filtered), else serving+terminating.
    public var clusterEndpoints: [EndpointTarget]
    /// Endpoints on this node: ready ones, else serving+terminating.
    public var localEndpoints: [EndpointTarget]
    public var internalPolicyLocal: Bool
    public var externalPolicyLocal: Bool
    public var externalIPs: [IPAddress]
    public var loadBalancerIPs: [IPAddress]
    /// Sources allowed to reach the LoadBalancer IPs (this family; `sourceRanges`); nil when
    /// unrestricted.
    public var loadBalancerSourceRanges: [CIDR]?
    /// Node addresses of this family the NodePort listens on (empty without a NodePort).
    public var nodePortIPs: [IPAddress]
    public var affinityTimeoutSeconds: Int?

    /// The endpoints ClusterIP traffic goes to.
    public var internalEndpoints: [EndpointTarget] { internalPolicyLocal ? localEndpoints : clusterEndpoints }
}

/// Service ports (one per IP family) with a Local traffic policy whose traffic of that kind this
/// node drops for want of a local endpoint, while the service has endpoints elsewhere: kube-proxy's
/// `sync_proxy_rules_no_local_endpoints_total`, by traffic policy.
public struct NoLocalEndpoints: Hashable, Sendable {
    /// internalTrafficPolicy Local: ClusterIP traffic.
    public var `internal` = 0
    /// externalTrafficPolicy Local: NodePort, LoadBalancer and external IP traffic.
    public var external = 0

    public init() {}

    public init(of ports: [ServicePortView]) {
        for port in ports where port.localEndpoints.isEmpty && !port.clusterEndpoints.isEmpty {
            if port.internalPolicyLocal { `internal` += 1 }
            if port.externalPolicyLocal { external += 1 }
        }
    }

    var isZero: Bool { self == NoLocalEndpoints() }

    static func += (total: inout NoLocalEndpoints, part: NoLocalEndpoints) {
        total.internal += part.internal
        total.external += part.external
    }

    static func -= (total: inout NoLocalEndpoints, part: NoLocalEndpoints) {
        total.internal -= part.internal
        total.external -= part.external
    }
}

/// kube-proxy's service and endpoint semantics, reduced to the view of one node.
public enum NodeView {
    public static let serviceProxyNameLabel = "service.kubernetes.io/service-proxy-name"
    public static let headlessLabel = "service.kubernetes.io/headless"
    /// Services and EndpointSlices with one of these labels do not exist for kube-proxy (its
    /// informers select them away): another proxy's objects, and headless services' slices.
    public static let ignoringLabels = [serviceProxyNameLabel, headlessLabel]

    /// Whether the proxy ignores the object `metadata` belongs to (`ignoringLabels`).
    public static func isIgnored(_ metadata: ObjectMeta) -> Bool { ignoringLabels.contains { metadata.labels[$0] != nil } }

    /// Whether this proxy implements `service` at all.
    public static func isProxied(_ service: Service) -> Bool {
        !service.headless && service.type != .externalName && !service.clusterIPs.isEmpty && !isIgnored(service.metadata)
    }

    /// The service ports of `service` in every family it has a ClusterIP in.
    public static func ports(of service: Service, slices: [EndpointSlice], node: NodeConfig) -> [ServicePortView] {
        guard isProxied(service) else { return [] }
        let name = ServiceName(namespace: service.metadata.namespace, name: service.metadata.name)
        var views: [ServicePortView] = []
        for clusterIP in service.clusterIPs {
            let family = clusterIP.family
            let familySlices = slices.filter { $0.addressType == family }
            let loadBalancerIPs = service.type == .loadBalancer ? service.loadBalancerVIPs.filter { $0.family == family } : []
            let ranges = sourceRanges(of: service, family: family, loadBalancerIPs: loadBalancerIPs, node: node)
            for port in service.ports {
                let candidates = endpoints(for: port, in: familySlices)
                let local = candidates.filter { $0.nodeName == node.nodeName }
                views.append(
                    ServicePortView(
                        service: name, family: family, port: port, clusterIP: clusterIP,
                        clusterEndpoints: targets(usable(topologyFiltered(candidates, node: node))),
                        localEndpoints: targets(usable(local)),
                        internalPolicyLocal: service.internalTrafficPolicy == .local,
                        externalPolicyLocal: service.externalTrafficPolicy == .local
                            && (service.usesNodePorts || !service.externalIPs.isEmpty),
                        externalIPs: service.externalIPs.filter { $0.family == family },
                        loadBalancerIPs: loadBalancerIPs,
                        loadBalancerSourceRanges: ranges,
                        nodePortIPs: port.nodePort != nil && service.usesNodePorts ? node.nodeIPs.filter { $0.family == family } : [],
                        affinityTimeoutSeconds: {
                            if case .clientIP(let timeout) = service.sessionAffinity { return timeout }
                            return nil
                        }()))
            }
        }
        return views
    }

    /// The sources `service`'s LoadBalancer firewall lets through in `family` (nil: no firewall).
    /// As kube-proxy's:
    /// - only the ranges of `family` count: a dual-stack service with ranges of one family only
    ///   has no firewall in the other, and a range of length 0 is no firewall either;
    /// - when a range holds one of the node's addresses, the LoadBalancer IPs are let through too.
    ///   A VIP-like load balancer's IP is often a local address of the node, and a connection
    ///   from the node to it then comes from that IP, not from the node's.
    static func sourceRanges(of service: Service, family: IPFamily, loadBalancerIPs: [IPAddress], node: NodeConfig) -> [CIDR]? {
        let ranges = service.loadBalancerSourceRanges.filter { $0.family == family }
        guard !ranges.isEmpty, !ranges.contains(where: { $0.prefixLength == 0 }) else { return nil }
        guard ranges.contains(where: { range in node.nodeIPs.contains(where: range.contains) }) else { return ranges }
        return ranges
            + loadBalancerIPs.filter { address in !ranges.contains { $0.contains(address) } }
            .compactMap { CIDR(network: $0, prefixLength: $0.bitWidth) }
    }

    /// Ready endpoints on this node, counted the way kube-proxy's health-check server counts them.
    public static func localReadyEndpoints(of service: Service, slices: [EndpointSlice], node: NodeConfig) -> Int {
        var addresses: Set<IPAddress> = []
        for slice in slices {
            for endpoint in slice.endpoints where endpoint.nodeName == node.nodeName && endpoint.conditions.ready {
                if let address = endpoint.addresses.first { addresses.insert(address) }
            }
        }
        return addresses.count
    }

    struct Candidate: Hashable {
        var target: EndpointTarget
        var ready: Bool
        var serving: Bool
        var terminating: Bool
        var nodeName: String?
        var hintZones: [String]
        var hintNodes: [String]

        var servingTerminating: Bool { serving && terminating }
    }

    /// Endpoints of the slices for one service port: the slice port with the service port's name
    /// and protocol gives the (already resolved) target port. Duplicates across slices count once.
    static func endpoints(for port: ServicePort, in slices: [EndpointSlice]) -> [Candidate] {
        var seen: Set<EndpointTarget> = []
        var result: [Candidate] = []
        for slice in slices {
            guard let slicePort = slice.ports.first(where: { $0.name == port.name && $0.protocol == port.protocol }) else {
                continue
            }
            for endpoint in slice.endpoints {
                guard let address = endpoint.addresses.first else { continue }
                let target = EndpointTarget(address: address, port: slicePort.port)
                guard seen.insert(target).inserted else { continue }
                let conditions = endpoint.conditions
                result.append(
                    Candidate(
                        target: target, ready: conditions.ready, serving: conditions.serving, terminating: conditions.terminating,
                        nodeName: endpoint.nodeName, hintZones: endpoint.hintZones, hintNodes: endpoint.hintNodes))
            }
        }
        return result
    }

    /// Ready endpoints; when there are none, the serving+terminating ones (graceful termination).
    static func usable(_ candidates: [Candidate]) -> [Candidate] {
        let ready = candidates.filter(\.ready)
        return ready.isEmpty ? candidates.filter(\.servingTerminating) : ready
    }

    /// Topology-aware routing from hints, as kube-proxy's: node hints (which the EndpointSlice
    /// controller writes for trafficDistribution PreferSameNode), then zone hints; each used only
    /// when every ready endpoint carries hints of its kind, and ignored when none is for this node
    /// (or its zone). The hints decide, not the service's trafficDistribution.
    static func topologyFiltered(_ candidates: [Candidate], node: NodeConfig) -> [Candidate] {
        let ready = candidates.filter(\.ready)
        guard !ready.isEmpty else { return candidates }
        if ready.allSatisfy({ !$0.hintNodes.isEmpty }) {
            let sameNode = ready.filter { $0.hintNodes.contains(node.nodeName) }
            if !sameNode.isEmpty { return sameNode }
        }
        if let zone = node.zone, ready.allSatisfy({ !$0.hintZones.isEmpty }) {
            let sameZone = ready.filter { $0.hintZones.contains(zone) }
            if !sameZone.isEmpty { return sameZone }
        }
        return candidates
    }

    static func targets(_ candidates: [Candidate]) -> [EndpointTarget] { candidates.map(\.target).sorted() }
}
