import ArgumentParser
import ProxyAPI
import ProxyModel

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete objects named on the command line or in manifests, all in one transaction.")

    @OptionGroup var global: GlobalOptions

    @Option(name: .shortAndLong, help: "A manifest file, a directory or - for standard input; repeatable.")
    var filename: [String] = []

    @Argument(help: "service|svc|endpointslice|eps NAME...")
    var arguments: [String] = []

    func validate() throws {
        if filename.isEmpty && arguments.count < 2 { throw ValidationError("give -f FILE, or a type and at least one name") }
        if !filename.isEmpty && !arguments.isEmpty { throw ValidationError("give either -f FILE or a type and names, not both") }
        if let type = arguments.first, ResourceType(type) == nil || ResourceType(type) == .node {
            throw ValidationError("unknown type \"\(type)\": expected service (svc) or endpointslice (eps)")
        }
    }

    func run() async throws {
        var keys: [ObjectKey] = []
        if filename.isEmpty {
            let kind = ResourceType(arguments[0])!.kind
            keys = arguments.dropFirst().map { ObjectKey(kind: kind, namespace: global.namespace, name: $0) }
        } else {
            keys = try filename.flatMap { try Manifests.load($0, defaultNamespace: global.namespace) }
                .map { ObjectKey(kind: $0.kind, namespace: $0.namespace, name: $0.name) }
        }
        let request = Kubeproxy_V1_DeleteRequest.with { $0.items = keys.map { key in .with { $0.ref = key.wire } } }
        let options = global.callOptions
        _ = try await global.withRegistry { try await $0.delete(request, options: options) }
        for key in keys { print("\(Format.resourceName(key)) deleted") }
    }
}
