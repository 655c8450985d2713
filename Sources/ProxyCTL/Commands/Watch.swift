import ArgumentParser
import Foundation
import ProxyAPI
import ProxyModel

struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stream changes as they are committed: one line per object (REVISION TYPE KIND NAMESPACE/NAME).")

    @OptionGroup var global: GlobalOptions

    @Option(help: "Replay history after this revision (0: all retained history); default: only new changes.")
    var from: UInt64?

    @Option(help: "Only these kinds, comma-separated: svc, eps, nodes.")
    var kinds: String?

    @Option(help: "Stop after this many changes (default: run until interrupted).")
    var count: Int?

    func validate() throws {
        for kind in kinds?.split(separator: ",") ?? [] where ResourceType(String(kind)) == nil {
            throw ValidationError("--kinds: unknown kind \"\(kind)\"")
        }
    }

    func run() async throws {
        let request = Kubeproxy_V1_WatchRequest.with {
            if let from { $0.fromRevision = from }
            $0.namespace = global.allNamespaces ? "" : global.namespace
            $0.kinds = (kinds?.split(separator: ",") ?? []).map { ResourceType(String($0))!.kind.wire }
        }
        let limit = count
        try await global.withRegistry { registry in
            // A watch runs until interrupted: no deadline.
            try await registry.watch(request) { response in
                var seen = 0
                for try await event in response.messages {
                    for change in event.changes {
                        let key = try ObjectKey(wire: change.ref)
                        let type = change.type == .delete ? "DELETED" : "PUT"
                        let line = "\(event.revision)\t\(type)\t\(key.kind.rawValue)\t\(key.namespace.isEmpty ? "" : key.namespace + "/")\(key.name)\n"
                        // Unbuffered: a watch is read line by line, often through a pipe.
                        FileHandle.standardOutput.write(Data(line.utf8))
                        seen += 1
                        if let limit, seen >= limit { return }
                    }
                }
            }
        }
    }
}
