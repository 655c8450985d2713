import ProxyModel

/// What one service adds to one family's table: its own chains and dynamic sets, and elements of
/// the shared sets and maps.
public struct Contribution: Hashable, Sendable {
    public var chains: [String: NFTChain] = [:]
    public var sets: [String: NFTSetDefinition] = [:]
    public var elements: [String: [NFTTuple: NFTTuple]] = [:]

    public init() {}

    var isEmpty: Bool { chains.isEmpty && sets.isEmpty && elements.isEmpty }
}

/// The nftables layout (see DESIGN.md): a constant set of chains; service frontends
/// (`daddr . l4proto . dport`) dispatched through verdict maps to shared `pick-N` chains that pick
/// an endpoint slot at random from a map. Per-service chains only for ClientIP affinity (per-endpoint
/// dynamic sets) and loadBalancerSourceRanges firewalls.
///
/// ClientIP affinity has kernel tables of its own (`KernelTables`, `AffinityShards`), each with its
/// frontends' verdicts, its chains and sets, nat base chains that run after ours (a connection our
/// chains translated does not meet them), and a copy of the cluster CIDRs. Our chains mark affinity
/// frontends' connections for masquerade as any other's; they do not translate them (the frontends
/// are not in our maps).
///
/// A frontend with N endpoints keeps them in the slots `slotOffset(N) ..< slotOffset(N) + N` of its
/// protocol's slot map (N = 1: the single-endpoint map), so each count has a key space of its own.
/// Adding a verdict-map element that jumps makes the kernel validate the whole table, every element
/// of every verdict map (10–24 ms for one at 50k services), so an endpoint count change does not
/// touch the frontend's verdict: each `pick-N` chain (N ≤ `scanLimit`) falls through to its `scan` chain
/// (part of every table), which tries every count's slots in turn. The frontend's verdict is
/// brought to its new count later, in one transaction for every such frontend (`Planner.rehome`).
/// A frontend left with no endpoints (or no service) keeps its verdict too, until the rehome deletes
/// it: its slots are empty, so the scan misses, and the filter chains refuse the connection
/// (`no-endpoint-services`) or drop it (an unallocated service address). Endpoints coming back
/// before the rehome need no new verdict either.
/// A new frontend (a new service, or one that gained a frontend or its endpoints) gets no verdict
/// either: it waits in its map's plain pending set (`pending-service-ips`,
/// `pending-local-service-ips`), whose rules after the map send it to its protocol's scan chain,
/// until the rehome gives it its verdict. A connection the map does not take pays that one more
/// lookup.
/// Those `pick-N` chains (N ≤ `scanLimit`) are part of every table, as the scan chains are: adding
/// one later would make the kernel read every element of the slot map it looks up (~50 ms for the
/// 250k at 50k services) and validate the whole table.
///
/// Counts beyond `scanLimit` share a power of two `2^k` (the smallest not below the count): their
/// frontends keep their endpoints in the slots `2^k ..< 2^k + N` of the protocol's large slot map,
/// and their verdict is the static `pick-<proto>-upto-<2^k>` chain, which draws a slot below `2^k`
/// (`largeTries` times; a slot past the count misses), then one below `2^(k-1)` (always there),
/// and falls through to the scan as the others do. The scan tries each power's slots once, then
/// below its half. So a count change past 64 changes elements only, and the verdict waits for the
/// rehome as any other: with a `pick-N` chain per count, each such change validated the whole table
/// for the frontend's new verdict (5.4–5.9 ms at 50k services).
public enum Layout {
    public static let masqueradeMark: UInt32 = 0x4000
    /// The largest endpoint count with a `pick-N` chain, which the scan chains try in turn; a
    /// frontend waiting for its verdict pays one lookup per count the scan tries before its own.
    static let scanLimit = 64
    /// The powers of two of the counts beyond `scanLimit`, up to 2^18 (262,144: more pods than a
    /// Kubernetes cluster holds; a frontend with more endpoints gets the first 262,144).
    static let largePowers = 7...18
    /// How many draws below `2^k` a large pick chain makes before the one below `2^(k-1)`. Each
    /// hits with a probability over one half; all miss for fewer than 1 connection in 4,000.
    static let largeTries = 12

    /// The power of two of a count beyond `scanLimit`: the smallest `k` with `2^k` not below it.
    static func largePower(_ count: Int) -> Int { largePowers.first { 1 << $0 >= count } ?? largePowers.upperBound }

