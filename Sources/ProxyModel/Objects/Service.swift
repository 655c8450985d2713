/// A Kubernetes Service, reduced to the fields a proxy acts on, with Kubernetes names and semantics.
public struct Service: Hashable, Sendable, Codable {
    public var metadata: ObjectMeta
    public var type: ServiceType
    /// Allocated ClusterIPs, at most one per family, primary family first. Empty when headless
    /// or ExternalName; empty on input means "allocate".
    public var clusterIPs: [IPAddress]
    /// `clusterIP: None`.
    public var headless: Bool
    /// Families in order of preference; empty on input means "derive".
    public var ipFamilies: [IPFamily]
    public var ipFamilyPolicy: IPFamilyPolicy
    public var ports: [ServicePort]
    public var sessionAffinity: SessionAffinity
    public var externalTrafficPolicy: TrafficPolicy
    public var internalTrafficPolicy: TrafficPolicy
    public var externalIPs: [IPAddress]
    public var loadBalancerSourceRanges: [CIDR]
    /// `status.loadBalancer.ingress[].ip`.
    public var loadBalancerIngressIPs: [IPAddress]
    /// `status.loadBalancer.ingress[].ipMode` of each of `loadBalancerIngressIPs`; nil when all
    /// are VIP, the default (and what objects stored before ipMode have).
    public var loadBalancerIngressIPModes: [LoadBalancerIPMode]?
    /// Allocated for LoadBalancer services with externalTrafficPolicy Local; nil otherwise.
    public var healthCheckNodePort: Int?
    public var trafficDistribution: TrafficDistribution?
    public var externalName: String?

    public init(
        metadata: ObjectMeta,
        type: ServiceType = .clusterIP,
        clusterIPs: [IPAddress] = [],
        headless: Bool = false,
        ipFamilies: [IPFamily] = [],
        ipFamilyPolicy: IPFamilyPolicy = .singleStack,
        ports: [ServicePort] = [],
        sessionAffinity: SessionAffinity = .none,
        externalTrafficPolicy: TrafficPolicy = .cluster,
        internalTrafficPolicy: TrafficPolicy = .cluster,
        externalIPs: [IPAddress] = [],
        loadBalancerSourceRanges: [CIDR] = [],
        loadBalancerIngressIPs: [IPAddress] = [],
        loadBalancerIngressIPModes: [LoadBalancerIPMode]? = nil,
        healthCheckNodePort: Int? = nil,
        trafficDistribution: TrafficDistribution? = nil,
        externalName: String? = nil
    ) {
        self.metadata = metadata
        self.type = type
        self.clusterIPs = clusterIPs
        self.headless = headless
        self.ipFamilies = ipFamilies
        self.ipFamilyPolicy = ipFamilyPolicy
        self.ports = ports
        self.sessionAffinity = sessionAffinity
        self.externalTrafficPolicy = externalTrafficPolicy
        self.internalTrafficPolicy = internalTrafficPolicy
        self.externalIPs = externalIPs
        self.loadBalancerSourceRanges = loadBalancerSourceRanges
        self.loadBalancerIngressIPs = loadBalancerIngressIPs
        self.loadBalancerIngressIPModes = loadBalancerIngressIPModes
        self.healthCheckNodePort = healthCheckNodePort
        self.trafficDistribution = trafficDistribution
        self.externalName = externalName
    }

    /// Whether the service's ports get NodePorts (NodePort and LoadBalancer types).
    public var usesNodePorts: Bool { type == .nodePort || type == .loadBalancer }

    /// Whether the service needs a healthCheckNodePort (kube-proxy's rule).
    public var needsHealthCheckNodePort: Bool { type == .loadBalancer && externalTrafficPolicy == .local }

    /// The ipMode of the `index`th ingress IP.
    public func loadBalancerIngressIPMode(_ index: Int) -> LoadBalancerIPMode {
        guard let modes = loadBalancerIngressIPModes, modes.indices.contains(index) else { return .vip }
        return modes[index]
    }

    /// The ingress IPs whose traffic reaches the nodes addressed to them (ipMode VIP): the ones a
    /// proxy programs.
    public var loadBalancerVIPs: [IPAddress] {
        loadBalancerIngressIPs.indices.filter { loadBalancerIngressIPMode($0) == .vip }.map { loadBalancerIngressIPs[$0] }
    }
}

/// How a load balancer delivers traffic for an ingress IP (`status.loadBalancer.ingress[].ipMode`).
public enum LoadBalancerIPMode: String, Hashable, Sendable, Codable, CaseIterable {
    /// Addressed to the ingress IP: the node's proxy translates it.
    case vip = "VIP"
    /// Addressed to the node (the load balancer proxies it): nothing for the proxy to do.
    case proxy = "Proxy"
}

public enum ServiceType: String, Hashable, Sendable, Codable, CaseIterable {
    case clusterIP = "ClusterIP"
    case nodePort = "NodePort"
    case loadBalancer = "LoadBalancer"
    case externalName = "ExternalName"
}

public enum IPFamilyPolicy: String, Hashable, Sendable, Codable, CaseIterable {
    case singleStack = "SingleStack"
    case preferDualStack = "PreferDualStack"
    case requireDualStack = "RequireDualStack"
}

public enum L4Protocol: String, Hashable, Sendable, Codable, CaseIterable, Comparable {
    case tcp = "TCP"
    case udp = "UDP"
    case sctp = "SCTP"

    public static func < (lhs: L4Protocol, rhs: L4Protocol) -> Bool { lhs.rawValue < rhs.rawValue }
}

public enum TrafficPolicy: String, Hashable, Sendable, Codable, CaseIterable {
    case cluster = "Cluster"
    case local = "Local"
}

public enum TrafficDistribution: String, Hashable, Sendable, Codable, CaseIterable {
    case preferClose = "PreferClose"
    case preferSameZone = "PreferSameZone"
    case preferSameNode = "PreferSameNode"
}

public enum SessionAffinity: Hashable, Sendable, Codable {
    case none
    case clientIP(timeoutSeconds: Int)

    /// Kubernetes' default ClientIP timeout (3 hours).
    public static let defaultTimeoutSeconds = 10800
    public static let timeoutRange = 1...86400
}

public enum TargetPort: Hashable, Sendable, Codable, CustomStringConvertible {
    case number(Int)
    case name(String)

    public var description: String {
        switch self {
        case .number(let number): String(number)
        case .name(let name): name
        }
    }
}

public struct ServicePort: Hashable, Sendable, Codable {
    public var name: String
    public var `protocol`: L4Protocol
    public var port: Int
    /// nil means "same as port".
    public var targetPort: TargetPort?
    /// Allocated for NodePort and LoadBalancer services; nil otherwise (or "allocate" on input).
    public var nodePort: Int?

    public init(name: String = "", protocol: L4Protocol = .tcp, port: Int, targetPort: TargetPort? = nil, nodePort: Int? = nil) {
        self.name = name
        self.protocol = `protocol`
        self.port = port
        self.targetPort = targetPort
        self.nodePort = nodePort
    }
}
