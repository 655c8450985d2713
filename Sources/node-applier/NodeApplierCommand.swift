import ArgumentParser
import Foundation
import Logging
import NodeApplier
import ProxyAPI
import ProxyModel
import ServiceLifecycle

@main
struct NodeApplierCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node-applier",
        abstract: "Programs this node's nftables from the control server's Services and EndpointSlices.",
        version: BuildInfo.version)

    @Option(help: "Control server gRPC address, HOST:PORT or [IPv6]:PORT.")
    var server: String = "127.0.0.1:7700"

    @Option(help: "This node's name (as EndpointSlices' nodeName refers to it). Required unless --cleanup.")
    var node: String?

    @Option(name: .customLong("node-ip"), help: "An address NodePorts listen on; repeat for more (e.g. one per family).")
    var nodeIPs: [String] = []

    @Option(help: "This node's zone, for topology-aware routing.")
    var zone: String?

    @Option(name: .customLong("cluster-cidr"), help: "Pod network; traffic to ClusterIPs from outside it is masqueraded. Repeatable.")
    var clusterCIDRs: [String] = []

    @Flag(name: .customLong("masquerade-all"), help: "Masquerade all traffic to ClusterIPs, from pods too (kube-proxy's --masquerade-all; some pod networks need it).")
    var masqueradeAll = false

    @Option(
        name: .customLong("service-cidr"),
        help: "Service range; traffic to unallocated addresses in it is dropped. Repeatable. Default: 10.96.0.0/12 and fd00:10:96::/112.")
    var serviceCIDRs: [String] = []

    @Option(help: "Name of the nftables tables (ip and ip6) this applier owns; ClientIP affinity is in NAME-affinity (and NAME-affinity-1, … past 64 affinity services).")
    var table: String = "kube-proxy-swift"

    @Option(name: .customLong("http-listen"), help: "Listen address for /healthz, /livez and /metrics.")
    var httpListen: String = "127.0.0.1:10256"

    @Option(name: .customLong("min-sync-interval"), help: "Seconds; changes closer together are applied in one sync.")
    var minSyncInterval: Double = 0.1

    @Option(
        name: .customLong("drift-check-interval"),
        help: "Seconds between comparisons of the kernel's tables with the plan (listed when another program committed since).")
    var driftCheckInterval: Double = 10

    @Option(
        name: .customLong("rehome-delay"),
        help: "Seconds without a sync before new services, and services whose endpoint count changed, get the verdicts of their counts (one table validation by the kernel for all).")
    var rehomeDelay: Double = 1

    @Option(
        name: .customLong("rehome-max-delay"),
        help: "Seconds at most before they get them while changes keep coming (each time, a table validation that delays the next sync).")
    var rehomeMaxDelay: Double = 10

    @Option(name: .customLong("heartbeat-interval"), help: "Seconds between NodeSync heartbeats; a silent stream is dropped after three.")
    var heartbeatInterval: Double = 5

    @Option(
        name: .customLong("conntrack-max-per-core"),
        help: "Connections the kernel tracks per CPU (nf_conntrack_max, and a quarter as many hash buckets at least); 0 leaves them alone. Machine-wide: set from the initial network namespace only.")
    var conntrackMaxPerCore = 32768

    @Option(name: .customLong("conntrack-min"), help: "Connections the kernel tracks at least, whatever the number of CPUs.")
    var conntrackMin = 131072

    @Option(
        name: .customLong("conntrack-tcp-timeout-established"),
        help: "Seconds an idle established TCP connection stays tracked; 0 leaves the kernel's.")
    var conntrackTCPTimeoutEstablished = 86400

    @Option(
        name: .customLong("conntrack-tcp-timeout-close-wait"), help: "Seconds a TCP connection stays tracked in CLOSE_WAIT; 0 leaves the kernel's.")
    var conntrackTCPTimeoutCloseWait = 3600

    @Flag(name: .customLong("conntrack-tcp-be-liberal"), help: "Do not mark out-of-window TCP packets INVALID (nf_conntrack_tcp_be_liberal).")
    var conntrackTCPBeLiberal = false

    @Option(name: .customLong("conntrack-udp-timeout"), help: "Seconds a UDP flow seen one way stays tracked; 0 leaves the kernel's.")
    var conntrackUDPTimeout = 0

    @Option(name: .customLong("conntrack-udp-timeout-stream"), help: "Seconds a UDP flow seen both ways stays tracked; 0 leaves the kernel's.")
    var conntrackUDPTimeoutStream = 0

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    @Flag(help: "Delete the ip and ip6 tables of --table (and their affinity tables), then exit: takes this node off the proxy (stopping the daemon leaves its rules in place).")
    var cleanup = false

    func validate() throws {
        if !cleanup { _ = try nodeConfig() }
        if HostPort(server) == nil { throw ValidationError("--server: expected HOST:PORT or [IPv6]:PORT, got \"\(server)\"") }
        if HostPort(httpListen) == nil { throw ValidationError("--http-listen: expected HOST:PORT, got \"\(httpListen)\"") }
        if !Self.isTableName(table) { throw ValidationError("--table: expected 1-64 letters, digits, '-' or '_' starting with a letter, got \"\(table)\"") }
        let intervals = [
            ("--min-sync-interval", minSyncInterval), ("--drift-check-interval", driftCheckInterval), ("--rehome-delay", rehomeDelay),
            ("--rehome-max-delay", rehomeMaxDelay), ("--heartbeat-interval", heartbeatInterval),
        ]
        for (flag, value) in intervals where !(value > 0) {
            throw ValidationError("\(flag): must be a positive number of seconds")
        }
        if Logger.Level(rawValue: logLevel) == nil { throw ValidationError("--log-level: unknown level \"\(logLevel)\"") }
        let conntrack = [
            ("--conntrack-max-per-core", conntrackMaxPerCore), ("--conntrack-min", conntrackMin),
            ("--conntrack-tcp-timeout-established", conntrackTCPTimeoutEstablished),
            ("--conntrack-tcp-timeout-close-wait", conntrackTCPTimeoutCloseWait), ("--conntrack-udp-timeout", conntrackUDPTimeout),
            ("--conntrack-udp-timeout-stream", conntrackUDPTimeoutStream),
        ]
        for (flag, value) in conntrack where value < 0 {
            throw ValidationError("\(flag): must be 0 or more, got \(value)")
        }
    }

    var conntrackTuning: ConntrackTuning {
        var tuning = ConntrackTuning()
        tuning.maxPerCore = conntrackMaxPerCore
        tuning.min = conntrackMin
        tuning.tcpEstablishedTimeout = conntrackTCPTimeoutEstablished
        tuning.tcpCloseWaitTimeout = conntrackTCPTimeoutCloseWait
        tuning.tcpBeLiberal = conntrackTCPBeLiberal
        tuning.udpTimeout = conntrackUDPTimeout
        tuning.udpStreamTimeout = conntrackUDPTimeoutStream
        return tuning
    }

    static func isTableName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first.properties.isAlphabetic, first.isASCII, name.count <= 64 else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-" || $0 == "_") }
    }

    func nodeConfig() throws -> NodeConfig {
        guard let node else { throw ValidationError("--node: required (this node's name)") }
        if let problem = Names.dnsSubdomainProblem(node) { throw ValidationError("--node: \(problem)") }
        let ips = try nodeIPs.map { text in
            guard let ip = IPAddress(text) else { throw ValidationError("--node-ip: invalid IP address \"\(text)\"") }
            return ip
        }
        func cidrs(_ texts: [String], _ flag: String) throws -> [CIDR] {
            try texts.map { text in
                guard let cidr = CIDR(text) else { throw ValidationError("\(flag): invalid CIDR \"\(text)\" (canonical form, e.g. 10.244.0.0/16)") }
                return cidr
            }
        }
        return NodeConfig(
            nodeName: node, zone: zone, nodeIPs: ips, clusterCIDRs: try cidrs(clusterCIDRs, "--cluster-cidr"),
            serviceCIDRs: serviceCIDRs.isEmpty ? ValidationContext.defaultServiceCIDRs : try cidrs(serviceCIDRs, "--service-cidr"),
            masqueradeAll: masqueradeAll)
    }

    static func main() async {
        // Before any other thread allocates: a thread that allocated keeps the arena it got.
        Applier.configureHeap()
        await main(nil)
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "node-applier")
        let nft: LibNFTables
        do { nft = try LibNFTables() } catch { throw ValidationError("libnftables: \(error)") }
        if cleanup {
            try Applier.removeTables(table, nft: nft)
            logger.info("none of this applier's tables is left", metadata: ["tables": "ip \(table), ip6 \(table)"])
            return
        }
        func seconds(_ value: Double) -> Duration { .milliseconds(Int64(value * 1000)) }
        let configuration = NodeApplierConfiguration(
            node: try nodeConfig(), tableName: table,
            sync: SyncClientConfiguration(server: HostPort(server)!, heartbeatInterval: seconds(heartbeatInterval)),
            httpListen: HostPort(httpListen)!, minSyncInterval: seconds(minSyncInterval),
            driftCheckInterval: seconds(driftCheckInterval), rehomeDelay: seconds(rehomeDelay),
            rehomeMaxDelay: seconds(rehomeMaxDelay))
        logger.info(
            "starting",
            metadata: [
                "version": "\(BuildInfo.version)", "node": "\(configuration.node.nodeName)", "server": "\(server)", "table": "\(table)",
            ])
        let initial = ConntrackTuning.inInitialNetworkNamespace()
        if !initial && conntrackMaxPerCore > 0 {
            logger.info("conntrack: not in the initial network namespace, the table's size (machine-wide) is left alone")
        }
        ConntrackTuning.apply(
            conntrackTuning.settings(cores: ProcessInfo.processInfo.activeProcessorCount, initialNetworkNamespace: initial), logger: logger)
        let app = NodeApplierApp(configuration: configuration, nft: nft, conntrack: NetlinkConntrack(), logger: logger)
        let group = ServiceGroup(
            configuration: .init(services: [app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
