import ProxyModel

/// The address families the applier programs: one table each.
public enum NFTFamily: String, Hashable, Sendable, CaseIterable, Comparable {
    case ip
    case ip6

    public init(_ family: IPFamily) { self = family == .ipv4 ? .ip : .ip6 }

    public var ipFamily: IPFamily { self == .ip ? .ipv4 : .ipv6 }
    /// The payload keyword for addresses (`ip saddr` / `ip6 saddr`).
    var addressKeyword: String { rawValue }
    var addressType: String { self == .ip ? "ipv4_addr" : "ipv6_addr" }

    public static func < (lhs: NFTFamily, rhs: NFTFamily) -> Bool { lhs.rawValue < rhs.rawValue }
}

extension L4Protocol {
    /// nft's name of the protocol (`tcp`, `udp`, `sctp`); also part of set and chain names.
    var keyword: String {
        switch self {
        case .tcp: "tcp"
        case .udp: "udp"
        case .sctp: "sctp"
        }
    }
}

public enum NFTVerdict: Hashable, Sendable {
    case accept
    case drop
    case jump(String)
    case goto(String)
}

/// One component of a set element (keys are concatenations of these).
public enum NFTValue: Hashable, Sendable {
    case address(IPAddress)
    case cidr(CIDR)
    case proto(L4Protocol)
    case port(Int)
    case integer(Int)
    case verdict(NFTVerdict)
}

/// A set or map element: `key` is a concatenation; `value` is empty for plain sets.
public struct NFTElement: Hashable, Sendable {
    public var key: NFTTuple
    public var value: NFTTuple

    public init(key: NFTTuple, value: NFTTuple = NFTTuple()) {
        self.key = key
        self.value = value
    }
}

/// The shapes of set keys the layout uses.
public enum NFTSetType: Hashable, Sendable {
    /// `daddr . l4proto . dport`: one service frontend.
    case frontend
    /// `daddr . l4proto . dport . slot` → `address . port` (the endpoint slot maps), one per protocol.
    case slotMap(L4Protocol)
    /// `daddr . l4proto . dport` → `address . port` (single-endpoint services), one per protocol.
    case frontendMap(L4Protocol)
    /// Addresses; `interval` for CIDRs.
    case address(interval: Bool)
    /// `saddr . daddr` pairs.
    case addressPair
    /// `frontend` → verdict.
    case frontendVerdictMap
}

public struct NFTSetDefinition: Hashable, Sendable {
    public var name: String
    public var type: NFTSetType
    /// For sets filled by the packet path (`update @set`): entries expire after this many seconds.
    public var dynamicTimeoutSeconds: Int?

    public init(name: String, type: NFTSetType, dynamicTimeoutSeconds: Int? = nil) {
        self.name = name
        self.type = type
        self.dynamicTimeoutSeconds = dynamicTimeoutSeconds
    }

    /// Interval sets hold CIDRs (ranges of keys).
    public var isInterval: Bool { type == .address(interval: true) }

    public var isMap: Bool {
        switch type {
        case .slotMap, .frontendMap, .frontendVerdictMap: true
        case .frontend, .address, .addressPair: false
        }
    }
}

/// A base chain's attachment to a netfilter hook.
public struct NFTHook: Hashable, Sendable {
    public enum ChainType: String, Hashable, Sendable { case filter, nat }
    public enum Hook: String, Hashable, Sendable { case prerouting, input, forward, output, postrouting }

    public var type: ChainType
    public var hook: Hook
    public var priority: Int

    public init(_ type: ChainType, _ hook: Hook, priority: Int) {
        self.type = type
        self.hook = hook
        self.priority = priority
    }
}

/// Conditions of a rule; all must match.
public enum NFTMatch: Hashable, Sendable {
    case ctStateNew
    /// `ct status dnat`: the connection was destination-NATed.
    case ctStatusDNAT
    case daddrIn(set: String)
    case saddrIn(set: String, negated: Bool)
    /// `daddr . l4proto . dport @set`.
    case frontendIn(set: String)
    /// `saddr . daddr @set`.
    case addressPairIn(set: String)
    case saddrInRanges([CIDR], negated: Bool)
    case l4proto(L4Protocol)
    /// `meta mark & mask == 0`.
    case markClear(UInt32)
}

public enum NFTStatement: Hashable, Sendable {
    case verdict(NFTVerdict)
    case reject
    /// `daddr . l4proto . dport vmap @map`.
    case frontendVerdictMap(String)
    /// `dnat to daddr . l4proto . dport . numgen random mod count offset offset map @map`: one of
    /// the slots `offset ..< offset + count` of a frontend.
    case dnatSlot(map: String, count: Int, offset: Int)
    /// `dnat to daddr . l4proto . dport map @map`: the one endpoint of a frontend.
    case dnatFrontend(map: String)
    case dnat(IPAddress, port: Int)
    /// `numgen random mod chains.count vmap { i : goto chains[i] }`.
    case randomGoto([String])
    case markOr(UInt32)
    case markXor(UInt32)
    case masquerade
    /// `update @set { saddr }`.
    case updateSaddr(set: String)
    case `return`
}

public struct NFTRule: Hashable, Sendable {
    public var matches: [NFTMatch]
    public var statements: [NFTStatement]

    public init(_ matches: [NFTMatch] = [], _ statements: [NFTStatement]) {
        self.matches = matches
        self.statements = statements
    }
}

public struct NFTChain: Hashable, Sendable {
    public var name: String
    public var hook: NFTHook?
    public var rules: [NFTRule]

