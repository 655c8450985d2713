/// A Kubernetes EndpointSlice (discovery.k8s.io/v1).
public struct EndpointSlice: Hashable, Sendable, Codable {
    public var metadata: ObjectMeta
    /// The owning service (`kubernetes.io/service-name` label), in the slice's namespace.
    public var serviceName: String
    public var addressType: IPFamily
    public var ports: [EndpointPort]
    public var endpoints: [Endpoint]

    /// Kubernetes' limit on endpoints per slice.
    public static let maxEndpoints = 1000

    public init(metadata: ObjectMeta, serviceName: String, addressType: IPFamily, ports: [EndpointPort] = [], endpoints: [Endpoint] = []) {
        self.metadata = metadata
        self.serviceName = serviceName
        self.addressType = addressType
        self.ports = ports
        self.endpoints = endpoints
    }
}

public struct EndpointPort: Hashable, Sendable, Codable {
    public var name: String
    public var `protocol`: L4Protocol
    public var port: Int

    public init(name: String = "", protocol: L4Protocol = .tcp, port: Int) {
        self.name = name
        self.protocol = `protocol`
        self.port = port
    }
}

/// Endpoint conditions with Kubernetes' defaults applied: an unset `ready` means ready,
/// an unset `serving` means serving, an unset `terminating` means not terminating
/// (as kube-proxy reads them).
public struct EndpointConditions: Hashable, Sendable, Codable {
    public var ready: Bool
    public var serving: Bool
    public var terminating: Bool

    public init(ready: Bool = true, serving: Bool? = nil, terminating: Bool = false) {
        self.ready = ready
        self.serving = serving ?? true
        self.terminating = terminating
    }
}

public struct Endpoint: Hashable, Sendable, Codable {
    public var addresses: [IPAddress]
    public var conditions: EndpointConditions
    public var nodeName: String?
    public var zone: String?
    public var hintZones: [String]
    public var hintNodes: [String]

    public init(
        addresses: [IPAddress], conditions: EndpointConditions = .init(), nodeName: String? = nil, zone: String? = nil,
        hintZones: [String] = [], hintNodes: [String] = []
    ) {
        self.addresses = addresses
        self.conditions = conditions
        self.nodeName = nodeName
        self.zone = zone
        self.hintZones = hintZones
        self.hintNodes = hintNodes
    }
}
