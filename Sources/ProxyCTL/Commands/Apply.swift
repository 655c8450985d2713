import ArgumentParser
import GRPCCore
import ProxyAPI
import ProxyModel

struct Apply: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create or update objects from Kubernetes manifests, all in one transaction.",
        discussion: "Files may hold many YAML or JSON documents and `kind: List`; a directory applies every .yaml, .yml and .json file in it; `-` reads standard input. Nothing is stored unless every object is valid.")

    @OptionGroup var global: GlobalOptions

    @Option(name: .shortAndLong, help: "A manifest file, a directory or - for standard input; repeatable.")
    var filename: [String] = []

    @Option(name: .customLong("dry-run"), help: "none, or server: validate and allocate on the server without storing.")
    var dryRun: DryRun = .none

    enum DryRun: String, ExpressibleByArgument, CaseIterable {
        case none, server
    }

    func validate() throws {
        if filename.isEmpty { throw ValidationError("-f/--filename: required") }
    }

    func run() async throws {
        let objects = try filename.flatMap { try Manifests.load($0, defaultNamespace: global.namespace) }
        guard !objects.isEmpty else { throw CommandFailure("no objects found in \(filename.joined(separator: ", "))") }
        let request = Kubeproxy_V1_ApplyRequest.with {
            $0.items = objects.map { object in .with { $0.object = object.object } }
            $0.dryRun = dryRun == .server
        }
        try Self.checkSize(of: request)
        let options = global.callOptions
        let response: Kubeproxy_V1_ApplyResponse
        do {
            response = try await global.withRegistry { try await $0.apply(request, options: options) }
        } catch let failure as CommandFailure {
            throw Self.locate(failure, in: objects)
        }
        let suffix = dryRun == .server ? " (server dry run)" : ""
        for result in response.results {
            let object = try ProxyObject(wire: result.object)
            let outcome =
                switch result.outcome {
                case .created: "created"
                case .unchanged: "unchanged"
                default: "configured"
                }
            print("\(Format.resourceName(object.key)) \(outcome)\(suffix)")
        }
    }

    /// Refuses, before sending it, an Apply larger than the server takes in one request (it
    /// would end the stream, which reads as an unreachable server).
    static func checkSize(of request: Kubeproxy_V1_ApplyRequest, limit: Int = MessageLimits.registryBytes) throws {
        let size = (try request.serializedBytes() as [UInt8]).count
        guard size > limit else { return }
        throw CommandFailure(
            "\(request.items.count) objects make an Apply of \(size) bytes, more than the \(limit) the control server takes in one "
                + "request: apply them in parts (each apply is one transaction)")
    }

    /// Rewrites the server's `items[N].field: …` into `file: document D (Kind ns/name): field: …`.
    static func locate(_ failure: CommandFailure, in objects: [ManifestObject]) -> CommandFailure {
        guard let start = failure.description.range(of: "items["),
            let close = failure.description[start.upperBound...].firstIndex(of: "]"),
            let index = Int(failure.description[start.upperBound..<close]), objects.indices.contains(index)
        else { return failure }
        var rest = failure.description[failure.description.index(after: close)...]
        if rest.hasPrefix(".") { rest = rest.dropFirst() }
        let prefix = failure.description[..<start.lowerBound]
        return CommandFailure("\(prefix)\(objects[index].location): \(rest)")
    }
}
