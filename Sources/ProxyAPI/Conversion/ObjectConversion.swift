import ProxyModel

// Model ⇄ wire conversion. Decoding from the wire parses text fields strictly and reports
// every problem with its Kubernetes field path; semantic rules live in ProxyModel's validators.

public typealias WireObject = Kubeproxy_V1_Object
public typealias WireService = Kubeproxy_V1_Service
public typealias WireEndpointSlice = Kubeproxy_V1_EndpointSlice
public typealias WireNode = Kubeproxy_V1_Node

extension L4Protocol {
    init?(wire: Kubeproxy_V1_Protocol) {
        switch wire {
        case .unspecified, .tcp: self = .tcp
        case .udp: self = .udp
        case .sctp: self = .sctp
        case .UNRECOGNIZED: return nil
        }
    }

    var wire: Kubeproxy_V1_Protocol {
        switch self {
        case .tcp: .tcp
        case .udp: .udp
        case .sctp: .sctp
        }
    }
}

extension Violations {
    mutating func l4Protocol(_ wire: Kubeproxy_V1_Protocol, _ field: @autoclosure () -> String) -> L4Protocol {
        guard let value = L4Protocol(wire: wire) else {
            add(field(), "unsupported protocol \(wire.rawValue): must be one of TCP, UDP, SCTP")
            return .tcp
        }
        return value
    }

    mutating func wirePort(_ value: UInt32, _ field: @autoclosure () -> String) -> Int {
        let port = Int(value)
        self.port(port, field())
        return port
    }
}

extension ObjectKind {
    public init?(wire: Kubeproxy_V1_Kind) {
        switch wire {
        case .service: self = .service
        case .endpointSlice: self = .endpointSlice
        case .node: self = .node
        case .unspecified, .UNRECOGNIZED: return nil
        }
    }

    public var wire: Kubeproxy_V1_Kind {
        switch self {
        case .service: .service
        case .endpointSlice: .endpointSlice
        case .node: .node
        }
    }
}

extension ObjectMeta {
    init(wire: Kubeproxy_V1_ObjectMeta) {
        self.init(namespace: wire.namespace, name: wire.name, labels: wire.labels, revision: Revision(wire.revision))
    }

    var wire: Kubeproxy_V1_ObjectMeta {
        .with {
            $0.namespace = namespace
            $0.name = name
            $0.labels = labels
            $0.revision = revision.rawValue
        }
    }
}

extension Service {
    public init(wire: WireService) throws(ValidationError) {
        var v = Violations()
        let type = v.choice(wire.type, "spec.type", empty: ServiceType.clusterIP) ?? .clusterIP
        let headless = wire.clusterIps == ["None"]
        let clusterIPs = headless ? [] : v.ips(wire.clusterIps, "spec.clusterIPs")
        let families: [IPFamily] = wire.ipFamilies.enumerated().compactMap { index, text in
            v.choice(text, "spec.ipFamilies[\(index)]", empty: nil)
        }
        let ports = wire.ports.enumerated().map { index, port in
            func field(_ name: String) -> String { "spec.ports[\(index)].\(name)" }
            let target: TargetPort? =
                switch port.targetPort {
                case .targetPortNumber(let number): .number(v.wirePort(number, field("targetPort")))
                case .targetPortName(let name): .name(name)
                case nil: nil
                }
            return ServicePort(
                name: port.name, protocol: v.l4Protocol(port.protocol, field("protocol")),
                port: v.wirePort(port.port, field("port")), targetPort: target,
                nodePort: port.nodePort == 0 ? nil : Int(port.nodePort))
        }
        var affinity = SessionAffinity.none
        if v.choice(wire.sessionAffinity, "spec.sessionAffinity", empty: SessionAffinityKind.none) == .clientIP {
            let timeout = wire.sessionAffinityTimeoutSeconds
            affinity = .clientIP(timeoutSeconds: timeout == 0 ? SessionAffinity.defaultTimeoutSeconds : Int(timeout))
        }
        self.init(
            metadata: ObjectMeta(wire: wire.metadata),
            type: type,
            clusterIPs: clusterIPs,
            headless: headless,
            ipFamilies: families,
            ipFamilyPolicy: v.choice(wire.ipFamilyPolicy, "spec.ipFamilyPolicy", empty: .singleStack) ?? .singleStack,
            ports: ports,
            sessionAffinity: affinity,
            externalTrafficPolicy: v.choice(wire.externalTrafficPolicy, "spec.externalTrafficPolicy", empty: .cluster) ?? .cluster,
            internalTrafficPolicy: v.choice(wire.internalTrafficPolicy, "spec.internalTrafficPolicy", empty: .cluster) ?? .cluster,
            externalIPs: v.ips(wire.externalIps, "spec.externalIPs"),
            loadBalancerSourceRanges: wire.loadBalancerSourceRanges.enumerated().compactMap {
                v.cidr($1, "spec.loadBalancerSourceRanges[\($0)]")
            },
            loadBalancerIngressIPs: wire.loadBalancerIngressIps.enumerated().compactMap {
                v.ip($1, "status.loadBalancer.ingress[\($0)].ip")
            },
            loadBalancerIngressIPModes: Self.ipModes(wire.loadBalancerIngressIpModes, ips: wire.loadBalancerIngressIps.count, &v),
            healthCheckNodePort: wire.healthCheckNodePort == 0 ? nil : Int(wire.healthCheckNodePort),
            trafficDistribution: wire.trafficDistribution.isEmpty
                ? nil : v.choice(wire.trafficDistribution, "spec.trafficDistribution", empty: nil),
            externalName: wire.externalName.isEmpty ? nil : wire.externalName
        )
        try v.check()
    }