    /// The first slot of a frontend with `count` endpoints: the counts' slot ranges follow each other.
    static func slotOffset(_ count: Int) -> Int { count * (count - 1) / 2 }

    /// Where a `goto` verdict to a `pick-N` chain (N ≤ `scanLimit`) or to a scan chain leads: the
    /// `pick-N` chain (nil for a scan chain, part of every table) and the scan chain it ends in; nil
    /// for any other value. Two values with the same scan chain reach the same endpoints, whatever
    /// the count.
    static func pick(of value: NFTTuple) -> (chain: NFTChain?, scan: String)? {
        guard case .verdict(.goto(let name))? = value.values.first else { return nil }
        return staticPicks[name]
    }

    /// The plain set where `map`'s new frontends wait for their verdict, if it has one.
    static func pendingSet(of map: String) -> String? {
        switch map {
        case Name.serviceIPs: Name.pendingServiceIPs
        case Name.localServiceIPs: Name.pendingLocalServiceIPs
        default: nil
        }
    }

    private static let staticPicks: [String: (chain: NFTChain?, scan: String)] = {
        var picks: [String: (chain: NFTChain?, scan: String)] = [:]
        for set in [EndpointSet.cluster, .local] {
            for proto in L4Protocol.allCases {
                let scan = set.scanChain(proto)
                picks[scan] = (nil, scan)
                for count in 1...scanLimit {
                    let name = set.pickChain(proto, count)
                    picks[name] = (NFTChain(name: name, rules: [set.pick(proto, count), NFTRule([], [.verdict(.goto(scan))])]), scan)
                }
                for power in largePowers {
                    let name = set.largePickChain(proto, power)
                    let draws = Array(repeating: set.largePick(proto, power, below: power), count: largeTries)
                    let rules = draws + [set.largePick(proto, power, below: power - 1), NFTRule([], [.verdict(.goto(scan))])]
                    picks[name] = (NFTChain(name: name, rules: rules), scan)
                }
            }
        }
        return picks
    }()

    enum Name {
        static let clusterCIDRs = "cluster-cidrs"
        static let serviceCIDRs = "service-cidrs"
        static let clusterIPs = "cluster-ips"
        static let serviceIPs = "service-ips"
        static let pendingServiceIPs = "pending-service-ips"
        static let localServiceIPs = "local-service-ips"
        static let pendingLocalServiceIPs = "pending-local-service-ips"
        static let noEndpointServices = "no-endpoint-services"
        static let noLocalEndpointServices = "no-local-endpoint-services"
        static let firewallIPs = "firewall-ips"
        static let masqServices = "masq-services"
        static let externalLocal = "external-local"
        static let externalLocalNone = "external-local-none"
        static let hairpin = "hairpin"
        static let services = "services"
        static func affinityClusterCIDRs(_ shard: Int) -> String { KernelTables.affinityPrefix(shard: shard) + clusterCIDRs }
        static func affinityServiceIPs(_ shard: Int) -> String { KernelTables.affinityPrefix(shard: shard) + serviceIPs }
        static func affinityLocalServiceIPs(_ shard: Int) -> String { KernelTables.affinityPrefix(shard: shard) + localServiceIPs }
    }

    /// How many kernel tables ClientIP affinity is spread over (`KernelTables`), by a hash of the
    /// service name. An affinity change makes the kernel validate its whole table and look its sets
    /// up by name in a list of all of them: one change with all affinity services in one table took
    /// 1.1 ms p50 at 64 such services (10 endpoints each, 10k services), 4.2 ms at 256 and 40 ms at
    /// 1,000 (`proxy-bench nftables --changes N`); spread over tables of 64 on average, 1.6 ms at
    /// 512 and 1.9 ms at 1,000 (128 each: 3.9 and 4.3 ms). Each shard has nat base chains of its
    /// own, and a new connection our chains do not translate (one to no service, or to an affinity
    /// service) runs them all, so the count grows only with the affinity services: the fewest, a
    /// power of two, that keep `servicesPerShard` or fewer in each on average.
    public struct AffinityShards: Hashable, Sendable {
        public static let servicesPerShard = 64
        public let count: Int

        /// The shard count for `services` affinity services.
        public init(for services: Int) {
            var count = 1
            while count * Self.servicesPerShard < services { count *= 2 }
            self.count = count
        }

        /// Whether `services` affinity services keep this count: they fit, and not in a quarter of
        /// it (so that a count near a boundary does not reshard back and forth).
        public func fits(_ services: Int) -> Bool {
            services <= count * Self.servicesPerShard && (count == 1 || services > count * Self.servicesPerShard / 4)
        }

