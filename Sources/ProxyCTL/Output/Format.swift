import Foundation
import ProxyModel
import Yams

/// Everything proxyctl prints: tables, names, and Kubernetes-shaped JSON/YAML that
/// `proxyctl apply -f` (or kubectl) accepts back.
enum Format {
    /// kubectl's `kind/name` spelling.
    static func resourceName(_ key: ObjectKey) -> String {
        switch key.kind {
        case .service: "service/\(key.name)"
        case .endpointSlice: "endpointslice.discovery.k8s.io/\(key.name)"
        case .node: "node/\(key.name)"
        }
    }

    static func objects(_ objects: [ProxyObject], format: OutputFormat, showNamespace: Bool) -> String {
        switch format {
        case .name:
            return objects.map { resourceName($0.key) + "\n" }.joined()
        case .json, .yaml:
            return document(objects.map(manifest), format: format)
        case .table, .wide:
            let wide = format == .wide
            let rows: [[String]]
            let header: [String]
            if case .service = objects.first {
                header = ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"] + (wide ? ["IP-FAMILIES", "AFFINITY", "POLICY"] : []) + ["REVISION"]
                rows = objects.compactMap { object in
                    guard case .service(let service) = object else { return nil }
                    return serviceRow(service, wide: wide)
                }
            } else {
                header = ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS"] + (wide ? ["SERVICE", "READY"] : []) + ["REVISION"]
                rows = objects.compactMap { object in
                    guard case .endpointSlice(let slice) = object else { return nil }
                    return sliceRow(slice, wide: wide)
                }
            }
            let names = objects.map(\.metadata.namespace)
            return table(
                showNamespace ? ["NAMESPACE"] + header : header,
                showNamespace ? zip(names, rows).map { [$0] + $1 } : rows)
        }
    }

    private static func serviceRow(_ service: Service, wide: Bool) -> [String] {
        let clusterIP = service.headless ? "None" : service.clusterIPs.map(\.description).joined(separator: ",")
        var external = (service.loadBalancerIngressIPs + service.externalIPs).map(\.description).joined(separator: ",")
        if external.isEmpty {
            external = service.type == .loadBalancer ? "<pending>" : service.externalName ?? "<none>"
        }
        let ports = service.ports.map { port in
            "\(port.port)\(port.nodePort.map { ":\($0)" } ?? "")/\(port.protocol.rawValue)"
        }.joined(separator: ",")
        var row = [service.metadata.name, service.type.rawValue, clusterIP.isEmpty ? "<none>" : clusterIP, external, ports.isEmpty ? "<none>" : ports]
        if wide {
            let affinity: String
            if case .clientIP(let timeout) = service.sessionAffinity { affinity = "ClientIP(\(timeout)s)" } else { affinity = "None" }
            row += [
                service.ipFamilies.map(\.rawValue).joined(separator: ","), affinity,
                "ext=\(service.externalTrafficPolicy.rawValue),int=\(service.internalTrafficPolicy.rawValue)",
            ]
        }
        return row + [service.metadata.revision.description]
    }

    private static func sliceRow(_ slice: EndpointSlice, wide: Bool) -> [String] {
        let ports = slice.ports.map { String($0.port) }.joined(separator: ",")
        let addresses = slice.endpoints.flatMap(\.addresses).map(\.description)
        var endpoints = addresses.prefix(3).joined(separator: ",")
        if addresses.count > 3 { endpoints += " + \(addresses.count - 3) more..." }
        var row = [slice.metadata.name, slice.addressType.rawValue, ports.isEmpty ? "<unset>" : ports, endpoints.isEmpty ? "<unset>" : endpoints]
        if wide {
            row += [slice.serviceName, "\(slice.endpoints.filter(\.conditions.ready).count)/\(slice.endpoints.count)"]
        }
        return row + [slice.metadata.revision.description]
    }

    static func nodes(_ nodes: [NodeStatus], published: Revision, format: OutputFormat) -> String {
        switch format {
        case .name:
            return nodes.map { "node/\($0.name)\n" }.joined()
        case .json, .yaml:
            return document(nodes.map { nodeManifest($0, published: published) }, format: format)
        case .table, .wide:
            let now = WallClock.nowUnixNanos()
            let header = ["NAME", "CONNECTED", "APPLIED", "HEAD", "LAG", "LAST-SEEN", "ERROR"] + (format == .wide ? ["ADDRESSES", "ZONE"] : [])
            let rows = nodes.map { node -> [String] in
                let lag = published.rawValue > node.appliedRevision.rawValue ? published.rawValue - node.appliedRevision.rawValue : 0
                var row = [
                    node.name, node.connected ? "yes" : "no", node.appliedRevision.description, published.description, String(lag),
                    node.lastSeenUnixNanos == 0 ? "never" : age(nanoseconds: now - node.lastSeenUnixNanos) + " ago",
                    node.lastError.map { "rev \(node.lastErrorRevision?.description ?? "?"): \($0)" } ?? "<none>",
                ]
                if format == .wide { row += [node.addresses.map(\.description).joined(separator: ","), node.zone ?? "<none>"] }
                return row
            }
            return table(header, rows)
        }
    }

    static func age(nanoseconds: Int64) -> String {
        let seconds = max(0, nanoseconds / 1_000_000_000)
        if seconds < 120 { return "\(seconds)s" }
        if seconds < 7200 { return "\(seconds / 60)m" }
        if seconds < 172_800 { return "\(seconds / 3600)h" }
        return "\(seconds / 86400)d"
    }

