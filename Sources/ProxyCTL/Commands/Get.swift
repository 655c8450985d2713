import ArgumentParser
import Foundation
import ProxyAPI
import ProxyModel

/// The kinds `get` and `delete` accept, with kubectl's spellings.
enum ResourceType: Equatable {
    case service, endpointSlice, node

    init?(_ text: String) {
        switch text.lowercased() {
        case "service", "services", "svc": self = .service
        case "endpointslice", "endpointslices", "eps": self = .endpointSlice
        case "node", "nodes", "no": self = .node
        default: return nil
        }
    }

    var kind: ObjectKind {
        switch self {
        case .service: .service
        case .endpointSlice: .endpointSlice
        case .node: .node
        }
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List services, endpoint slices or nodes (nodes: their sync status).",
        discussion: "`get nodes` shows, per node, whether its stream is connected, the revision it applied against the newest revision that changed what nodes hold, the lag, when it was last heard from and the text of its last NACK.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "services|svc, endpointslices|eps or nodes")
    var type: String

    @Argument(help: "Only this object.")
    var name: String?

    func validate() throws {
        if ResourceType(type) == nil {
            throw ValidationError("unknown type \"\(type)\": expected services (svc), endpointslices (eps) or nodes")
        }
    }

    func run() async throws {
        let resource = ResourceType(type)!
        let options = global.callOptions
        let namespace = global.namespace
        let all = global.allNamespaces
        let name = self.name
        if resource == .node {
            let (nodes, published) = try await global.withRegistry { registry in
                if let name {
                    let response = try await registry.getNode(.with { $0.name = name }, options: options)
                    return ([NodeStatus(wire: response.node)], response.publishedRevision)
                }
                let response = try await registry.listNodes(.init(), options: options)
                return (response.nodes.map(NodeStatus.init(wire:)), response.publishedRevision)
            }
            print(Format.nodes(nodes, published: Revision(published), format: global.output), terminator: "")
            return
        }
        let objects: [ProxyObject] = try await global.withRegistry { registry in
            if let name {
                let ref = ObjectKey(kind: resource.kind, namespace: namespace, name: name).wire
                return [try ProxyObject(wire: try await registry.get(.with { $0.ref = ref }, options: options).object)]
            }
            return try await registry.listAll(resource.kind, namespace: all ? "" : namespace, options: options)
        }
        if objects.isEmpty && global.output == .table || objects.isEmpty && global.output == .wide {
            FileHandle.standardError.write(Data("No resources found\(all ? "" : " in \(namespace) namespace").\n".utf8))
            return
        }
        print(Format.objects(objects, format: global.output, showNamespace: all), terminator: "")
    }
}