        /// The shard of `service`'s affinity chains and sets.
        func shard(of service: ServiceName) -> Int {
            Int(StableHash.value("\(service.namespace)/\(service.name)") % UInt64(count))
        }
    }

    /// Which endpoint set a frontend dispatches to; each has its own slot maps and pick chains.
    enum EndpointSet: String {
        case cluster, local

        private var prefix: String { self == .cluster ? "" : "local-" }
        /// The slot map of frontends with 2 to `scanLimit` endpoints.
        func slotMap(_ proto: L4Protocol) -> String { prefix + "backends-" + proto.keyword }
        /// The slot map of frontends with more.
        func largeMap(_ proto: L4Protocol) -> String { prefix + "backends-" + proto.keyword + "-large" }
        func singleMap(_ proto: L4Protocol) -> String { prefix + "single-backends-" + proto.keyword }
        func pickChain(_ proto: L4Protocol, _ count: Int) -> String { "\(prefix)pick-\(proto.keyword)-\(count)" }
        func largePickChain(_ proto: L4Protocol, _ power: Int) -> String { "\(prefix)pick-\(proto.keyword)-upto-\(1 << power)" }
        func scanChain(_ proto: L4Protocol) -> String { "\(prefix)scan-\(proto.keyword)" }

        /// The DNAT to one of a frontend's `count` endpoints (at most `scanLimit`).
        func pick(_ proto: L4Protocol, _ count: Int) -> NFTRule {
            count == 1
                ? NFTRule([], [.dnatFrontend(map: singleMap(proto))])
                : NFTRule([], [.dnatSlot(map: slotMap(proto), count: count, offset: Layout.slotOffset(count))])
        }

        /// The DNAT through a slot below `2^below` of a frontend with a count of power `power`
        /// (it misses where the count has no such slot).
        func largePick(_ proto: L4Protocol, _ power: Int, below: Int) -> NFTRule {
            NFTRule([], [.dnatSlot(map: largeMap(proto), count: 1 << below, offset: 1 << power)])
        }
    }

