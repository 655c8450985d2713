/// Cluster-wide settings that some rules depend on.
public struct ValidationContext: Sendable, Hashable {
    /// CIDRs ClusterIPs are allocated from; at most one per family, the first is the default family.
    public var serviceCIDRs: [CIDR]
    /// The NodePort range (Kubernetes' default 30000–32767).
    public var nodePortRange: ClosedRange<Int>

    public static let defaultServiceCIDRs = [CIDR("10.96.0.0/12")!, CIDR("fd00:10:96::/112")!]
    public static let defaultNodePortRange = 30000...32767

    public init(serviceCIDRs: [CIDR] = Self.defaultServiceCIDRs, nodePortRange: ClosedRange<Int> = Self.defaultNodePortRange) {
        self.serviceCIDRs = serviceCIDRs
        self.nodePortRange = nodePortRange
    }

    public func serviceCIDR(for family: IPFamily) -> CIDR? {
        serviceCIDRs.first { $0.family == family }
    }
}

extension Violations {
    mutating func metadata(_ meta: ObjectMeta, namespaced: Bool, nameRule: (String) -> String?) {
        if namespaced {
            dnsLabel(meta.namespace, "metadata.namespace")
        } else if !meta.namespace.isEmpty {
            add("metadata.namespace", "must be empty: the object is not namespaced")
        }
        if let problem = nameRule(meta.name) { add("metadata.name", problem) }
        labels(meta.labels, "metadata.labels")
    }

    /// Rejects addresses that can never be a destination for proxied traffic.
    mutating func routableAddress(_ address: IPAddress, _ field: @autoclosure () -> String) {
        if address.isUnspecified {
            add(field(), "may not be unspecified (\(address))")
        } else if address.isLoopback {
            add(field(), "may not be in the loopback range (\(address))")
        } else if address.isLinkLocal {
            add(field(), "may not be in the link-local range (\(address))")
        } else if address.isMulticast {
            add(field(), "may not be a multicast address (\(address))")
        }
    }
}

extension Service {
    /// Kubernetes Service names are DNS-1035 labels: like a DNS-1123 label but starting with a letter.
    static func nameProblem(_ name: String) -> String? {
        if let problem = Names.dnsLabelProblem(name) { return problem }
        if let first = name.first, !first.isLetter {
            return "a DNS-1035 label must start with an alphabetic character, got \"\(name)\""
        }
        return nil
    }