    public var wire: WireService {
        .with {
            $0.metadata = metadata.wire
            $0.type = type.rawValue
            $0.clusterIps = headless ? ["None"] : clusterIPs.map(\.description)
            $0.ipFamilies = ipFamilies.map(\.rawValue)
            $0.ipFamilyPolicy = ipFamilyPolicy.rawValue
            $0.ports = ports.map { port in
                .with {
                    $0.name = port.name
                    $0.protocol = port.protocol.wire
                    $0.port = UInt32(port.port)
                    switch port.targetPort {
                    case .number(let number): $0.targetPortNumber = UInt32(number)
                    case .name(let name): $0.targetPortName = name
                    case nil: break
                    }
                    $0.nodePort = UInt32(port.nodePort ?? 0)
                }
            }
            switch sessionAffinity {
            case .none:
                $0.sessionAffinity = SessionAffinityKind.none.rawValue
            case .clientIP(let timeout):
                $0.sessionAffinity = SessionAffinityKind.clientIP.rawValue
                $0.sessionAffinityTimeoutSeconds = UInt32(timeout)
            }
            $0.externalTrafficPolicy = externalTrafficPolicy.rawValue
            $0.internalTrafficPolicy = internalTrafficPolicy.rawValue
            $0.externalIps = externalIPs.map(\.description)
            $0.loadBalancerSourceRanges = loadBalancerSourceRanges.map(\.description)
            $0.loadBalancerIngressIps = loadBalancerIngressIPs.map(\.description)
            $0.loadBalancerIngressIpModes = loadBalancerIngressIPModes?.map(\.rawValue) ?? []
            $0.healthCheckNodePort = UInt32(healthCheckNodePort ?? 0)
            $0.trafficDistribution = trafficDistribution?.rawValue ?? ""
            $0.externalName = externalName ?? ""
        }
    }

    /// The model's ipModes of the wire's `ipModes` for `ips` ingress IPs: nil when there are none,
    /// or one each ("" is VIP) and all VIP. Validation checks the count.
    private static func ipModes(_ ipModes: [String], ips: Int, _ v: inout Violations) -> [LoadBalancerIPMode]? {
        let modes = ipModes.enumerated().map { v.choice($1, "status.loadBalancer.ingress[\($0)].ipMode", empty: LoadBalancerIPMode.vip) ?? .vip }
        return modes.isEmpty || (modes.count == ips && modes.allSatisfy { $0 == .vip }) ? nil : modes
    }
}

/// The spellings of `spec.sessionAffinity`.
enum SessionAffinityKind: String, CaseIterable {
    case none = "None"
    case clientIP = "ClientIP"
}

extension EndpointSlice {
    public init(wire: WireEndpointSlice) throws(ValidationError) {
        var v = Violations()
        let addressType: IPFamily = v.choice(wire.addressType, "addressType", empty: nil) ?? .ipv4
        let ports = wire.ports.enumerated().map { index, port in
            EndpointPort(
                name: port.name, protocol: v.l4Protocol(port.protocol, "ports[\(index)].protocol"),
                port: v.wirePort(port.port, "ports[\(index)].port"))
        }
        let endpoints = wire.endpoints.enumerated().map { index, endpoint in
            let conditions = endpoint.conditions
            return Endpoint(
                addresses: v.ips(endpoint.addresses, "endpoints[\(index)].addresses"),
                conditions: EndpointConditions(
                    ready: conditions.hasReady ? conditions.ready : true,
                    serving: conditions.hasServing ? conditions.serving : nil,
                    terminating: conditions.hasTerminating && conditions.terminating),
                nodeName: endpoint.nodeName.isEmpty ? nil : endpoint.nodeName,
                zone: endpoint.zone.isEmpty ? nil : endpoint.zone,
                hintZones: endpoint.hintZones,
                hintNodes: endpoint.hintNodes)
        }
        self.init(
            metadata: ObjectMeta(wire: wire.metadata), serviceName: wire.serviceName, addressType: addressType,
            ports: ports, endpoints: endpoints)
        try v.check()
    }