    /// The fixed part of a family's table: sets, maps and the chains every ruleset has.
    public static func baseTable(family: NFTFamily, name: String, node: NodeConfig, affinityShards: AffinityShards) -> NFTTable {
        var table = NFTTable(family: family, name: name)
        func set(_ name: String, _ type: NFTSetType) { table.sets[name] = NFTSetDefinition(name: name, type: type) }
        set(Name.clusterCIDRs, .address(interval: true))
        set(Name.serviceCIDRs, .address(interval: true))
        set(Name.clusterIPs, .address(interval: false))
        for map in [Name.serviceIPs, Name.localServiceIPs, Name.firewallIPs] { set(map, .frontendVerdictMap) }
        // Sets, not a verdict map with a jump to a REJECT chain: a service losing its last endpoint
        // adds no jump, so the kernel does not validate the whole table (see the type's comment).
        let frontendSets = [
            Name.masqServices, Name.externalLocal, Name.externalLocalNone, Name.noEndpointServices, Name.noLocalEndpointServices,
            Name.pendingServiceIPs, Name.pendingLocalServiceIPs,
        ]
        for frontends in frontendSets { set(frontends, .frontend) }
        set(Name.hairpin, .addressPair)
        for endpointSet in [EndpointSet.cluster, .local] {
            for proto in L4Protocol.allCases {
                set(endpointSet.slotMap(proto), .slotMap(proto))
                set(endpointSet.largeMap(proto), .slotMap(proto))
                set(endpointSet.singleMap(proto), .frontendMap(proto))
                // A frontend whose verdict waits for its new count: its pick chain misses and
                // falls through to the scan, which finds its slots whatever the count.
                let picks = (1...scanLimit).map { endpointSet.pickChain(proto, $0) } + largePowers.map { endpointSet.largePickChain(proto, $0) }
                for pick in picks { table.chains[pick] = staticPicks[pick]!.chain }
                let scan = endpointSet.scanChain(proto)
                let large = largePowers.flatMap { [endpointSet.largePick(proto, $0, below: $0), endpointSet.largePick(proto, $0, below: $0 - 1)] }
                table.chains[scan] = NFTChain(name: scan, rules: (1...scanLimit).map { endpointSet.pick(proto, $0) } + large)
            }
        }
        let clusterCIDRs = node.clusterCIDRs.filter { $0.family == family.ipFamily }
        table.elements[Name.clusterCIDRs] = Dictionary(uniqueKeysWithValues: clusterCIDRs.map { ([.cidr($0)], NFTTuple()) })
        table.elements[Name.serviceCIDRs] = Dictionary(
            uniqueKeysWithValues: node.serviceCIDRs.filter { $0.family == family.ipFamily }.map { ([.cidr($0)], NFTTuple()) })

        let new = NFTMatch.ctStateNew
        let offCluster = NFTMatch.saddrIn(set: Name.clusterCIDRs, negated: true)
        let mark = NFTStatement.markOr(masqueradeMark)
        func chain(_ name: String, _ hook: NFTHook?, _ rules: [NFTRule]) {
            table.chains[name] = NFTChain(name: name, hook: hook, rules: rules)
        }
        func chain(_ name: String, _ rules: [NFTRule]) { chain(name, nil, rules) }
        // Arriving traffic (not the node's own) to a Local-policy frontend without local endpoints is dropped.
        chain(
            "filter-prerouting", NFTHook(.filter, .prerouting, priority: -110),
            [
                NFTRule([new], [.verdict(.jump("firewall-check"))]),
                NFTRule([new, offCluster, .frontendIn(set: Name.externalLocalNone)], [.verdict(.drop)]),
            ])
        chain("firewall-check", [NFTRule([], [.frontendVerdictMap(Name.firewallIPs)])])
        chain("filter-input", NFTHook(.filter, .input, priority: -110), [NFTRule([new], [.verdict(.jump("service-endpoints-check"))])])
        chain(
            "filter-forward", NFTHook(.filter, .forward, priority: -110),
            [
                NFTRule([new], [.verdict(.jump("service-endpoints-check"))]),
                NFTRule([new], [.verdict(.jump("cluster-ips-check"))]),
            ])
        // Locally generated packets meet the output hook before DNAT (-100): ClusterIP checks wait until after it.
        chain(
            "filter-output", NFTHook(.filter, .output, priority: -110),
            [
                NFTRule([new], [.verdict(.jump("service-endpoints-check"))]),
                NFTRule([new], [.verdict(.jump("firewall-check"))]),
            ])
        chain("filter-output-post-dnat", NFTHook(.filter, .output, priority: -90), [NFTRule([new], [.verdict(.jump("cluster-ips-check"))])])
        chain(
            "service-endpoints-check",
            [
                NFTRule([.frontendIn(set: Name.noEndpointServices)], [.reject]),
                NFTRule([.frontendIn(set: Name.noLocalEndpointServices)], [.verdict(.drop)]),
            ])
        chain(
            "cluster-ips-check",
            [
                NFTRule([.daddrIn(set: Name.clusterIPs)], [.reject]),
                NFTRule([.daddrIn(set: Name.serviceCIDRs)], [.verdict(.drop)]),
            ])
        /// A map, then its pending frontends to their protocol's scan chain (the protocol first: a
        /// packet does one set lookup, in the rule of its protocol).
        func dispatch(_ map: String, _ endpointSet: EndpointSet) -> [NFTRule] {
            [NFTRule([], [.frontendVerdictMap(map)])]
                + L4Protocol.allCases.map { proto in
                    NFTRule([.l4proto(proto), .frontendIn(set: pendingSet(of: map)!)], [.verdict(.goto(endpointSet.scanChain(proto)))])
                }
        }
        // A chain of its own, so that connections from inside the cluster pay one lookup for it. A
        // connection it does not translate goes on to `services`: a Local frontend's only when no
        // local endpoint is left, and filter-prerouting dropped those (`external-local-none`).
        chain(
            "nat-prerouting", NFTHook(.nat, .prerouting, priority: -100),
            [
                NFTRule([offCluster], [.verdict(.jump("off-cluster-services"))]),
                NFTRule([], [.verdict(.jump(Name.services))]),
            ])
        chain("off-cluster-services", dispatch(Name.localServiceIPs, .local))
        chain(
            "nat-output", NFTHook(.nat, .output, priority: -100),
            [
                NFTRule([.frontendIn(set: Name.externalLocal)], [mark]),
                NFTRule([], [.verdict(.jump(Name.services))]),
            ])
        var services: [NFTRule] = []
        // ClusterIP traffic is marked from every source with `--masquerade-all`, else from outside
        // the pod networks; without any in this family, not at all (as kube-proxy without a
        // local-traffic detector).
        if node.masqueradeAll {
            services.append(NFTRule([.daddrIn(set: Name.clusterIPs)], [mark]))
        } else if !clusterCIDRs.isEmpty {
            services.append(NFTRule([.daddrIn(set: Name.clusterIPs), offCluster], [mark]))
        }
        services.append(NFTRule([.frontendIn(set: Name.masqServices)], [mark]))
        chain(Name.services, services + dispatch(Name.serviceIPs, .cluster))
        // ClientIP affinity (tables of its own): what our chains left untranslated, as they dispatch.
        for shard in 0..<affinityShards.count {
            let prefix = KernelTables.affinityPrefix(shard: shard)
            set(Name.affinityClusterCIDRs(shard), .address(interval: true))
            table.elements[Name.affinityClusterCIDRs(shard)] = table.elements[Name.clusterCIDRs]
            for map in [Name.affinityServiceIPs(shard), Name.affinityLocalServiceIPs(shard)] { set(map, .frontendVerdictMap) }
            chain(
                prefix + "nat-prerouting", NFTHook(.nat, .prerouting, priority: -99),
                [
                    NFTRule(
                        [.saddrIn(set: Name.affinityClusterCIDRs(shard), negated: true)],
                        [.frontendVerdictMap(Name.affinityLocalServiceIPs(shard))]),
                    NFTRule([], [.frontendVerdictMap(Name.affinityServiceIPs(shard))]),
                ])
            chain(prefix + "nat-output", NFTHook(.nat, .output, priority: -99), [NFTRule([], [.frontendVerdictMap(Name.affinityServiceIPs(shard))])])
        }
        chain(
            "nat-postrouting", NFTHook(.nat, .postrouting, priority: 100),
            [
                NFTRule([.ctStatusDNAT, .addressPairIn(set: Name.hairpin)], [.masquerade]),
                NFTRule([.markClear(masqueradeMark)], [.return]),
                NFTRule([], [.markXor(masqueradeMark), .masquerade]),
            ])
        return table
    }