    /// Checks every rule; the error lists each broken one with its field path.
    public func validate(in context: ValidationContext = .init()) throws(ValidationError) {
        var v = Violations()
        v.metadata(metadata, namespaced: true, nameRule: Self.nameProblem)

        if type == .externalName {
            if let externalName, !externalName.isEmpty {
                v.dnsSubdomain(externalName.hasSuffix(".") ? String(externalName.dropLast()) : externalName, "spec.externalName")
            } else {
                v.add("spec.externalName", "required when type is ExternalName")
            }
            if !clusterIPs.isEmpty || headless { v.add("spec.clusterIPs", "must be empty when type is ExternalName") }
        } else if let externalName, !externalName.isEmpty {
            v.add("spec.externalName", "may only be set when type is ExternalName")
        }
        if headless && type != .clusterIP { v.add("spec.clusterIPs", "may be None only when type is ClusterIP") }
        if ports.isEmpty && !headless && type != .externalName { v.add("spec.ports", "required: at least one port") }

        validatePorts(&v, context)
        validateFamilies(&v, context)

        if case .clientIP(let timeout) = sessionAffinity, !SessionAffinity.timeoutRange.contains(timeout) {
            v.add("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "must be between 1 and 86400, got \(timeout)")
        }
        for (index, address) in externalIPs.enumerated() {
            v.routableAddress(address, "spec.externalIPs[\(index)]")
        }
        if Set(externalIPs).count != externalIPs.count { v.add("spec.externalIPs", "must not contain duplicates") }
        for (index, address) in loadBalancerIngressIPs.enumerated() {
            v.routableAddress(address, "status.loadBalancer.ingress[\(index)].ip")
        }
        if let modes = loadBalancerIngressIPModes, modes.count != loadBalancerIngressIPs.count {
            v.add("status.loadBalancer.ingress", "has \(modes.count) ipModes for \(loadBalancerIngressIPs.count) IPs: one each, or none (all VIP)")
        }
        if externalTrafficPolicy == .local && !usesNodePorts && externalIPs.isEmpty {
            v.add("spec.externalTrafficPolicy", "may be Local only for NodePort or LoadBalancer services or with externalIPs")
        }
        if let healthCheckNodePort {
            if !needsHealthCheckNodePort {
                v.add("spec.healthCheckNodePort", "may be set only when type is LoadBalancer and externalTrafficPolicy is Local")
            } else if !context.nodePortRange.contains(healthCheckNodePort) {
                v.add("spec.healthCheckNodePort", "must be in the node port range \(context.nodePortRange.lowerBound)-\(context.nodePortRange.upperBound), got \(healthCheckNodePort)")
            } else if ports.contains(where: { $0.nodePort == healthCheckNodePort }) {
                v.add("spec.healthCheckNodePort", "must differ from every port's nodePort")
            }
        }
        try v.check()
    }

    private func validatePorts(_ v: inout Violations, _ context: ValidationContext) {
        var names = Set<String>()
        var pairs = Set<String>()
        var nodePorts = Set<String>()
        for (index, port) in ports.enumerated() {
            let field = "spec.ports[\(index)]"
            if port.name.isEmpty {
                if ports.count > 1 { v.add("\(field).name", "required when the service has more than one port") }
            } else {
                v.dnsLabel(port.name, "\(field).name")
                if !names.insert(port.name).inserted { v.add("\(field).name", "duplicate port name \"\(port.name)\"") }
            }
            v.port(port.port, "\(field).port")
            if !pairs.insert("\(port.port)/\(port.protocol.rawValue)").inserted {
                v.add(field, "duplicate port \(port.port)/\(port.protocol.rawValue)")
            }
            switch port.targetPort {
            case .number(let number): v.port(number, "\(field).targetPort")
            case .name(let name):
                if let problem = Names.ianaServiceNameProblem(name) { v.add("\(field).targetPort", problem) }
            case nil: break
            }
            if let nodePort = port.nodePort {
                if !usesNodePorts {
                    v.add("\(field).nodePort", "may not be set when type is \(type.rawValue)")
                } else if !context.nodePortRange.contains(nodePort) {
                    v.add("\(field).nodePort", "must be in the node port range \(context.nodePortRange.lowerBound)-\(context.nodePortRange.upperBound), got \(nodePort)")
                } else if !nodePorts.insert("\(nodePort)/\(port.protocol.rawValue)").inserted {
                    v.add("\(field).nodePort", "duplicate nodePort \(nodePort)/\(port.protocol.rawValue)")
                }
            }
        }
    }

    private func validateFamilies(_ v: inout Violations, _ context: ValidationContext) {
        if ipFamilies.count > 2 { v.add("spec.ipFamilies", "may hold at most two families") }
        if Set(ipFamilies).count != ipFamilies.count { v.add("spec.ipFamilies", "must not contain duplicates") }
        if ipFamilyPolicy == .singleStack && ipFamilies.count > 1 {
            v.add("spec.ipFamilies", "may hold only one family when ipFamilyPolicy is SingleStack")
        }
        for (index, family) in ipFamilies.enumerated() where context.serviceCIDR(for: family) == nil && type != .externalName {
            v.add("spec.ipFamilies[\(index)]", "\(family.rawValue) is not configured on this cluster (no service CIDR)")
        }
        if ipFamilyPolicy == .requireDualStack && Set(context.serviceCIDRs.map(\.family)).count < 2 {
            v.add("spec.ipFamilyPolicy", "RequireDualStack needs service CIDRs of both families")
        }
        if clusterIPs.count > 2 { v.add("spec.clusterIPs", "may hold at most two addresses") }
        if clusterIPs.count == 2 {
            if clusterIPs[0].family == clusterIPs[1].family {
                v.add("spec.clusterIPs", "must hold one address per family")
            }
            if ipFamilyPolicy == .singleStack {
                v.add("spec.clusterIPs", "may hold only one address when ipFamilyPolicy is SingleStack")
            }
        }
        for (index, address) in clusterIPs.enumerated() {
            let field = "spec.clusterIPs[\(index)]"
            if index < ipFamilies.count, ipFamilies[index] != address.family {
                v.add(field, "\(address) is \(address.family.rawValue) but spec.ipFamilies[\(index)] is \(ipFamilies[index].rawValue)")
            } else if let cidr = context.serviceCIDR(for: address.family) {
                if !cidr.contains(address) {
                    v.add(field, "\(address) is not in the service CIDR \(cidr)")
                } else if address == cidr.network {
                    v.add(field, "\(address) is the network address of \(cidr)")
                }
            } else {
                v.add(field, "\(address.family.rawValue) is not configured on this cluster (no service CIDR)")
            }
        }
    }
}

extension EndpointSlice {
    public static let maxAddressesPerEndpoint = 100

