import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import ProxyAPI
import ProxyGRPC
import ProxyModel

/// Options every command shares.
public struct GlobalOptions: ParsableArguments {
    @Option(help: "Control server address, IP:PORT or [IPv6]:PORT (default: $PROXYCTL_SERVER or 127.0.0.1:7700).")
    var server: String = ProcessInfo.processInfo.environment["PROXYCTL_SERVER"] ?? "127.0.0.1:7700"

    @Option(help: "Seconds to wait for the server.")
    var timeout: Double = 10

    @Option(name: [.short, .long], help: "Namespace of the objects (default: default).")
    var namespace: String = "default"

    @Flag(name: [.customShort("A"), .customLong("all-namespaces")], help: "List objects of every namespace.")
    var allNamespaces = false

    @Option(name: [.short, .long], help: "Output format: table, wide, json, yaml or name.")
    var output: OutputFormat = .table

    public init() {}

    public func validate() throws {
        if HostPort(server)?.resolvedIP == nil {
            throw ValidationError("--server: expected IP:PORT or [IPv6]:PORT, got \"\(server)\"")
        }
        if !(timeout > 0) { throw ValidationError("--timeout: must be positive") }
    }

    var callOptions: CallOptions {
        var options = CallOptions.defaults
        options.timeout = .milliseconds(Int64(timeout * 1000))
        // An Apply's response echoes its objects with what the server allocated: room above the
        // server's request limit. The transport (grpc-swift-nio-transport 2.9) checks responses
        // against the request limit.
        options.maxRequestMessageBytes = 2 * MessageLimits.registryBytes
        options.maxResponseMessageBytes = 2 * MessageLimits.registryBytes
        return options
    }

    /// Runs `body` with a Registry client connected to `--server`.
    func withRegistry<T: Sendable>(
        _ body: @Sendable (Kubeproxy_V1_Registry.Client<HTTP2ClientTransport.Posix>) async throws -> T
    ) async throws -> T {
        let address = HostPort(server)!
        let ip = address.resolvedIP!
        let target: any ResolvableTarget =
            ip.family == .ipv4 ? .ipv4(address: ip.description, port: address.port) : .ipv6(address: ip.description, port: address.port)
        let transport = try HTTP2ClientTransport.Posix(target: target, transportSecurity: .plaintext)
        do {
            return try await withGRPCClient(transport: transport) { client in
                try await body(Kubeproxy_V1_Registry.Client(wrapping: client))
            }
        } catch let error as RPCError {
            throw CommandFailure(serverError: error, server: server)
        }
    }
}

public enum OutputFormat: String, ExpressibleByArgument, CaseIterable, Sendable {
    case table, wide, json, yaml, name
}

/// A command failed for a reason the user must see (exit code 1).
struct CommandFailure: Error, CustomStringConvertible {
    var description: String

    init(_ description: String) { self.description = description }

    init(serverError error: RPCError, server: String) {
        switch error.code {
        case .unavailable:
            description = "cannot reach the control server at \(server): \(error.message)"
        case .deadlineExceeded:
            description =
                "no answer from the control server at \(server) within --timeout (a write may have been applied all the "
                + "same: `get` shows it): \(error.message)"
        case .invalidArgument:
            description = "invalid: \(error.message)"
        case .notFound:
            description = "not found: \(error.message)"
        case .alreadyExists:
            description = "already allocated: \(error.message)"
        case .failedPrecondition:
            description = "conflict: \(error.message)"
        case .resourceExhausted:
            description = "exhausted: \(error.message)"
        case .internalError:
            description = "the control server failed: \(error.message)"
        default:
            description = "\(error.code): \(error.message)"
        }
    }
}

extension Kubeproxy_V1_Registry.Client {
    /// Every object of `kind` in `namespace` (empty: all namespaces), following page tokens.
    func listAll(_ kind: ObjectKind, namespace: String, options: CallOptions) async throws -> [ProxyObject] {
        var objects: [ProxyObject] = []
        var token = ""
        repeat {
            let page = try await list(
                .with {
                    $0.kind = kind.wire
                    $0.namespace = namespace
                    $0.pageToken = token
                }, options: options)
            objects += try page.objects.map { try ProxyObject(wire: $0) }
            token = page.nextPageToken
        } while !token.isEmpty
        return objects
    }
}
