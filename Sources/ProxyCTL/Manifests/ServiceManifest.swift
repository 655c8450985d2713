import ProxyAPI
import ProxyModel

/// `v1 Service` manifests.
enum ServiceManifest {
    static let specFields: Set<String> = [
        "type", "clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "ports", "sessionAffinity", "sessionAffinityConfig",
        "externalTrafficPolicy", "internalTrafficPolicy", "externalIPs", "loadBalancerSourceRanges", "healthCheckNodePort",
        "trafficDistribution", "externalName",
    ]
    /// Spec fields that steer other controllers, not the proxy.
    static let ignoredSpecFields: Set<String> = [
        "selector", "publishNotReadyAddresses", "allocateLoadBalancerNodePorts", "loadBalancerClass", "loadBalancerIP",
        "topologyKeys",
    ]

    static func decode(_ map: [String: Any], defaultNamespace: String, reader: inout ManifestReader) -> WireService {
        reader.onlyKnown(map, "", known: ["apiVersion", "kind", "metadata", "spec", "status"])
        var service = WireService()
        service.metadata = Manifests.metadata(map, defaultNamespace: defaultNamespace, reader: &reader)
        let spec = reader.map(map["spec"], "spec") ?? [:]
        reader.onlyKnown(spec, "spec", known: specFields, ignored: ignoredSpecFields)
        service.type = reader.string(spec["type"], "spec.type") ?? ""
        let clusterIPs = reader.strings(spec["clusterIPs"], "spec.clusterIPs")
        if !clusterIPs.isEmpty {
            service.clusterIps = clusterIPs
        } else if let clusterIP = reader.string(spec["clusterIP"], "spec.clusterIP"), !clusterIP.isEmpty {
            service.clusterIps = [clusterIP]
        }
        service.ipFamilies = reader.strings(spec["ipFamilies"], "spec.ipFamilies")
        service.ipFamilyPolicy = reader.string(spec["ipFamilyPolicy"], "spec.ipFamilyPolicy") ?? ""
        service.ports = reader.list(spec["ports"], "spec.ports").enumerated().compactMap { index, value in
            port(value, "spec.ports[\(index)]", reader: &reader)
        }
        service.sessionAffinity = reader.string(spec["sessionAffinity"], "spec.sessionAffinity") ?? ""
        if let config = reader.map(spec["sessionAffinityConfig"], "spec.sessionAffinityConfig"),
            let clientIP = reader.map(config["clientIP"], "spec.sessionAffinityConfig.clientIP"),
            let timeout = reader.int(clientIP["timeoutSeconds"], "spec.sessionAffinityConfig.clientIP.timeoutSeconds")
        {
            if (1...86400).contains(timeout) {
                service.sessionAffinityTimeoutSeconds = UInt32(timeout)
            } else {
                reader.violations.add("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "must be between 1 and 86400, got \(timeout)")
            }
        }
        service.externalTrafficPolicy = reader.string(spec["externalTrafficPolicy"], "spec.externalTrafficPolicy") ?? ""
        service.internalTrafficPolicy = reader.string(spec["internalTrafficPolicy"], "spec.internalTrafficPolicy") ?? ""
        service.externalIps = reader.strings(spec["externalIPs"], "spec.externalIPs")
        service.loadBalancerSourceRanges = reader.strings(spec["loadBalancerSourceRanges"], "spec.loadBalancerSourceRanges")
        service.healthCheckNodePort = reader.port(spec["healthCheckNodePort"], "spec.healthCheckNodePort") ?? 0
        service.trafficDistribution = reader.string(spec["trafficDistribution"], "spec.trafficDistribution") ?? ""
        service.externalName = reader.string(spec["externalName"], "spec.externalName") ?? ""
        if let status = reader.map(map["status"], "status"), let balancer = reader.map(status["loadBalancer"], "status.loadBalancer") {
            var modes: [String] = []
            for (index, ingress) in reader.list(balancer["ingress"], "status.loadBalancer.ingress").enumerated() {
                if let ingress = reader.map(ingress, "status.loadBalancer.ingress[\(index)]"),
                    let ip = reader.string(ingress["ip"], "status.loadBalancer.ingress[\(index)].ip")
                {
                    service.loadBalancerIngressIps.append(ip)
                    modes.append(reader.string(ingress["ipMode"], "status.loadBalancer.ingress[\(index)].ipMode") ?? "")
                }
            }
            if modes.contains(where: { !$0.isEmpty }) { service.loadBalancerIngressIpModes = modes }
        }
        return service
    }

    private static func port(_ value: Any, _ path: String, reader: inout ManifestReader) -> Kubeproxy_V1_ServicePort? {
        guard let map = reader.map(value, path) else { return nil }
        reader.onlyKnown(map, path, known: ["name", "protocol", "port", "targetPort", "nodePort"], ignored: ["appProtocol"])
        var port = Kubeproxy_V1_ServicePort()
        port.name = reader.string(map["name"], "\(path).name") ?? ""
        port.protocol = Manifests.l4Protocol(map["protocol"], "\(path).protocol", reader: &reader)
        if let number = reader.port(map["port"], "\(path).port") {
            port.port = number
        } else if map["port"] == nil {
            reader.violations.add("\(path).port", "required")
        }
        switch map["targetPort"] {
        case let name as String:
            if let number = UInt32(name) { port.targetPortNumber = number } else { port.targetPortName = name }
        case .some(let value):
            if let number = reader.port(value, "\(path).targetPort") { port.targetPortNumber = number }
        case nil:
            break
        }
        port.nodePort = reader.port(map["nodePort"], "\(path).nodePort") ?? 0
        return port
    }
}