    public func validate() throws(ValidationError) {
        var v = Violations()
        v.metadata(metadata, namespaced: true, nameRule: Names.dnsSubdomainProblem)
        if let problem = Service.nameProblem(serviceName) {
            v.add("metadata.labels[kubernetes.io/service-name]", problem)
        }
        var names = Set<String>()
        for (index, port) in ports.enumerated() {
            let field = "ports[\(index)]"
            if !port.name.isEmpty { v.dnsLabel(port.name, "\(field).name") }
            if !names.insert(port.name).inserted { v.add("\(field).name", "duplicate port name \"\(port.name)\"") }
            v.port(port.port, "\(field).port")
        }
        if endpoints.count > Self.maxEndpoints {
            v.add("endpoints", "must have at most \(Self.maxEndpoints) items, got \(endpoints.count)")
        }
        for (index, endpoint) in endpoints.enumerated() {
            func field(_ path: String) -> String { "endpoints[\(index)].\(path)" }
            if endpoint.addresses.isEmpty {
                v.add(field("addresses"), "required: at least one address")
            } else if endpoint.addresses.count > Self.maxAddressesPerEndpoint {
                v.add(field("addresses"), "must have at most \(Self.maxAddressesPerEndpoint) items")
            }
            for (addressIndex, address) in endpoint.addresses.enumerated() {
                if address.family != addressType {
                    v.add(
                        field("addresses[\(addressIndex)]"),
                        "\(address) is not an \(addressType.rawValue) address (addressType is \(addressType.rawValue))")
                } else {
                    v.routableAddress(address, field("addresses[\(addressIndex)]"))
                }
            }
            if let nodeName = endpoint.nodeName { v.dnsSubdomain(nodeName, field("nodeName")) }
            if let zone = endpoint.zone, let problem = Names.labelValueProblem(zone) { v.add(field("zone"), problem) }
            for (hintIndex, zone) in endpoint.hintZones.enumerated() where zone.isEmpty {
                v.add(field("hints.forZones[\(hintIndex)].name"), "must not be empty")
            }
            for (hintIndex, node) in endpoint.hintNodes.enumerated() {
                v.dnsSubdomain(node, field("hints.forNodes[\(hintIndex)].name"))
            }
        }
        try v.check()
    }
}

extension Node {
    public func validate() throws(ValidationError) {
        var v = Violations()
        v.metadata(metadata, namespaced: false, nameRule: Names.dnsSubdomainProblem)
        for (index, address) in addresses.enumerated() where address.isUnspecified || address.isMulticast {
            v.add("addresses[\(index)]", "\(address) cannot be a node address")
        }
        if let zone, let problem = Names.labelValueProblem(zone) { v.add("zone", problem) }
        try v.check()
    }
}

extension ProxyObject {
    public func validate(in context: ValidationContext = .init()) throws(ValidationError) {
        switch self {
        case .service(let service): try service.validate(in: context)
        case .endpointSlice(let slice): try slice.validate()
        case .node(let node): try node.validate()
        }
    }
}
