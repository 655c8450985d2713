import ArgumentParser
import ProxyAPI
import ProxyModel

struct Describe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a service or node in detail.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "service (svc) or node")
    var type: String

    @Argument(help: "Its name.")
    var name: String

    func validate() throws {
        if ResourceType(type) == nil || ResourceType(type) == .endpointSlice {
            throw ValidationError("unknown type \"\(type)\": expected service (svc) or node")
        }
    }

    func run() async throws {
        let options = global.callOptions
        let namespace = global.namespace
        let name = self.name
        let text: String
        if ResourceType(type) == .node {
            text = try await global.withRegistry { registry in
                let response = try await registry.getNode(.with { $0.name = name }, options: options)
                return Self.describe(NodeStatus(wire: response.node), published: Revision(response.publishedRevision))
            }
        } else {
            text = try await global.withRegistry { registry in
                let ref = ObjectKey(kind: .service, namespace: namespace, name: name).wire
                guard case .service(let service) = try ProxyObject(wire: try await registry.get(.with { $0.ref = ref }, options: options).object)
                else { throw CommandFailure("\(namespace)/\(name) is not a service") }
                let slices = try await registry.listAll(.endpointSlice, namespace: namespace, options: options).compactMap { object in
                    if case .endpointSlice(let slice) = object, slice.serviceName == name { return slice }
                    return nil
                }
                let nodes = try await registry.listNodes(.init(), options: options)
                return Self.describe(service, slices: slices, nodes: nodes)
            }
        }
        print(text, terminator: "")
    }

    static func describe(_ service: Service, slices: [EndpointSlice], nodes: Kubeproxy_V1_ListNodesResponse) -> String {
        var lines: [(String, String)] = [
            ("Name", service.metadata.name), ("Namespace", service.metadata.namespace),
            ("Labels", service.metadata.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")),
            ("Type", service.type.rawValue), ("Revision", service.metadata.revision.description),
            ("IP Family Policy", service.ipFamilyPolicy.rawValue),
            ("IP Families", service.ipFamilies.map(\.rawValue).joined(separator: ",")),
            ("IPs", service.headless ? "None" : service.clusterIPs.map(\.description).joined(separator: ",")),
        ]
        if !service.externalIPs.isEmpty { lines.append(("External IPs", service.externalIPs.map(\.description).joined(separator: ","))) }
        if !service.loadBalancerIngressIPs.isEmpty {
            let ingress = service.loadBalancerIngressIPs.enumerated().map { "\($1) (\(service.loadBalancerIngressIPMode($0).rawValue))" }
            lines.append(("LoadBalancer Ingress", ingress.joined(separator: ", ")))
        }
        if let externalName = service.externalName { lines.append(("External Name", externalName)) }
        for port in service.ports {
            lines.append(("Port", "\(port.name.isEmpty ? "<unset>" : port.name)  \(port.port)/\(port.protocol.rawValue)"))
            lines.append(("TargetPort", "\(port.targetPort?.description ?? String(port.port))/\(port.protocol.rawValue)"))
            if let nodePort = port.nodePort { lines.append(("NodePort", "\(nodePort)/\(port.protocol.rawValue)")) }
        }
        if case .clientIP(let timeout) = service.sessionAffinity {
            lines.append(("Session Affinity", "ClientIP (timeout \(timeout)s)"))
        } else {
            lines.append(("Session Affinity", "None"))
        }
        lines.append(("External Traffic Policy", service.externalTrafficPolicy.rawValue))
        lines.append(("Internal Traffic Policy", service.internalTrafficPolicy.rawValue))
        if let port = service.healthCheckNodePort { lines.append(("HealthCheck NodePort", String(port))) }
        if !service.loadBalancerSourceRanges.isEmpty {
            lines.append(("LoadBalancer Source Ranges", service.loadBalancerSourceRanges.map(\.description).joined(separator: ",")))
        }
        if let distribution = service.trafficDistribution { lines.append(("Traffic Distribution", distribution.rawValue)) }
        let applied = nodes.nodes.filter { $0.appliedRevision >= nodes.publishedRevision }.count
        lines.append(("Nodes in sync", "\(applied)/\(nodes.nodes.count) applied revision \(nodes.publishedRevision)"))
        var text = aligned(lines)
        text += "Endpoints:\n"
        let rows = slices.flatMap { slice in
            slice.endpoints.map { endpoint -> [String] in
                [
                    endpoint.addresses.map(\.description).joined(separator: ","),
                    slice.ports.map { "\($0.name.isEmpty ? "" : $0.name + ":")\($0.port)/\($0.protocol.rawValue)" }.joined(separator: ","),
                    "ready=\(endpoint.conditions.ready) serving=\(endpoint.conditions.serving) terminating=\(endpoint.conditions.terminating)",
                    endpoint.nodeName ?? "<none>", endpoint.zone ?? "<none>", slice.metadata.name,
                ]
            }
        }
        if rows.isEmpty {
            text += "  <none>\n"
        } else {
            text += Format.table(["ADDRESS", "PORTS", "CONDITIONS", "NODE", "ZONE", "SLICE"], rows)
                .split(separator: "\n").map { "  \($0)\n" }.joined()
        }
        return text
    }

    static func describe(_ node: NodeStatus, published: Revision) -> String {
        aligned([
            ("Name", node.name), ("Addresses", node.addresses.map(\.description).joined(separator: ",")),
            ("Zone", node.zone ?? "<none>"), ("Connected", node.connected ? "yes" : "no"),
            ("Desired Revision", node.desiredRevision.description), ("Applied Revision", node.appliedRevision.description),
            ("Published Revision", published.description),
            ("In Sync", node.appliedRevision >= published ? "yes" : "no, \(published.rawValue - node.appliedRevision.rawValue) behind"),
            ("Last Seen", node.lastSeenUnixNanos == 0 ? "never" : Format.age(nanoseconds: WallClock.nowUnixNanos() - node.lastSeenUnixNanos) + " ago"),
            ("Last Error", node.lastError.map { "revision \(node.lastErrorRevision?.description ?? "?"): \($0)" } ?? "<none>"),
        ])
    }

    private static func aligned(_ lines: [(String, String)]) -> String {
        let width = (lines.map(\.0.count).max() ?? 0) + 2
        return lines.map { ($0.0 + ":").padding(toLength: width, withPad: " ", startingAt: 0) + ($0.1.isEmpty ? "<none>" : $0.1) + "\n" }.joined()
    }
}
