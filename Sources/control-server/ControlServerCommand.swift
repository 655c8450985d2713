import ArgumentParser
import ControlServer
import Logging
import ProxyAPI
import ProxyModel
import StateStore

@main
struct ControlServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "control-server",
        abstract: "Keeps Services and EndpointSlices in SQLite and pushes them to node-appliers over gRPC.",
        version: BuildInfo.version)

    @Option(help: "gRPC listen address (Registry and NodeSync), HOST:PORT or [IPv6]:PORT.")
    var listen: String = ControlServerConfiguration.defaultListen.description

    @Option(name: .customLong("http-listen"), help: "Listen address for /healthz, /readyz and /metrics.")
    var httpListen: String = ControlServerConfiguration.defaultHTTPListen.description

    @Option(help: "SQLite database file (created if missing).")
    var db: String = "proxy-state.db"

    @Option(name: .customLong("service-cidr"), help: "Service CIDR to allocate ClusterIPs from; repeat for dual stack (at most one per family). Default: 10.96.0.0/12 and fd00:10:96::/112.")
    var serviceCIDRs: [String] = []

    @Option(name: .customLong("node-port-range"), help: "NodePort range, FIRST-LAST.")
    var nodePortRange: String = "30000-32767"

    @Option(name: .customLong("retain-revisions"), help: "Revisions of change log kept for deltas and Watch.")
    var retainRevisions: UInt64 = 10_000

    @Option(name: .customLong("heartbeat-interval"), help: "Seconds between NodeSync heartbeats; a silent stream is closed after three.")
    var heartbeatInterval: Double = 5

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    func validate() throws {
        if HostPort(listen) == nil { throw ValidationError("--listen: expected HOST:PORT or [IPv6]:PORT, got \"\(listen)\"") }
        if HostPort(httpListen) == nil { throw ValidationError("--http-listen: expected HOST:PORT, got \"\(httpListen)\"") }
        _ = try parsedCIDRs()
        _ = try parsedNodePortRange()
        if Logger.Level(rawValue: logLevel) == nil { throw ValidationError("--log-level: unknown level \"\(logLevel)\"") }
        if !(heartbeatInterval > 0) { throw ValidationError("--heartbeat-interval: must be positive") }
    }

    func parsedCIDRs() throws -> [CIDR] {
        if serviceCIDRs.isEmpty { return ValidationContext.defaultServiceCIDRs }
        let cidrs = try serviceCIDRs.map { text in
            guard let cidr = CIDR(text) else { throw ValidationError("--service-cidr: invalid CIDR \"\(text)\"") }
            return cidr
        }
        if Set(cidrs.map(\.family)).count != cidrs.count {
            throw ValidationError("--service-cidr: at most one CIDR per family")
        }
        return cidrs
    }

    func parsedNodePortRange() throws -> ClosedRange<Int> {
        let parts = nodePortRange.split(separator: "-")
        guard parts.count == 2, let low = Int(parts[0]), let high = Int(parts[1]), 1 <= low, low <= high, high <= 65535 else {
            throw ValidationError("--node-port-range: expected FIRST-LAST within 1-65535, got \"\(nodePortRange)\"")
        }
        return low...high
    }

    static func main() async {
        ControlServerApp.configureHeap()
        await main(nil)
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "control-server")
        let configuration = ControlServerConfiguration(
            listen: HostPort(listen)!, httpListen: HostPort(httpListen)!,
            store: StoreConfiguration(
                path: db,
                validation: ValidationContext(serviceCIDRs: try parsedCIDRs(), nodePortRange: try parsedNodePortRange()),
                retainedRevisions: retainRevisions),
            nodeSync: NodeSyncConfiguration(heartbeatInterval: .milliseconds(Int64(heartbeatInterval * 1000))))
        logger.info("starting", metadata: ["version": "\(BuildInfo.version)", "db": "\(db)"])
        let app = try await ControlServerApp(configuration: configuration, logger: logger)
        try await app.run()
        logger.info("stopped")
    }
}
