import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import ProxyAPI
import ProxyModel

/// The admin CLI. Only `version` exists so far; the kubectl-grade commands are their own issue.
@main
struct Proxyctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxyctl", abstract: "Administer the kube-proxy control server.", version: BuildInfo.version,
        subcommands: [Version.self])
}

struct Version: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the client and server versions.")

    @Option(help: "Control server address, HOST:PORT (default: $PROXYCTL_SERVER or 127.0.0.1:7700).")
    var server: String = ProcessInfo.processInfo.environment["PROXYCTL_SERVER"] ?? "127.0.0.1:7700"

    func validate() throws {
        if HostPort(server)?.resolvedIP == nil { throw ValidationError("--server: expected IP:PORT or [IPv6]:PORT, got \"\(server)\"") }
    }

    func run() async throws {
        let address = HostPort(server)!
        let ip = address.resolvedIP!
        let target: any ResolvableTarget =
            ip.family == .ipv4 ? .ipv4(address: ip.description, port: address.port) : .ipv6(address: ip.description, port: address.port)
        print("Client Version: \(BuildInfo.version)")
        let info = try await withGRPCClient(
            transport: try HTTP2ClientTransport.Posix(target: target, transportSecurity: .plaintext)
        ) { client in
            try await Kubeproxy_V1_Registry.Client(wrapping: client).serverInfo(.init(), options: .timeout(.seconds(10)))
        }
        print("Server Version: \(info.version)")
        print("Head Revision: \(info.headRevision)")
        print("Service CIDRs: \(info.serviceCidrs.joined(separator: ","))")
        print("NodePort Range: \(info.nodePortMin)-\(info.nodePortMax)")
    }
}

extension CallOptions {
    static func timeout(_ duration: Duration) -> CallOptions {
        var options = CallOptions.defaults
        options.timeout = duration
        return options
    }
}
