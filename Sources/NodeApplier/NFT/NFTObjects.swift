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

/// Each family's table is two tables in the kernel: the objects whose names start with
/// `affinityPrefix` (the layout's ClientIP-affinity sets, maps and chains) live in
/// `<table>-affinity`, every other in `<table>`. Adding a rule, or a verdict element that jumps,
/// makes the kernel validate the whole table it goes to: at 50k services that walk takes 10–20 ms,
/// and a change to an affinity service adds rules. In a table of their own, affinity changes walk
/// only the affinity services. Objects reference only objects of their own kernel table.
public enum KernelTables {
    public static let affinityPrefix = "aff-"

    /// The kernel tables of `table`, in the order a script creates them.
    public static func names(_ table: String) -> [String] { [table, table + "-affinity"] }

    /// The kernel table that holds `object` (a set, map or chain, in any generation's name).
    public static func name(_ table: String, holding object: String) -> String { names(table)[index(holding: object)] }

    private static func index(holding object: String) -> Int { object.hasPrefix(affinityPrefix) ? 1 : 0 }

    /// `table` as the kernel holds it: one table per kernel table name, each with its objects.
    public static func split(_ table: consuming NFTTable) -> [NFTTable] {
        var parts = names(table.name).map { NFTTable(family: table.family, name: $0) }
        for (name, set) in table.sets { parts[index(holding: name)].sets[name] = set }
        for (name, chain) in table.chains { parts[index(holding: name)].chains[name] = chain }
        for name in Array(table.elements.keys) {
            parts[index(holding: name)].elements[name] = table.elements.removeValue(forKey: name)
        }
        return parts
    }
}

/// One step of a transaction. A transaction applies completely or not at all.
public enum NFTOperation: Hashable, Sendable {
    /// Replace the table atomically with `table` (creating it when missing).
    case replaceTable(NFTTable)
    /// Create the family's (empty) kernel tables when missing; leave them as they are otherwise.
    case addTable(NFTFamily)
    /// Delete the family's kernel tables.
    case deleteTable(NFTFamily)
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
