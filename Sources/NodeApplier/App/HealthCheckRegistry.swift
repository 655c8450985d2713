import Logging
import NIOHTTP1
import ProxyModel
import StatusHTTP
import Synchronization

/// kube-proxy's service health checks: for each LoadBalancer service with externalTrafficPolicy
/// Local, an HTTP server on its healthCheckNodePort (on the node's addresses) answers 200 with the
/// number of local ready endpoints, or 503 when there are none or the applier itself is unhealthy
/// (`/healthz`), so load balancers skip this node.
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

    /// The answer for a port, as kube-proxy gives it: 200 only with local endpoints and a healthy
    /// applier (`proxyHealthy`), its JSON body, and the count as the endpoint weight.
    public func response(port: Int, proxyHealthy: Bool) -> StatusHTTPServer.Response {
        guard let entry = entries.withLock({ $0.values.first { $0.port == port } }) else {
            return .text(.notFound, "no service\n")
        }
        let body = """
            {"service":{"namespace":"\(jsonEscaped(entry.service.namespace))","name":"\(jsonEscaped(entry.service.name))"},\
            "localEndpoints":\(entry.localEndpoints),"serviceProxyHealthy":\(proxyHealthy)}
            """
        return StatusHTTPServer.Response(
            entry.localEndpoints > 0 && proxyHealthy ? .ok : .serviceUnavailable, contentType: "application/json",
            body: Array(body.utf8),
            headers: ["X-Content-Type-Options": "nosniff", "X-Load-Balancing-Endpoint-Weight": String(entry.localEndpoints)])
    }

    /// Starts and stops one server per port as entries come and go, until cancelled.
    /// `proxyHealthy` tells, at each request, whether the applier is healthy.
    public func run(proxyHealthy: @escaping @Sendable () -> Bool) async {
        var running: [Int: Task<Void, Never>] = [:]
        for await _ in changeStream {
            let wanted = Set(entries.withLock { $0.values.map(\.port) })
            for (port, task) in running where !wanted.contains(port) {
                task.cancel()
                running[port] = nil
            }
            for port in wanted where running[port] == nil {
                running[port] = Task { await serve(port: port, proxyHealthy: proxyHealthy) }
            }
        }
        for task in running.values { task.cancel() }
    }

    private func serve(port: Int, proxyHealthy: @escaping @Sendable () -> Bool) async {
        let hosts = addresses.isEmpty ? ["::"] : addresses.map(\.description)
        await withTaskGroup(of: Void.self) { group in
            for host in hosts {
                group.addTask { [self] in
                    let server = StatusHTTPServer(
                        host: host, port: port, routes: [:],
                        fallback: { [self] in response(port: port, proxyHealthy: proxyHealthy()) }, logger: logger)
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
