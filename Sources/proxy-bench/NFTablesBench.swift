import ArgumentParser
import CMalloc
import Foundation
import GRPCCore
import Logging
import NodeApplier
import ProxyAPI
import ProxyGRPC
import ProxyModel

/// The node-applier against the real kernel, in network namespaces it creates and removes:
/// full programs, one-endpoint changes, stale UDP flow cleanup, the applier's RSS, and
/// first-connection latency.
struct NFTablesBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nftables", abstract: "node-applier benchmarks against the kernel, in network namespaces (needs root).")

    @OptionGroup var server: ServerOptions

    @Option(help: "Full-program sizes, SERVICES:ENDPOINTS_PER_SERVICE, comma-separated.")
    var sizes: String = "10000:10,50000:5"

    @Option(help: "The protocol of the full-program services' port (TCP, UDP or SCTP); UDP services' frontends are also kept for the stale-flow cleanup.")
    var serviceProtocol: L4Protocol = .tcp

    @Option(help: "One-endpoint changes measured at each size.")
    var changes: Int = 200

    @Option(help: "Dual-stack services programmed for the first-connection latency test (IPv4 and IPv6 connections).")
    var latencyServices: Int = 30000

    @Option(help: "Connections per target in each pass of the latency test.")
    var connections: Int = 1000

    @Option(help: "Passes of the latency test.")
    var passes: Int = 10

    @Option(help: "UDP conntrack flows for the stale-flow cleanup test (half of them to its UDP services); 0 skips it.")
    var conntrackFlows: Int = 100_000

    @Option(help: "UDP services (two endpoints each) in the stale-flow cleanup test.")
    var staleFlowServices: Int = 1000

    @Option(help: "Services (5 endpoints each) for the RSS of a real node-applier process; 0 skips it.")
    var rssServices: Int = 50000

    @Flag(help: .hidden) var inNamespace = false
    @Flag(help: .hidden) var connectionsOnly = false

    static let node = "kpbench-node"
    static let pod = "kpbench-pod"
    static let podAddress = "10.250.0.2"
    static let podAddress6 = "fd00:250::2"
    /// The node's own address, as on a node's uplink: outside the cluster CIDR (10.0.0.0/8), so the
    /// node's connections to service addresses (its default route) are masqueraded, as kube-proxy's are.
    static let nodeAddress = "192.168.250.1"
    static let nodeAddress6 = "fd00:ffff::1"
    /// A client pod behind the node (its own veth): its connections are routed by the node, as
    /// pod-to-service traffic is (prerouting and forward hooks).
    static let client = "kpbench-client"

    func validate() throws {
        guard connections > 0 else { throw ValidationError("--connections must be at least 1") }
        guard passes > 0 else { throw ValidationError("--passes must be at least 1") }
        guard staleFlowServices > 0 else { throw ValidationError("--stale-flow-services must be at least 1") }
    }

    func run() async throws {
        if connectionsOnly {
            for targets in ConnectTargets.families {
                print("    \(targets.family.rawValue):\n" + (try Self.compareConnects(targets.fromPod, connections, passes: passes)))
            }
            return
        }
        if inNamespace {
            // As node-applier does; it also keeps the live-heap figures (glibc's main arena) whole.
            Applier.configureHeap()
            try await measure()
            return
        }
        guard getuid() == 0 else { throw BenchError("needs root (network namespaces, nftables)") }
        try Self.teardown()
        defer { try? Self.teardown() }
        try Self.setUp()
        // Measure inside the node namespace: this binary again, in it.
        var arguments = ["netns", "exec", Self.node, CommandLine.arguments[0], "nftables", "--in-namespace"]
        arguments += ["--sizes", sizes, "--changes", "\(changes)", "--latency-services", "\(latencyServices)"]
        arguments += ["--connections", "\(connections)", "--passes", "\(passes)", "--rss-services", "\(rssServices)", "--server-binary", server.serverBinary]
        arguments += ["--conntrack-flows", "\(conntrackFlows)", "--stale-flow-services", "\(staleFlowServices)"]
        arguments += ["--service-protocol", serviceProtocol.rawValue]
        // The child prints the figures: let its output through.
        let status = try Self.tool("/usr/sbin/ip", arguments, passOutput: true).status
        if status != 0 { throw ExitCode(status) }
    }

    private static func setUp() throws {
        try ip(["netns", "add", node])
        try ip(["-n", node, "link", "set", "lo", "up"])
        try attach(pod, link: "kpb0", subnet: "10.250.0", subnet6: "fd00:250:0")
        try attach(client, link: "kpb1", subnet: "10.250.1", subnet6: "fd00:250:1")
        // Locally generated packets are routed before DNAT: the node needs a route for service addresses.
        try ip(["-n", node, "addr", "add", "\(nodeAddress)/32", "dev", "lo"])
        try ip(["-n", node, "route", "add", "default", "via", podAddress, "src", nodeAddress])
        try ip(["-n", node, "addr", "add", "\(nodeAddress6)/128", "dev", "lo", "nodad"])
        try ip(["-6", "-n", node, "route", "add", "default", "via", podAddress6, "src", nodeAddress6])
        try ip(["netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])
        // The pod: a TCP server (IPv4 and IPv6) that accepts and closes.
        let server = "import socket\ns=socket.socket(socket.AF_INET6);s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0)\n"
            + "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('::',8080));s.listen(4096)\nwhile True:\n c,_=s.accept();c.close()\n"
        _ = try ip(["netns", "exec", pod, "python3", "-c", server], wait: false)
    }

    /// A namespace behind the node on a veth of its own: the node is `<subnet>.1` and `<subnet6>::1`
    /// on `link`, the namespace `<subnet>.2` and `<subnet6>::2` on `eth0`, with its default routes
    /// through the node.
    private static func attach(_ namespace: String, link: String, subnet: String, subnet6: String) throws {
        try ip(["netns", "add", namespace])
        try ip(["-n", namespace, "link", "set", "lo", "up"])
        try ip(["link", "add", link, "netns", node, "type", "veth", "peer", "name", "eth0", "netns", namespace])
        try ip(["-n", node, "addr", "add", "\(subnet).1/24", "dev", link])
        try ip(["-n", node, "link", "set", link, "up"])
        try ip(["-n", namespace, "addr", "add", "\(subnet).2/24", "dev", "eth0"])
        try ip(["-n", namespace, "link", "set", "eth0", "up"])
        try ip(["-n", namespace, "route", "add", "default", "via", "\(subnet).1"])
        // No duplicate address detection: the addresses are usable at once.
        try ip(["-n", node, "addr", "add", "\(subnet6)::1/64", "dev", link, "nodad"])
        try ip(["-n", namespace, "addr", "add", "\(subnet6)::2/64", "dev", "eth0", "nodad"])
        try ip(["-6", "-n", namespace, "route", "add", "default", "via", "\(subnet6)::1"])
    }

    private static func teardown() throws {
        for namespace in [client, pod, node] {
            if FileManager.default.fileExists(atPath: "/run/netns/\(namespace)") {
                for pid in try ip(["netns", "pids", namespace]).output.split(separator: "\n") {
                    if let pid = Int32(pid) { kill(pid, SIGKILL) }
                }
                try ip(["netns", "del", namespace])
            }
        }
    }

    @discardableResult
    private static func ip(_ arguments: [String], wait: Bool = true) throws -> (status: Int32, output: String) {
        try tool("/usr/sbin/ip", arguments, wait: wait)
    }

    /// The applier's tables in the bench.
    private static let table = "kpbench"

    /// Removes the applier's tables (where they exist), so that the next full program is staged.
    private static func deleteTables() throws {
        for family in NFTFamily.allCases {
            for name in try LibNFTables().kernelTables(family: family, table: table) {
                if try nft(["delete", "table", family.rawValue, name]).status != 0 {
                    throw BenchError("nft delete table \(family.rawValue) \(name) failed")
                }
            }
        }
    }

    @discardableResult
    private static func nft(_ arguments: [String]) throws -> (status: Int32, output: String) { try tool("/usr/sbin/nft", arguments) }

    /// Runs a system tool; when waiting, returns its exit status and standard output (or lets the
    /// output through with `passOutput`). Captured runs discard standard error (polling a table
    /// that does not exist yet is expected to fail).
    private static func tool(_ path: String, _ arguments: [String], wait: Bool = true, passOutput: Bool = false) throws -> (
        status: Int32, output: String
    ) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        if wait, !passOutput {
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
        }
        try process.run()
        guard wait else { return (0, "") }
        let output = passOutput ? "" : String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    // MARK: inside the node namespace

    private func measure() async throws {
        let parsed = sizes.split(separator: ",").compactMap { pair -> (Int, Int)? in
            let parts = pair.split(separator: ":").compactMap { Int($0) }
            return parts.count == 2 ? (parts[0], parts[1]) : nil
        }
        let nft = try LibNFTables()
        let node = NodeConfig(
            nodeName: "node-0", nodeIPs: [IPAddress(Self.nodeAddress)!, IPAddress(Self.nodeAddress6)!],
            clusterCIDRs: [CIDR("10.0.0.0/8")!, CIDR("fd00:250::/32")!])
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        print("full program: services x endpoints (one \(serviceProtocol.rawValue) port each), snapshot -> rules in the kernel")
        print("  staged: into a kernel without the tables (node boot; after the tables were deleted)")
        print("  swapped: staged under the other generation's names next to the live tables, swapped in with the base chains")
        print("           (applier restart, resync over existing tables)")
        print("services  endpoints  staged run 1 s  run 2 s  run 3 s  swapped run 1 s  run 2 s  run 3 s  snapshot decode s")
        for (services, endpoints) in parsed {
            var runs: [Double] = []
            var decode = 0.0
            var applier: (Applier, ApplierMetrics)?
            for run in 0..<6 {
                if run < 3 { try Self.deleteTables() }
                let metrics = ApplierMetrics()
                let current = Applier(node: node, tableName: Self.table, nft: nft, metrics: metrics, logger: logger)
                let snapshot = Self.snapshot(services: services, endpoints: endpoints, revision: UInt64(run + 1), protocol: serviceProtocol)
                let decodeStart = ContinuousClock.now
                try await current.receive(snapshot)
                decode = (ContinuousClock.now - decodeStart).inSeconds
                let start = ContinuousClock.now
                guard case .applied = await current.sync() else { throw BenchError("full sync failed") }
                runs.append((ContinuousClock.now - start).inSeconds)
                applier = (current, metrics)
            }
            print(
                String(
                    format: "%8ld  %9ld  %14.3f  %7.3f  %7.3f  %15.3f  %7.3f  %7.3f  %17.3f", services, services * endpoints,
                    runs[0], runs[1], runs[2], runs[3], runs[4], runs[5], decode))
            try breakdown(services: services, endpoints: endpoints, node: node, nft: nft)
            if let (applier, metrics) = applier, changes > 0 {
                try await measureChanges(applier, metrics: metrics, services: services, endpoints: endpoints)
            }
        }
        if conntrackFlows > 0 { try await measureStaleFlows(nft: nft, node: node, logger: logger) }
        try await measureLatency(nft: nft, node: node, logger: logger)
        if rssServices > 0 { try await measureRSS() }
    }

    /// The stale UDP flow cleanup against the kernel's conntrack table: flows from this namespace
    /// to `staleFlowServices` UDP services (DNATed to one of two endpoints each) and as many to other UDP
    /// destinations; then every service loses one endpoint (every UDP flow is dumped), and then
    /// one service does (only the flows to its frontend are). Last, how long a change waits that
    /// arrives while a cleanup dumps every flow.
    private func measureStaleFlows(nft: LibNFTables, node: NodeConfig, logger: Logger) async throws {
        let services = staleFlowServices
        let applier = Applier(node: node, tableName: Self.table, nft: nft, conntrack: NetlinkConntrack(), logger: logger)
        var revision: UInt64 = 1
        try await applier.receive(
            .with {
                $0.snapshot = .with {
                    $0.revision = revision
                    $0.services = (0..<services).map { Self.udpService($0).wire }
                    $0.endpointSlices = (0..<services).map { Self.udpSlice($0, endpoints: [0, 1]).wire }
                }
            })
        guard case .applied = await applier.sync() else { throw BenchError("full sync failed") }
        await applier.removeStaleFlows()
        /// The slices of `changed` services with `endpoints`, as one delta: how long from its arrival
        /// until it is programmed.
        func change(_ endpoints: [Int], of changed: Range<Int>) async throws -> Duration {
            let start = ContinuousClock.now
            try await applier.receive(
                .with {
                    $0.delta = .with {
                        $0.fromRevision = revision
                        $0.toRevision = revision + 1
                        $0.upserts = changed.map { ProxyObject.endpointSlice(Self.udpSlice($0, endpoints: endpoints)).wire }
                    }
                })
            revision += 1
            guard case .applied = await applier.sync() else { throw BenchError("partial sync failed") }
            return ContinuousClock.now - start
        }
        /// `change`, then the cleanup: how many flows it deleted, and how long it took.
        func setEndpoints(_ endpoints: [Int], of changed: Range<Int> = 0..<services) async throws -> (Int, Duration) {
            _ = try await change(endpoints, of: changed)
            let start = ContinuousClock.now
            let deleted = await applier.removeStaleFlows()
            return (deleted, ContinuousClock.now - start)
        }
        // One socket per source port; each sends once to every destination: one flow each. Unanswered
        // UDP flows live 30 s, longer than this takes.
        let sockets = (0..<max(1, conntrackFlows / 2 / services)).map { _ in socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0) }
        defer { sockets.forEach { close($0) } }
        for fd in sockets {
            for index in 0..<services {
                try Self.send(fd, to: Self.udpClusterIP(index), port: 53)
                try Self.send(fd, to: IPAddress(Self.podAddress)!, port: UInt16(1024 + index % 64_000))
            }
        }
        let tracked = try String(contentsOfFile: "/proc/sys/net/netfilter/nf_conntrack_count", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let (deleted, cleanup) = try await setEndpoints([0])
        let (none, scan) = try await setEndpoints([0, 1])
        let (one, filtered) = try await setEndpoints([1], of: 0..<1)
        // A change that arrives while a cleanup reads every UDP flow (as after a full sync), and the
        // same kind of change with no cleanup running; ten rounds.
        var during: [Duration] = []
        var alone: [Duration] = []
        var fullCleanups: [Duration] = []
        for _ in 0..<10 {
            revision += 1
            try await applier.receive(
                .with {
                    $0.snapshot = .with {
                        $0.revision = revision
                        $0.services = (0..<services).map { Self.udpService($0).wire }
                        $0.endpointSlices = (0..<services).map { Self.udpSlice($0, endpoints: $0 == 0 ? [1] : [0, 1]).wire }
                    }
                })
            guard case .applied = await applier.sync() else { throw BenchError("full sync failed") }
            let cleanupStart = ContinuousClock.now
            let fullCleanup = Task { await applier.removeStaleFlows() }
            try await Task.sleep(for: .milliseconds(20))
            during.append(try await change([0], of: 1..<2))
            _ = await fullCleanup.value
            fullCleanups.append(ContinuousClock.now - cleanupStart)
            alone.append(try await change([0], of: 2..<3))
        }
        during.sort()
        alone.sort()
        fullCleanups.sort()
        print(
            "stale UDP flows, \(tracked) flows tracked (\(sockets.count * services) to \(services) UDP services):")
        print(
            String(
                format: "  every service loses one of two endpoints: %ld deleted in %.1f ms; nothing stale (%ld deleted): %.1f ms; "
                    + "one service loses one (its frontend's flows dumped): %ld deleted in %.2f ms",
                deleted, cleanup.milliseconds, none, scan.milliseconds, one, filtered.milliseconds))
        print(
            String(
                format: "  a change arriving 20 ms into a cleanup of every flow (10 rounds): programmed p50 %.1f ms, max %.1f ms "
                    + "after it arrived (the cleanups ran for p50 %.1f ms); with no cleanup running: p50 %.1f ms, max %.1f ms",
                percentile(during, 50).milliseconds, during.last!.milliseconds, percentile(fullCleanups, 50).milliseconds,
                percentile(alone, 50).milliseconds, alone.last!.milliseconds))
    }

    /// Sends one datagram from `fd` to `address`:`port`.
    private static func send(_ fd: Int32, to address: IPAddress, port: UInt16) throws {
        let sent = withSocketAddress(address, port) { sendto(fd, "x", 1, 0, $0, $1) }
        guard sent == 1 else { throw BenchError("sendto \(address):\(port): errno \(errno)") }
    }

    /// Calls `body` with the socket address of `address`:`port` and its length.
    private static func withSocketAddress<Result>(
        _ address: IPAddress, _ port: UInt16, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Result
    ) -> Result {
        switch address {
        case .v4(let value):
            var target = sockaddr_in()
            target.sin_family = sa_family_t(AF_INET)
            target.sin_port = port.bigEndian
            target.sin_addr.s_addr = value.bigEndian
            return withUnsafePointer(to: &target) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        case .v6(let value):
            var target = sockaddr_in6()
            target.sin6_family = sa_family_t(AF_INET6)
            target.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &target.sin6_addr) { bytes in
                for index in 0..<16 { bytes[index] = UInt8(truncatingIfNeeded: value >> (8 * (15 - index))) }
            }
            return withUnsafePointer(to: &target) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        }
    }

    /// Where a full program's time goes, phase by phase, through the same public APIs the applier
    /// uses, and what the state an applier keeps afterwards (cluster state, planner) holds in memory.
    private func breakdown(services: Int, endpoints: Int, node: NodeConfig, nft: LibNFTables) throws {
        // Staged, as after runs 1-3. The kernel frees a deleted table's elements in the background.
        try Self.deleteTables()
        let heapBefore = liveHeapMB()
        var clock = ContinuousClock.now
        func lap() -> Double {
            let now = ContinuousClock.now
            defer { clock = now }
            return (now - clock).inSeconds
        }
        var state = ClusterState(revision: 1, storeID: "")
        for index in 0..<services {
            state.insert(.service(Self.service(index, protocol: serviceProtocol)))
            state.insert(.endpointSlice(benchSliceModel(service: index, endpoints: endpoints, generation: 0, protocol: serviceProtocol)))
        }
        _ = lap()
        let heapState = liveHeapMB()
        // No affinity services here: one shard, as the applier would count.
        let shards = Layout.AffinityShards(for: 0)
        var contributions = Applier.derive(state, node: node, affinityShards: shards).contributions
        let derive = lap()
        let heapContributions = liveHeapMB()
        let (planner, transaction) = Planner.full(tableName: Self.table, node: node, affinityShards: shards, contributions: contributions)
        let plan = lap()
        contributions = [:]
        let heapPlanned = liveHeapMB()
        let elements = transaction.operations.reduce(0) { count, operation in
            guard case .replaceTable(let table) = operation else { return count }
            return count + table.elements.values.reduce(0) { $0 + $1.count }
        }
        // As the applier does: the transaction is handed over; without tables it is staged.
        try nft.apply(consume transaction)
        let total = lap()
        print(
            String(
                format: "  breakdown (%ld elements): node view + layout %.3f s, planner + table %.3f s, staged into the kernel %.3f s",
                elements, derive, plan, total))
        let heapKept = liveHeapMB()
        print(
            String(
                format: "  live heap: cluster state %.0f MB, contributions %.0f MB (freed before the program), planner %.0f MB, "
                    + "transaction %.0f MB (freed once staged) (%ld services)",
                heapState - heapBefore, heapContributions - heapState, heapKept - heapState,
                heapPlanned - heapKept, planner.serviceCount))
        withExtendedLifetime((state, planner)) {}
    }

    /// Bytes the process has allocated and not freed (glibc), in MB.
    private func liveHeapMB() -> Double {
        let info = mallinfo2()
        return Double(info.uordblks + info.hblkhd) / 1e6
    }

    /// Kinds of change, `changes` of each, one delta each: an endpoint of one slice replaced (the
    /// service keeps its endpoint count); one removed from as many services (the count changes; the
    /// verdict waits); every endpoint of a service removed, then added back; a service grown to 40
    /// endpoints and back, then to 100 and back; a new service; an endpoint replaced in a service
    /// with ClientIP affinity (`changes` services have it). Then the rehome that gives the waiting
    /// frontends the verdicts of their counts.
    private func measureChanges(_ applier: Applier, metrics: ApplierMetrics, services: Int, endpoints: Int) async throws {
        var revision = await applier.held.revision
        func apply(_ objects: ProxyObject...) async throws -> Duration {
            try await applier.receive(
                .with {
                    $0.delta = .with {
                        $0.fromRevision = revision
                        $0.toRevision = revision + 1
                        $0.upserts = objects.map(\.wire)
                    }
                })
            revision += 1
            let start = ContinuousClock.now
            guard case .applied = await applier.sync() else { throw BenchError("partial sync failed") }
            return ContinuousClock.now - start
        }
        func slice(_ service: Int, _ count: Int, _ change: Int) -> EndpointSlice {
            benchSliceModel(service: service, endpoints: count, generation: change + 1, protocol: serviceProtocol)
        }
        var replaced: [Duration] = []
        var counted: [Duration] = []
        var emptied: [Duration] = []
        var grown: [Duration] = []
        var large: [Duration] = []
        var created: [Duration] = []
        var affine: [Duration] = []
        // `changes` services get ClientIP affinity first (not measured), as some services of a cluster have it.
        for change in 0..<changes {
            var service = Self.service((change * 7919 + 4) % services, protocol: serviceProtocol)
            service.sessionAffinity = .clientIP(timeoutSeconds: SessionAffinity.defaultTimeoutSeconds)
            _ = try await apply(.service(service))
        }
        // As the daemon, with a drift check done: each sync then reads the ruleset generation after its commits.
        guard !(await applier.checkDrift()) else { throw BenchError("drift check found drift") }
        for change in 0..<changes {
            replaced.append(try await apply(.endpointSlice(slice((change * 7919) % services, endpoints, change))))
        }
        for change in 0..<changes {
            counted.append(try await apply(.endpointSlice(slice((change * 7919 + 1) % services, endpoints - 1, change))))
        }
        // Half the changes take a service's last endpoints away, the other half give them back.
        for change in 0..<changes {
            emptied.append(try await apply(.endpointSlice(slice((change / 2 * 7919 + 2) % services, change % 2 == 0 ? 0 : endpoints, change))))
        }
        // Half the changes give a service 40 endpoints (a large deployment), the other half take it back.
        for change in 0..<changes {
            grown.append(try await apply(.endpointSlice(slice((change / 2 * 7919 + 3) % services, change % 2 == 0 ? 40 : endpoints, change))))
        }
        // The same beyond the scan chains' 64 counts: slots in the large map at the count's power
        // of two (128), and the verdict waits for the rehome too.
        for change in 0..<changes {
            large.append(try await apply(.endpointSlice(slice((change / 2 * 7919 + 5) % services, change % 2 == 0 ? 100 : endpoints, change))))
        }
        for change in 0..<changes {
            let service = services + change
            created.append(try await apply(.service(Self.service(service, protocol: serviceProtocol)), .endpointSlice(slice(service, endpoints, 0))))
        }
        for change in 0..<changes {
            affine.append(try await apply(.endpointSlice(slice((change * 7919 + 4) % services, endpoints, change + 1))))
        }
        let away = await applier.awayFrontends
        let start = ContinuousClock.now
        await applier.rehome()
        let rehome = ContinuousClock.now - start
        guard await applier.awayFrontends == 0, !(await applier.needsSync) else { throw BenchError("rehome failed") }
        // The changes made by turns, each way apart: the two cost differently.
        func turn(_ samples: [Duration], _ parity: Int) -> [Duration] { samples.indices.filter { $0 % 2 == parity }.map { samples[$0] } }
        let kinds = [
            ("one endpoint replaced", replaced), ("one endpoint removed (the count changes)", counted),
            ("every endpoint of a service removed", turn(emptied, 0)), ("every endpoint of a service added back", turn(emptied, 1)),
            ("a service grown to 40 endpoints", turn(grown, 0)), ("a service back from 40 endpoints", turn(grown, 1)),
            ("a service grown to 100 endpoints", turn(large, 0)), ("a service back from 100 endpoints", turn(large, 1)),
            ("a new service with its endpoints", created),
            ("one endpoint replaced, ClientIP affinity", affine),
        ]
        for (kind, samples) in kinds {
            let sorted = samples.sorted()
            print(
                "change at \(services) services, \(kind) (\(samples.count) changes, one transaction each): p50 "
                    + String(format: "%.2f ms, p99 %.2f ms, max %.2f ms", percentile(sorted, 50).milliseconds, percentile(sorted, 99).milliseconds,
                        sorted.last!.milliseconds))
        }
        print(String(format: "  then their verdicts brought to their counts (%ld frontends, one transaction): %.1f ms", away, rehome.milliseconds))
        var duringListing = 0
        try await measureDriftChecks(applier, metrics: metrics) {
            duringListing += 1
            return try await apply(.endpointSlice(slice((duringListing * 7919 + 6) % services, endpoints, duringListing)))
        }
    }

    /// Drift checks: with the ruleset generation where the last check left it (the applier's own
    /// partial syncs since), and after another program committed (a table added and deleted), when
    /// the tables are listed. Then `change` (one endpoint replaced) while a listing runs: the
    /// listing is off the applier's executor, and the change does not wait for it.
    private func measureDriftChecks(_ applier: Applier, metrics: ApplierMetrics, change: () async throws -> Duration) async throws {
        func check(_ expected: String) async throws -> Duration {
            let before = Self.driftChecks(metrics, expected)
            let start = ContinuousClock.now
            guard !(await applier.checkDrift()) else { throw BenchError("drift check found drift") }
            let elapsed = ContinuousClock.now - start
            guard Self.driftChecks(metrics, expected) == before + 1 else { throw BenchError("drift check not \(expected)") }
            return elapsed
        }
        var unchanged: [Duration] = []
        var listed: [Duration] = []
        for _ in 0..<10 {
            unchanged.append(try await check("unchanged"))
            for action in ["add", "delete"] {
                guard try Self.nft([action, "table", "ip", "\(Self.table)-elsewhere"]).status == 0 else { throw BenchError("nft \(action) table failed") }
            }
            listed.append(try await check("matched"))
        }
        let tables = await applier.affinityShards.count
        print(
            "  drift check (\(tables) affinity table\(tables == 1 ? "" : "s") per family), 10 each: ruleset unchanged since the last "
                + String(format: "(after the partial syncs above) p50 %.3f ms; ", percentile(unchanged.sorted(), 50).milliseconds)
                + String(format: "after another program's commit (tables listed) p50 %.1f ms, max %.1f ms", percentile(listed.sorted(), 50).milliseconds,
                    listed.max()!.milliseconds))
        // Changes during listings they interrupted, and during listings that held syncs (after
        // `Applier.interruptionsBeforeHolding` interrupted in a row).
        var besideListing: [Duration] = []
        var heldByListing: [Duration] = []
        for _ in 0..<10 {
            let interrupted = Self.driftChecks(metrics, "interrupted")
            for action in ["add", "delete"] {
                guard try Self.nft([action, "table", "ip", "\(Self.table)-elsewhere"]).status == 0 else { throw BenchError("nft \(action) table failed") }
            }
            let check = Task { await applier.checkDrift() }
            // Into the listing (which takes milliseconds) before the change arrives.
            try await Task.sleep(for: .milliseconds(2))
            // From before the change is received: with the listing on the applier's executor it waited there.
            let start = ContinuousClock.now
            _ = try await change()
            let elapsed = ContinuousClock.now - start
            guard !(await check.value) else { throw BenchError("drift check found drift") }
            if Self.driftChecks(metrics, "interrupted") > interrupted { besideListing.append(elapsed) } else { heldByListing.append(elapsed) }
        }
        print(
            String(
                format: "  one endpoint replaced while a drift check lists the tables, 10 rounds: %ld listings interrupted by the change, which took p50 %.2f ms, max %.2f ms",
                besideListing.count, besideListing.isEmpty ? 0 : percentile(besideListing.sorted(), 50).milliseconds,
                besideListing.max()?.milliseconds ?? 0)
                + String(
                    format: "; %ld held syncs (after %ld interrupted in a row), the change waiting max %.2f ms", heldByListing.count,
                    Applier.interruptionsBeforeHolding, heldByListing.max()?.milliseconds ?? 0))
    }

    /// The count of drift checks with `result` so far.
    private static func driftChecks(_ metrics: ApplierMetrics, _ result: String) -> Int {
        let line = "kubeproxy_node_applier_drift_checks_total{result=\"\(result)\"} "
        let text = String(decoding: metrics.render(), as: UTF8.self)
        return text.split(separator: "\n").first { $0.hasPrefix(line) }.flatMap { Int($0.dropFirst(line.count)) } ?? 0
    }

    private func measureLatency(nft: LibNFTables, node: NodeConfig, logger: Logger) async throws {
        let applier = Applier(node: node, tableName: Self.table, nft: nft, logger: logger)
        var snapshot = Self.snapshot(services: latencyServices, endpoints: 5, revision: 1, dualStack: true)
        // One more service, dual-stack, backed by the pod.
        let families = ConnectTargets.families
        let target = Service(
            metadata: ObjectMeta(namespace: "bench", name: "target"), clusterIPs: families.map { IPAddress($0.clusterIP.address)! },
            ipFamilies: [.ipv4, .ipv6], ipFamilyPolicy: .requireDualStack, ports: [ServicePort(name: "http", port: 80)])
        snapshot.snapshot.services.append(target.wire)
        for targets in families {
            let pod = IPAddress(targets.direct.address)!
            let slice = EndpointSlice(
                metadata: ObjectMeta(namespace: "bench", name: "target-\(targets.family.rawValue.lowercased())"), serviceName: "target",
                addressType: targets.family,
                ports: [EndpointPort(name: "http", port: 8080)], endpoints: [Endpoint(addresses: [pod], nodeName: "node-1")])
            snapshot.snapshot.endpointSlices.append(slice.wire)
        }
        try await applier.receive(snapshot)
        guard case .applied = await applier.sync() else { throw BenchError("full sync failed") }
        // The pod's server was started with the namespaces; it may still be starting.
        for attempt in 1...50 {
            do {
                _ = try Self.connectTime(Self.podAddress, 8080)
                break
            } catch where attempt < 50 {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        // The floor any DNAT-based proxy pays: one hand-written DNAT rule to the pod, for an address
        // outside the service CIDR, in a table of its own. Its chain after ours translates connections
        // that crossed our chains as a direct one does (our lookups miss); the one before ours, those
        // that skip our nat chains (a translated packet skips later nat chains): the difference is what
        // our nat chains cost a new connection they do not translate. The third floor is the second
        // one masqueraded as well, as a client outside the cluster CIDR (the node) is by our rules.
        var commands: [[String]] = []
        for targets in families {
            let family = NFTFamily(targets.family).rawValue
            let pod = EndpointTarget(address: IPAddress(targets.direct.address)!, port: Int(targets.direct.port))
            commands += [
                ["add", "table", family, "kpbench-dnat"], ["add", "chain", family, "kpbench-dnat", "post", "{ type nat hook postrouting priority 100; }"],
                ["add", "rule", family, "kpbench-dnat", "post", "ct original \(family) daddr \(targets.masqueradedFloor.address) masquerade fully-random"],
            ]
            for (hook, name) in [("output", "out"), ("prerouting", "pre")] {
                for (priority, floors) in [(-95, [targets.floorAfter]), (-105, [targets.floorBefore, targets.masqueradedFloor])] {
                    let chain = "\(name)\(priority)"
                    commands.append(["add", "chain", family, "kpbench-dnat", chain, "{ type nat hook \(hook) priority \(priority); }"])
                    for floor in floors {
                        commands.append(["add", "rule", family, "kpbench-dnat", chain, "\(family) daddr \(floor.address) tcp dport 80 dnat to \(pod)"])
                    }
                }
            }
        }
        defer {
            for targets in families { _ = try? Self.nft(["delete", "table", NFTFamily(targets.family).rawValue, "kpbench-dnat"]) }
        }
        for command in commands where try Self.nft(command).status != 0 {
            throw BenchError("nft \(command.joined(separator: " ")) failed")
        }
        print(
            "first-connection latency, \(latencyServices + 1) dual-stack services programmed: \(passes) passes, each \(connections) rounds "
                + "of one connect to every target; per pass, each target's p50 over the direct p50 and minus it (medians over passes):")
        print("  from the node (output hook):")
        for targets in families {
            print("    \(targets.family.rawValue):\n" + (try Self.compareConnects(targets.fromNode, connections, passes: passes)))
        }
        print("  from a pod the node routes (prerouting):\n" + (try compareConnectsFromClient()))
    }

    /// The connection comparison from the client pod: this binary again, in its namespace.
    private func compareConnectsFromClient() throws -> String {
        let arguments = [
            "netns", "exec", Self.client, CommandLine.arguments[0], "nftables", "--connections-only", "--connections", "\(connections)",
            "--passes", "\(passes)",
        ]
        let (status, output) = try Self.tool("/usr/sbin/ip", arguments)
        guard status == 0 else { throw BenchError("connections from \(Self.client) failed (exit status \(status))") }
        return output.trimmingCharacters(in: .newlines)
    }

    typealias ConnectTarget = (label: String, address: String, port: UInt16)

    /// The latency test's destinations in one address family, all reaching the pod's server:
    /// directly, through the bench's ClusterIP, through the floor's rule after our chains and through
    /// the one before them; from the node also through that one masqueraded, as our rules masquerade
    /// a client outside the cluster CIDR (the node; not a pod).
    struct ConnectTargets {
        let family: IPFamily
        let direct, clusterIP, floorAfter, floorBefore, masqueradedFloor: ConnectTarget

        init(family: IPFamily, pod: String, clusterIP: String, floors: [String]) {
            self.family = family
            direct = ("direct to the pod", pod, 8080)
            self.clusterIP = ("our rules (ClusterIP \(clusterIP))", clusterIP, 80)
            floorAfter = ("one DNAT rule after our chains", floors[0], 80)
            floorBefore = ("one DNAT rule before our chains", floors[1], 80)
            masqueradedFloor = ("one DNAT rule before our chains, masqueraded", floors[2], 80)
        }

        var fromPod: [ConnectTarget] { [direct, clusterIP, floorAfter, floorBefore] }
        var fromNode: [ConnectTarget] { fromPod + [masqueradedFloor] }

        static let families = [
            ConnectTargets(family: .ipv4, pod: podAddress, clusterIP: "10.111.0.1", floors: ["10.120.0.1", "10.120.0.2", "10.120.0.3"]),
            ConnectTargets(family: .ipv6, pod: podAddress6, clusterIP: "fd00:10:96::ff01", floors: ["fd00:120::1", "fd00:120::2", "fd00:120::3"]),
        ]
    }

    /// `passes` passes of `connections` rounds, each round one connect to every target of `targets`
    /// (the first one direct). Per pass, each target's p50 over the direct p50 and minus it; then, over
    /// passes, the median, range and count over 1.1 of the ratios and the median of the differences.
    private static func compareConnects(_ targets: [ConnectTarget], _ connections: Int, passes: Int) throws -> String {
        var directP50s: [Duration] = []
        var ratios = [[Double]](repeating: [], count: targets.count)
        var differences = [[Duration]](repeating: [], count: targets.count)
        for _ in 0..<passes {
            var times = [[Duration]](repeating: [], count: targets.count)
            // Each round starts with another target, so none always follows the same one.
            for round in 0..<connections {
                for offset in 0..<targets.count {
                    let target = (round + offset) % targets.count
                    times[target].append(try connectTime(targets[target].address, targets[target].port))
                }
            }
            let p50s = times.map { percentile($0.sorted(), 50) }
            directP50s.append(p50s[0])
            for target in 1..<targets.count {
                ratios[target].append(p50s[target].inSeconds / p50s[0].inSeconds)
                differences[target].append(p50s[target] - p50s[0])
            }
        }
        var lines = [String(format: "    direct p50: %.1f us", percentile(directP50s.sorted(), 50).inSeconds * 1e6)]
        for target in 1..<targets.count {
            let sorted = ratios[target].sorted()
            lines.append(
                String(
                    format: "    %@: p50 ratio %.3f (%.3f-%.3f, over 1.1 in %ld of %ld passes), %+.1f us; per pass:",
                    targets[target].label, percentile(sorted, 50), sorted[0], sorted[sorted.count - 1],
                    sorted.filter { $0 > 1.1 }.count, sorted.count, percentile(differences[target].sorted(), 50).inSeconds * 1e6)
                    + ratios[target].map { String(format: " %.3f", $0) }.joined())
        }
        return lines.joined(separator: "\n")
    }

    /// Time until a TCP connection to address:port is established (blocking connect). The socket
    /// is closed with a reset. Closed the usual way, each connection stays tracked in TIME_WAIT for
    /// 120 s; from the node, whose connections all go from one address to the pod's one address
    /// and port, the tens of thousands of a run made every masqueraded connect slower as the run
    /// went on, as a masquerade picks a free source port at random (see BENCHMARKS.md).
    private static func connectTime(_ address: String, _ port: UInt16) throws -> Duration {
        guard let target = IPAddress(address) else { throw BenchError("not an IP address: \(address)") }
        let fd = socket(target.family == .ipv4 ? AF_INET : AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket: errno \(errno)") }
        defer { close(fd) }
        var reset = linger(l_onoff: 1, l_linger: 0)
        guard setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, socklen_t(MemoryLayout<linger>.size)) == 0 else {
            throw BenchError("SO_LINGER: errno \(errno)")
        }
        let (result, elapsed) = withSocketAddress(target, port) { address, length in
            let start = ContinuousClock.now
            let result = connect(fd, address, length)
            return (result, ContinuousClock.now - start)
        }
        guard result == 0 else { throw BenchError("connect \(address):\(port): errno \(errno)") }
        return elapsed
    }

    /// A real control-server and node-applier process in this namespace: the applier's resident
    /// memory once it has programmed `rssServices` services, and again after a run of partial syncs.
    private func measureRSS() async throws {
        let process = try await ServerProcess(binary: server.serverBinary)
        defer { process.stop() }
        let address = process.grpc
        let total = rssServices
        /// Writes `objects` through one connection, `perCall` objects per Apply.
        func apply(_ objects: [Kubeproxy_V1_Object], perCall: Int) async throws {
            try await withClient(address) { client in
                let registry = Kubeproxy_V1_Registry.Client(wrapping: client)
                for start in stride(from: 0, to: objects.count, by: perCall) {
                    let items = objects[start..<min(objects.count, start + perCall)]
                    _ = try await registry.apply(.with { $0.items = items.map { object in .with { $0.object = object } } })
                }
            }
        }
        try await apply((0..<total).flatMap { [benchService($0), benchSlice(service: $0, endpoints: 5, generation: 0)] }, perCall: 1000)
        let binary = URL(fileURLWithPath: server.serverBinary).deletingLastPathComponent().appendingPathComponent("node-applier").path
        let applier = Process()
        applier.executableURL = URL(fileURLWithPath: binary)
        // The namespace's own loopback: a fixed port cannot collide with anything outside it.
        let metricsPort = 10256
        applier.arguments = [
            "--server", "127.0.0.1:\(address.port)", "--node", "node-0", "--node-ip", Self.nodeAddress, "--table", "kpbench-rss",
            "--http-listen", "127.0.0.1:\(metricsPort)", "--log-level", "warning",
        ]
        applier.standardError = FileHandle.nullDevice
        try applier.run()
        defer {
            applier.terminate()
            applier.waitUntilExit()
            _ = try? Self.nft(["delete", "table", "ip", "kpbench-rss"])
            _ = try? Self.nft(["delete", "table", "ip6", "kpbench-rss"])
        }
        /// Waits until the applier reports the store's head revision applied (kernel took it, sync finished).
        func waitForHead() async throws -> Double {
            let head = try await process.metric("kubeproxy_store_head_revision")
            let start = ContinuousClock.now
            while ContinuousClock.now - start < .seconds(300) {
                let applied = try? await scrapeMetric(port: metricsPort, "kubeproxy_node_applier_applied_revision")
                if let applied, applied >= head { return (ContinuousClock.now - start).inSeconds }
                try await Task.sleep(for: .milliseconds(200))
            }
            throw BenchError("node-applier did not apply revision \(Int(head)) within 300 s")
        }
        func megabytes(_ field: String) throws -> Double { Double(try memoryBytes(of: applier.processIdentifier, field)) / 1e6 }
        let programmedAfter = try await waitForHead()
        let programmed = try megabytes("VmRSS")
        // The applier trims its heap on its drift-check cadence (10 s).
        let trimWait = Duration.seconds(11)
        try await Task.sleep(for: trimWait)
        print(
            "node-applier process holding \(total) services / \(total * 5) endpoints: "
                + String(
                    format: "programmed %.1f s after start, then RSS %.0f MB, after the next heap trim %.0f MB, peak %.0f MB",
                    programmedAfter, programmed, try megabytes("VmRSS"), try megabytes("VmHWM")))
        let changes = 200
        try await apply(
            (0..<changes).map { benchSlice(service: ($0 * 7919) % total, endpoints: 5, generation: $0 + 1) }, perCall: 1)
        _ = try await waitForHead()
        let afterChanges = try megabytes("VmRSS")
        try await Task.sleep(for: trimWait)
        print(
            String(
                format: "  after %ld one-endpoint changes (partial syncs): RSS %.0f MB, after the applier's next heap trim: %.0f MB",
                changes, afterChanges, try megabytes("VmRSS")))
    }

    // MARK: objects

    static func udpClusterIP(_ index: Int) -> IPAddress { .v4(0x0A70_0000 + UInt32(index) + 1) }

    static func udpService(_ index: Int) -> Service {
        Service(
            metadata: ObjectMeta(namespace: "bench", name: "dns-\(index)"), clusterIPs: [udpClusterIP(index)],
            ports: [ServicePort(name: "dns", protocol: .udp, port: 53, targetPort: .number(5353))])
    }

    /// UDP service `index`'s slice with some of its two endpoints (0 and 1).
    static func udpSlice(_ index: Int, endpoints: [Int]) -> EndpointSlice {
        EndpointSlice(
            metadata: ObjectMeta(namespace: "bench", name: "dns-\(index)-1"), serviceName: "dns-\(index)", addressType: .ipv4,
            ports: [EndpointPort(name: "dns", protocol: .udp, port: 5353)],
            endpoints: endpoints.map { Endpoint(addresses: [.v4(0x0A71_0000 + UInt32(index * 4 + $0))], nodeName: "node-\($0)") })
    }

    /// Bench service `index`: a ClusterIP in 10.96.0.0/12; dual-stack, also one in fd00:10:96::/112.
    static func service(_ index: Int, protocol: L4Protocol = .tcp, dualStack: Bool = false) -> Service {
        let ipv4 = IPAddress.v4(0x0A60_0000 + UInt32(index) + 1)
        return Service(
            metadata: ObjectMeta(namespace: "bench", name: "svc-\(index)"),
            clusterIPs: dualStack ? [ipv4, .v6(UInt128(0xfd00_0010_0096_0000) << 64 | UInt128(index + 1))] : [ipv4],
            ipFamilies: dualStack ? [.ipv4, .ipv6] : [], ipFamilyPolicy: dualStack ? .requireDualStack : .singleStack,
            ports: [ServicePort(name: "http", protocol: `protocol`, port: 80, targetPort: .number(8080))])
    }

    /// `services` bench services with `endpoints` endpoints each; dual-stack, with an IPv6 slice each too.
    static func snapshot(services: Int, endpoints: Int, revision: UInt64, protocol: L4Protocol = .tcp, dualStack: Bool = false)
        -> Kubeproxy_V1_ServerMessage
    {
        let families: [IPFamily] = dualStack ? [.ipv4, .ipv6] : [.ipv4]
        return .with {
            $0.snapshot = .with {
                $0.revision = revision
                $0.services = (0..<services).map { service($0, protocol: `protocol`, dualStack: dualStack).wire }
                $0.endpointSlices = families.flatMap { family in
                    (0..<services).map { benchSliceModel(service: $0, endpoints: endpoints, generation: 0, protocol: `protocol`, family: family).wire }
                }
            }
        }
    }
}

extension Duration {
    var inSeconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

/// `--service-protocol TCP|UDP|SCTP`, spelled as in a Service.
extension L4Protocol: ExpressibleByArgument {}