    public var wire: WireEndpointSlice {
        .with {
            $0.metadata = metadata.wire
            $0.serviceName = serviceName
            $0.addressType = addressType.rawValue
            $0.ports = ports.map { port in
                .with {
                    $0.name = port.name
                    $0.protocol = port.protocol.wire
                    $0.port = UInt32(port.port)
                }
            }
            $0.endpoints = endpoints.map { endpoint in
                .with {
                    $0.addresses = endpoint.addresses.map(\.description)
                    $0.conditions = .with {
                        $0.ready = endpoint.conditions.ready
                        $0.serving = endpoint.conditions.serving
                        $0.terminating = endpoint.conditions.terminating
                    }
                    $0.nodeName = endpoint.nodeName ?? ""
                    $0.zone = endpoint.zone ?? ""
                    $0.hintZones = endpoint.hintZones
                    $0.hintNodes = endpoint.hintNodes
                }
            }
        }
    }
}

extension Node {
    public init(wire: WireNode) throws(ValidationError) {
        var v = Violations()
        let addresses = v.ips(wire.addresses, "addresses")
        self.init(metadata: ObjectMeta(wire: wire.metadata), addresses: addresses, zone: wire.zone.isEmpty ? nil : wire.zone)
        try v.check()
    }

    public var wire: WireNode {
        .with {
            $0.metadata = metadata.wire
            $0.addresses = addresses.map(\.description)
            $0.zone = zone ?? ""
        }
    }
}

extension ProxyObject {
    public init(wire: WireObject) throws(ValidationError) {
        switch wire.kind {
        case .service(let service): self = .service(try Service(wire: service))
        case .endpointSlice(let slice): self = .endpointSlice(try EndpointSlice(wire: slice))
        case .node(let node): self = .node(try Node(wire: node))
        case nil: throw ValidationError(field: "object", message: "required: one of service, endpointSlice, node")
        }
    }

    public var wire: WireObject {
        .with {
            switch self {
            case .service(let service): $0.service = service.wire
            case .endpointSlice(let slice): $0.endpointSlice = slice.wire
            case .node(let node): $0.node = node.wire
            }
        }
    }
}

extension ObjectKey {
    public init(wire: Kubeproxy_V1_ObjectRef) throws(ValidationError) {
        guard let kind = ObjectKind(wire: wire.kind) else {
            throw ValidationError(field: "ref.kind", message: "required: one of SERVICE, ENDPOINT_SLICE, NODE")
        }
        if wire.name.isEmpty { throw ValidationError(field: "ref.name", message: "required") }
        self.init(kind: kind, namespace: wire.namespace, name: wire.name)
    }

    public var wire: Kubeproxy_V1_ObjectRef {
        .with {
            $0.kind = kind.wire
            $0.namespace = namespace
            $0.name = name
        }
    }
}

extension NodeStatus {
    public var wire: Kubeproxy_V1_NodeStatus {
        .with {
            $0.name = name
            $0.addresses = addresses.map(\.description)
            $0.zone = zone ?? ""
            $0.connected = connected
            $0.desiredRevision = desiredRevision.rawValue
            $0.appliedRevision = appliedRevision.rawValue
            $0.lastError = lastError ?? ""
            $0.lastErrorRevision = lastErrorRevision?.rawValue ?? 0
            $0.lastSeenUnixNanos = lastSeenUnixNanos
        }
    }

    public init(wire: Kubeproxy_V1_NodeStatus) {
        self.init(
            name: wire.name, addresses: wire.addresses.compactMap(IPAddress.init), zone: wire.zone.isEmpty ? nil : wire.zone,
            connected: wire.connected, desiredRevision: Revision(wire.desiredRevision),
            appliedRevision: Revision(wire.appliedRevision), lastError: wire.lastError.isEmpty ? nil : wire.lastError,
            lastErrorRevision: wire.lastErrorRevision == 0 ? nil : Revision(wire.lastErrorRevision),
            lastSeenUnixNanos: wire.lastSeenUnixNanos)
    }
}