    /// The contribution of one service (all its ports), per family.
    public static func contribution(of views: [ServicePortView], affinityShards: AffinityShards) -> [NFTFamily: Contribution] {
        var result: [NFTFamily: Contribution] = [:]
        for view in views {
            add(view, to: &result[NFTFamily(view.family), default: Contribution()], affinityShards: affinityShards)
        }
        return result
    }

    private static func add(_ view: ServicePortView, to contribution: inout Contribution, affinityShards: AffinityShards) {
        let proto = view.port.protocol
        func frontend(_ address: IPAddress, _ port: Int) -> NFTTuple {
            NFTTuple().appending(.address(address)).appending(.proto(proto)).appending(.port(port))
        }
        func target(_ endpoint: EndpointTarget) -> NFTTuple {
            NFTTuple().appending(.address(endpoint.address)).appending(.port(endpoint.port))
        }
        func element(_ set: String, _ key: NFTTuple, _ value: NFTTuple = NFTTuple()) {
            contribution.elements[set, default: [:]][key] = value
        }
        // An affinity frontend's verdict names a chain of its shard's table: it goes in that table's
        // maps. Only affinity services hash their names (every full program derives every service).
        let shard = view.affinityTimeoutSeconds == nil ? 0 : affinityShards.shard(of: view.service)
        let (serviceIPs, localServiceIPs) =
            view.affinityTimeoutSeconds == nil
            ? (Name.serviceIPs, Name.localServiceIPs) : (Name.affinityServiceIPs(shard), Name.affinityLocalServiceIPs(shard))

        /// Where a frontend's packets go for `endpoints`; nil when there are none.
        /// Slot maps and pick chains come from `set`; an affinity chain is shared per `affinity` set.
        func dispatch(_ frontend: NFTTuple, to endpoints: [EndpointTarget], set: EndpointSet, affinity: EndpointSet? = nil)
            -> NFTVerdict?
        {
            guard !endpoints.isEmpty else { return nil }
            if let timeout = view.affinityTimeoutSeconds {
                let portID = "\(view.service.namespace)/\(view.service.name)/\(proto.rawValue)/\(view.port.port)"
                let chain = KernelTables.affinityPrefix(shard: shard) + StableHash.hex("\(portID)/\((affinity ?? set).rawValue)")
                if contribution.chains[chain] == nil { addAffinityChain(chain, endpoints: endpoints, timeout: timeout, proto: proto) }
                return .goto(chain)
            }
            let count = endpoints.count
            if count == 1 {
                element(set.singleMap(proto), frontend, target(endpoints[0]))
                return .goto(set.pickChain(proto, count))
            }
            if count <= Layout.scanLimit {
                let offset = Layout.slotOffset(count)
                for (slot, endpoint) in endpoints.enumerated() {
                    element(set.slotMap(proto), frontend.appending(.integer(offset + slot)), target(endpoint))
                }
                return .goto(set.pickChain(proto, count))
            }
            let power = Layout.largePower(count)
            for (slot, endpoint) in endpoints.prefix(1 << power).enumerated() {
                element(set.largeMap(proto), frontend.appending(.integer((1 << power) + slot)), target(endpoint))
            }
            return .goto(set.largePickChain(proto, power))
        }

        func addAffinityChain(_ name: String, endpoints: [EndpointTarget], timeout: Int, proto: L4Protocol) {
            var rules: [NFTRule] = []
            var targets: [String] = []
            for endpoint in endpoints {
                let endpointChain = "\(name)-\(StableHash.hex(endpoint.description))"
                contribution.sets[endpointChain] = NFTSetDefinition(
                    name: endpointChain, type: .address(interval: false), dynamicTimeoutSeconds: timeout)
                contribution.chains[endpointChain] = NFTChain(
                    name: endpointChain,
                    rules: [
                        NFTRule([], [.updateSaddr(set: endpointChain)]),
                        NFTRule([.l4proto(proto)], [.dnat(endpoint.address, port: endpoint.port)]),
                    ])
                rules.append(NFTRule([.saddrIn(set: endpointChain, negated: false)], [.verdict(.goto(endpointChain))]))
                targets.append(endpointChain)
            }
            rules.append(NFTRule([], [.randomGoto(targets)]))
            contribution.chains[name] = NFTChain(name: name, rules: rules)
        }

        // ClusterIP: internalTrafficPolicy decides the endpoint set.
        let clusterFrontend = frontend(view.clusterIP, view.port.port)
        element(Name.clusterIPs, NFTTuple().appending(.address(view.clusterIP)))
        let internalSet: EndpointSet = view.internalPolicyLocal ? .local : .cluster
        if let verdict = dispatch(clusterFrontend, to: view.internalEndpoints, set: .cluster, affinity: internalSet) {
            element(serviceIPs, clusterFrontend, .verdict(verdict))
        } else {
            // No endpoints at all: refuse at once. Endpoints elsewhere but none here (Local policy): drop.
            element(view.clusterEndpoints.isEmpty ? Name.noEndpointServices : Name.noLocalEndpointServices, clusterFrontend)
        }
        for endpoint in view.localEndpoints {
            element(Name.hairpin, NFTTuple().appending(.address(endpoint.address)).appending(.address(endpoint.address)))
        }

        // External frontends: externalIPs, LoadBalancer IPs, NodePorts on the node's addresses.
        var externals = (view.externalIPs + view.loadBalancerIPs).map { frontend($0, view.port.port) }
        if let nodePort = view.port.nodePort { externals += view.nodePortIPs.map { frontend($0, nodePort) } }
        for external in externals {
            if let verdict = dispatch(external, to: view.clusterEndpoints, set: .cluster) {
                element(serviceIPs, external, .verdict(verdict))
            } else {
                element(Name.noEndpointServices, external)
            }
            if view.externalPolicyLocal {
                element(Name.externalLocal, external)
                if let verdict = dispatch(external, to: view.localEndpoints, set: .local) {
                    element(localServiceIPs, external, .verdict(verdict))
                } else if !view.clusterEndpoints.isEmpty {
                    element(Name.externalLocalNone, external)
                }
            } else {
                element(Name.masqServices, external)
            }
        }
        if let ranges = view.loadBalancerSourceRanges, !view.loadBalancerIPs.isEmpty {
            let chain = "fw-\(StableHash.hex("\(view.service)/\(view.family.rawValue)"))"
            contribution.chains[chain] = NFTChain(name: chain, rules: [NFTRule([.saddrInRanges(ranges, negated: true)], [.verdict(.drop)])])
            for address in view.loadBalancerIPs {
                element(Name.firewallIPs, frontend(address, view.port.port), .verdict(.goto(chain)))
            }
        }
    }
}

/// FNV-1a, 64 bits: stable across processes (Swift's `Hasher` is seeded per process), for chain names.
enum StableHash {
    static func value(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return hash
    }

    static func hex(_ text: String) -> String {
        let digits = String(value(text), radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
