import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import ProxyAPI
import ProxyModel
import ServiceLifecycle
import StateStore

@testable import ControlServer

/// A real control server on loopback (ephemeral ports, a temporary SQLite file) and a
/// real gRPC client connected to it over HTTP/2.
final class TestServer: Sendable {
    let directory: URL
    let app: ControlServerApp
    let address: HostPort
    let group: ServiceGroup
    let runTask: Task<Void, any Error>

    /// Starts on a fresh database, or on the one in `directory` (a restart).
    init(
        retainedRevisions: UInt64 = 10_000, heartbeat: Duration = .seconds(5), listenHost: String = "127.0.0.1",
        directory: URL? = nil
    ) async throws {
        self.directory = directory ?? FileManager.default.temporaryDirectory.appendingPathComponent("server-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        var logger = Logger(label: "test-server")
        logger.logLevel = .warning
        let configuration = ControlServerConfiguration(
            listen: HostPort(host: listenHost, port: 0), httpListen: HostPort(host: "127.0.0.1", port: 0),
            store: StoreConfiguration(path: self.directory.appendingPathComponent("state.db").path, retainedRevisions: retainedRevisions),
            nodeSync: NodeSyncConfiguration(heartbeatInterval: heartbeat),
            statusFlushInterval: .milliseconds(50))
        app = try await ControlServerApp(configuration: configuration, logger: logger)
        let group = ServiceGroup(services: app.services, logger: logger)
        self.group = group
        runTask = Task { try await group.run() }
        address = try await app.grpcListeningAddress()
    }

    /// Runs `body` with a client connected to the server.
    func withClient<T: Sendable>(
        config: HTTP2ClientTransport.Posix.Config = .defaults, _ body: @Sendable (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> T
    ) async throws -> T {
        let target: any ResolvableTarget =
            address.host.contains(":") ? .ipv6(address: address.host, port: address.port) : .ipv4(address: address.host, port: address.port)
        let transport = try HTTP2ClientTransport.Posix(target: target, transportSecurity: .plaintext, config: config)
        return try await withGRPCClient(transport: transport) { client in try await body(client) }
    }

    func stop(keepingData: Bool = false) async {
        await group.triggerGracefulShutdown()
        _ = await runTask.result
        if !keepingData { try? FileManager.default.removeItem(at: directory) }
    }
}

/// Runs `body` against a fresh server and always stops it.
func withServer<T: Sendable>(
    retainedRevisions: UInt64 = 10_000, heartbeat: Duration = .seconds(5), listenHost: String = "127.0.0.1",
    _ body: (TestServer) async throws -> T
) async throws -> T {
    let server = try await TestServer(retainedRevisions: retainedRevisions, heartbeat: heartbeat, listenHost: listenHost)
    do {
        let result = try await body(server)
        await server.stop()
        return result
    } catch {
        await server.stop()
        throw error
    }
}

struct TimedOut: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Races `operation` against a deadline; tests never hang.
func within<T: Sendable>(_ seconds: Double, _ what: String, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: .milliseconds(Int64(seconds * 1000)))
            throw TimedOut(what: what)
        }
        let result = try await group.next()!
        group.cancelAll()
        return result
    }
}