    public init(name: String, hook: NFTHook? = nil, rules: [NFTRule]) {
        self.name = name
        self.hook = hook
        self.rules = rules
    }
}

/// The complete contents of one family's table (two in the kernel: `KernelTables`).
public struct NFTTable: Hashable, Sendable {
    public var family: NFTFamily
    public var name: String
    public var sets: [String: NFTSetDefinition] = [:]
    public var chains: [String: NFTChain] = [:]
    /// Elements per set or map, keyed by the element key.
    public var elements: [String: [NFTTuple: NFTTuple]] = [:]

    public init(family: NFTFamily, name: String) {
        self.family = family
        self.name = name
    }
}

/// Each family's table is several tables in the kernel: the objects whose names start with an
/// affinity prefix (the layout's ClientIP-affinity sets, maps and chains) live in an affinity table,
/// every other in `<table>`. Adding a rule, or a verdict element that jumps, makes the kernel
/// validate the whole table it goes to: at 50k services that walk takes 10–20 ms, and a change to
/// an affinity service adds rules. In tables of their own, affinity changes walk only the affinity
/// services of one table. Objects reference only objects of their own kernel table.
///
/// The affinity services are spread over shards (`Layout.AffinityShards`): shard 0's objects are
/// named `aff-…` and live in `<table>-affinity`, shard k's are named `aff<k>-…` and live in
/// `<table>-affinity-<k>`.
public enum KernelTables {
    /// The prefix of the names of affinity shard `shard`'s objects.
    public static func affinityPrefix(shard: Int) -> String { shard == 0 ? "aff-" : "aff\(shard)-" }

    /// The kernel table of affinity shard `shard`.
    public static func affinityTable(_ table: String, shard: Int) -> String {
        shard == 0 ? table + "-affinity" : "\(table)-affinity-\(shard)"
    }

    /// The kernel table that holds `object` (a set, map or chain, in any generation's name).
    public static func name(_ table: String, holding object: String) -> String {
        shard(holding: object).map { affinityTable(table, shard: $0) } ?? table
    }

    /// Whether `kernelTable` is one of `table`'s kernel tables (of any shard count).
    public static func isOurs(_ kernelTable: String, of table: String) -> Bool {
        guard kernelTable != table, kernelTable != table + "-affinity" else { return true }
        let shard = kernelTable.dropFirst(table.count + "-affinity-".count)
        return kernelTable.hasPrefix(table + "-affinity-") && !shard.isEmpty && shard.allSatisfy(\.isASCIIDigit)
    }

    /// The affinity shard of `object`; nil for the main table's objects.
    private static func shard(holding object: String) -> Int? {
        guard object.hasPrefix("aff") else { return nil }
        let rest = object.dropFirst(3)
        let digits = rest.prefix(while: \.isASCIIDigit)
        guard rest.dropFirst(digits.count).first == "-" else { return nil }
        return digits.isEmpty ? 0 : Int(digits)
    }

    /// The kernel tables that hold `table`'s objects: the main table first, then the affinity
    /// shards', by shard (as `split` orders them).
    public static func names(of table: borrowing NFTTable) -> [String] {
        let shards = Set(table.sets.keys.compactMap(shard(holding:))).union(table.chains.keys.compactMap(shard(holding:)))
        return [table.name] + shards.sorted().map { affinityTable(table.name, shard: $0) }
    }

    /// `table` as the kernel holds it: the main table first, then each affinity shard that holds
    /// anything, by shard.
    public static func split(_ table: consuming NFTTable) -> [NFTTable] {
        var parts: [Int: NFTTable] = [:]
        func part(_ object: String) -> Int {
            let shard = shard(holding: object) ?? -1
            if parts[shard] == nil {
                parts[shard] = NFTTable(family: table.family, name: shard < 0 ? table.name : affinityTable(table.name, shard: shard))
            }
            return shard
        }
        _ = part("")
        for (name, set) in table.sets { parts[part(name)]!.sets[name] = set }
        for (name, chain) in table.chains { parts[part(name)]!.chains[name] = chain }
        for name in Array(table.elements.keys) {
            parts[part(name)]!.elements[name] = table.elements.removeValue(forKey: name)
        }
        return parts.sorted { $0.key < $1.key }.map(\.value)
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}

/// One step of a transaction. A transaction applies completely or not at all.
public enum NFTOperation: Hashable, Sendable {
    /// Replace the table atomically with `table` (creating it when missing).
    case replaceTable(NFTTable)
    /// Create a kernel table (`KernelTables`) when missing; leave it as it is otherwise.
    case addTable(NFTFamily, String)
    /// Delete a kernel table with everything in it.
    case deleteTable(NFTFamily, String)
    case addSet(NFTFamily, NFTSetDefinition)
    case deleteSet(NFTFamily, String)
    /// Create an empty chain (so that rules of the same transaction can jump to it).
    case addChain(NFTFamily, String)
    /// Create a chain, or replace the rules of an existing one.
    case defineChain(NFTFamily, NFTChain)
    /// Remove every rule of a chain (what references sets and other chains).
    case flushChain(NFTFamily, String)
    case deleteChain(NFTFamily, String)
    case addElements(NFTFamily, set: String, [NFTElement])
    case deleteElements(NFTFamily, set: String, [NFTElement])
}

public struct NFTTransaction: Hashable, Sendable {
    public var table: String
    public var operations: [NFTOperation]

    public init(table: String, operations: [NFTOperation] = []) {
        self.table = table
        self.operations = operations
    }

    public var isEmpty: Bool { operations.isEmpty }
}