    /// Left-aligned columns separated by three spaces, as kubectl prints them.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell.padding(toLength: widths[column] + 3, withPad: " ", startingAt: 0)
            }.joined()
        }.map { $0 + "\n" }.joined()
    }

    // MARK: Kubernetes-shaped documents

    static func document(_ items: [[String: Any]], format: OutputFormat) -> String {
        let root: Any = items.count == 1 ? items[0] : ["apiVersion": "v1", "kind": "List", "items": items]
        if format == .json {
            let data = (try? JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data()
            return String(decoding: data, as: UTF8.self) + "\n"
        }
        return (try? Yams.dump(object: root, sortKeys: true)) ?? ""
    }

    /// `status.loadBalancer.ingress`, with the ipMode of each (as an API server that knows it
    /// shows it: VIP when unset).
    private static func loadBalancerIngress(_ service: Service) -> [[String: Any]] {
        service.loadBalancerIngressIPs.enumerated().map { ["ip": $1.description, "ipMode": service.loadBalancerIngressIPMode($0).rawValue] }
    }

    static func manifest(_ object: ProxyObject) -> [String: Any] {
        var metadata: [String: Any] = [
            "name": object.metadata.name, "namespace": object.metadata.namespace,
            "resourceVersion": object.metadata.revision.description,
        ]
        if !object.metadata.labels.isEmpty { metadata["labels"] = object.metadata.labels }
        switch object {
        case .service(let service):
            return ["apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": serviceSpec(service)]
                .merging(service.loadBalancerIngressIPs.isEmpty
                    ? [:] : ["status": ["loadBalancer": ["ingress": loadBalancerIngress(service)]]]) { $1 }
        case .endpointSlice(let slice):
            var labels = slice.metadata.labels
            labels["kubernetes.io/service-name"] = slice.serviceName
            metadata["labels"] = labels
            return [
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": metadata,
                "addressType": slice.addressType.rawValue,
                "ports": slice.ports.map { port -> [String: Any] in
                    var map: [String: Any] = ["protocol": port.protocol.rawValue, "port": port.port]
                    if !port.name.isEmpty { map["name"] = port.name }
                    return map
                },
                "endpoints": slice.endpoints.map(endpointManifest),
            ]
        case .node(let node):
            return ["apiVersion": "v1", "kind": "Node", "metadata": metadata, "addresses": node.addresses.map(\.description)]
        }
    }

    private static func serviceSpec(_ service: Service) -> [String: Any] {
        var spec: [String: Any] = [
            "type": service.type.rawValue,
            "sessionAffinity": service.sessionAffinity == .none ? "None" : "ClientIP",
            "internalTrafficPolicy": service.internalTrafficPolicy.rawValue,
            "ports": service.ports.map { port -> [String: Any] in
                var map: [String: Any] = ["protocol": port.protocol.rawValue, "port": port.port]
                if !port.name.isEmpty { map["name"] = port.name }
                switch port.targetPort {
                case .number(let number): map["targetPort"] = number
                case .name(let name): map["targetPort"] = name
                case nil: map["targetPort"] = port.port
                }
                if let nodePort = port.nodePort { map["nodePort"] = nodePort }
                return map
            },
        ]
        if service.type != .externalName {
            spec["clusterIP"] = service.headless ? "None" : service.clusterIPs.first?.description ?? ""
            spec["clusterIPs"] = service.headless ? ["None"] : service.clusterIPs.map(\.description)
            spec["ipFamilies"] = service.ipFamilies.map(\.rawValue)
            spec["ipFamilyPolicy"] = service.ipFamilyPolicy.rawValue
        }
        if service.usesNodePorts || !service.externalIPs.isEmpty {
            spec["externalTrafficPolicy"] = service.externalTrafficPolicy.rawValue
        }
        if case .clientIP(let timeout) = service.sessionAffinity {
            spec["sessionAffinityConfig"] = ["clientIP": ["timeoutSeconds": timeout]]
        }
        if !service.externalIPs.isEmpty { spec["externalIPs"] = service.externalIPs.map(\.description) }
        if !service.loadBalancerSourceRanges.isEmpty { spec["loadBalancerSourceRanges"] = service.loadBalancerSourceRanges.map(\.description) }
        if let port = service.healthCheckNodePort { spec["healthCheckNodePort"] = port }
        if let distribution = service.trafficDistribution { spec["trafficDistribution"] = distribution.rawValue }
        if let name = service.externalName { spec["externalName"] = name }
        return spec
    }

    private static func endpointManifest(_ endpoint: Endpoint) -> [String: Any] {
        var map: [String: Any] = [
            "addresses": endpoint.addresses.map(\.description),
            "conditions": [
                "ready": endpoint.conditions.ready, "serving": endpoint.conditions.serving,
                "terminating": endpoint.conditions.terminating,
            ],
        ]
        if let node = endpoint.nodeName { map["nodeName"] = node }
        if let zone = endpoint.zone { map["zone"] = zone }
        var hints: [String: Any] = [:]
        if !endpoint.hintZones.isEmpty { hints["forZones"] = endpoint.hintZones.map { ["name": $0] } }
        if !endpoint.hintNodes.isEmpty { hints["forNodes"] = endpoint.hintNodes.map { ["name": $0] } }
        if !hints.isEmpty { map["hints"] = hints }
        return map
    }

    private static func nodeManifest(_ node: NodeStatus, published: Revision) -> [String: Any] {
        var map: [String: Any] = [
            "name": node.name, "addresses": node.addresses.map(\.description), "connected": node.connected,
            "desiredRevision": Int(node.desiredRevision.rawValue), "appliedRevision": Int(node.appliedRevision.rawValue),
            "publishedRevision": Int(published.rawValue), "lastSeenUnixNanos": Int(node.lastSeenUnixNanos),
        ]
        if let zone = node.zone { map["zone"] = zone }
        if let error = node.lastError {
            map["lastError"] = error
            map["lastErrorRevision"] = Int(node.lastErrorRevision?.rawValue ?? 0)
        }
        return map
    }
}
