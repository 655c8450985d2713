import ArgumentParser
import ProxyAPI

struct Version: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the client and server versions.")

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        print("Client Version: \(BuildInfo.version)")
        let options = global.callOptions
        let info = try await global.withRegistry { try await $0.serverInfo(.init(), options: options) }
        print("Server Version: \(info.version)")
        print("Head Revision: \(info.headRevision)")
        print("Service CIDRs: \(info.serviceCidrs.joined(separator: ","))")
        print("NodePort Range: \(info.nodePortMin)-\(info.nodePortMax)")
    }
}
