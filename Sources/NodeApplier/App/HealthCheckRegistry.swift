import Logging
import NIOHTTP1
import ProxyModel
import StatusHTTP
import Synchronization

/// kube-proxy's service health checks: for each LoadBalancer service with externalTrafficPolicy
/// Local, an HTTP server on its healthCheckNodePort (on the node's addresses) answers 200 with the
/// number of local ready endpoints, or 503 when there are none, so load balancers skip this node.
public final class HealthCheckRegistry: Sendable {
    public struct Entry: Hashable, Sendable {
        public var service: ServiceName
        public var port: Int
        public var localEndpoints: Int

        public init(service: ServiceName, port: Int, localEndpoints: Int) {
            self.service = service
            self.port = port
            self.localEndpoints = localEndpoints
        }
    }

    private let addresses: [IPAddress]
    private let logger: Logger
    private let entries = Mutex<[ServiceName: Entry]>([:])
    private let changes: AsyncStream<Void>.Continuation
    private let changeStream: AsyncStream<Void>

    /// Listens on `addresses`; none means all addresses.
    public init(addresses: [IPAddress], logger: Logger) {
        self.addresses = addresses
        self.logger = logger
        (changeStream, changes) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    public func replaceAll(_ new: [Entry]) {
        entries.withLock { $0 = Dictionary(new.map { ($0.service, $0) }, uniquingKeysWith: { first, _ in first }) }
        changes.yield()
    }

    public func update(_ service: ServiceName, _ entry: Entry?) {
        entries.withLock { $0[service] = entry }
        changes.yield()
    }

    /// The answer for a port: status and kube-proxy's JSON body.
    public func response(port: Int) -> (status: HTTPResponseStatus, contentType: String, body: [UInt8]) {
        guard let entry = entries.withLock({ $0.values.first { $0.port == port } }) else {
            return (.notFound, "text/plain; charset=utf-8", Array("no service\n".utf8))
        }
        let body = """
            {"service":{"namespace":"\(jsonEscaped(entry.service.namespace))","name":"\(jsonEscaped(entry.service.name))"},\
            "localEndpoints":\(entry.localEndpoints),"serviceProxyHealthy":true}
            """
        return (entry.localEndpoints > 0 ? .ok : .serviceUnavailable, "application/json", Array(body.utf8))
    }

    /// Starts and stops one server per port as entries come and go, until cancelled.
    public func run() async {
        var running: [Int: Task<Void, Never>] = [:]
        for await _ in changeStream {
            let wanted = Set(entries.withLock { $0.values.map(\.port) })
            for (port, task) in running where !wanted.contains(port) {
                task.cancel()
                running[port] = nil
            }
            for port in wanted where running[port] == nil {
                running[port] = Task { await serve(port: port) }
            }
        }
        for task in running.values { task.cancel() }
    }

    private func serve(port: Int) async {
        let hosts = addresses.isEmpty ? ["::"] : addresses.map(\.description)
        await withTaskGroup(of: Void.self) { group in
            for host in hosts {
                group.addTask { [self] in
                    let server = StatusHTTPServer(
                        host: host, port: port, routes: [:], fallback: { [self] in response(port: port) }, logger: logger)
                    do { try await server.run() } catch {
                        logger.error("health check server failed", metadata: ["address": "\(host):\(port)", "error": "\(error)"])
                    }
                }
            }
        }
    }

    public func finish() { changes.finish() }
}

private func jsonEscaped(_ text: String) -> String {
    // Kubernetes names are DNS labels; escape anyway so the body stays valid JSON.
    text.unicodeScalars.map { scalar in
        switch scalar {
        case "\"": "\\\""
        case "\\": "\\\\"
        default: scalar.value < 0x20 ? "" : String(scalar)
        }
    }.joined()
}
