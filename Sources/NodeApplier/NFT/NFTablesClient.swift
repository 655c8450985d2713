/// A table's chains with their rule counts, and its sets: what the drift check compares. Rule
/// contents and elements are left out on purpose: libnftables can only list them by fetching every
/// element of the table (2 s and ~200 MB per 100k elements), while netlink dumps of chain, set and
/// rule headers fetch no elements at all. A rule added or deleted by hand changes a count; a rule
/// replaced in place by one of the same count goes unnoticed.
public struct NFTTableShape: Hashable, Sendable, CustomStringConvertible {
    /// Rules per chain.
    public var chains: [String: Int]
    public var sets: Set<String>

    public init(chains: [String: Int], sets: Set<String>) {
        self.chains = chains
        self.sets = sets
    }

    public init(_ table: NFTTable) {
        chains = table.chains.mapValues(\.rules.count)
        sets = Set(table.sets.keys)
    }

    public var description: String { "\(chains.count) chains, \(chains.values.reduce(0, +)) rules, \(sets.count) sets" }
}

public struct NFTError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}

/// The kernel's count of the nftables transactions it committed (nf_tables' generation id), in all
/// tables and families, whoever sent them: while it stays put, the ruleset is as it was.
public struct RulesetGeneration: Hashable, Sendable {
    public var id: UInt32

    public init(id: UInt32) { self.id = id }

    /// The generation the next commit makes (the kernel skips 0 when the count wraps).
    public var next: RulesetGeneration { RulesetGeneration(id: id == .max ? 1 : id + 1) }
}

/// The kernel side: applies transactions atomically and reports a table's shape.
/// `LibNFTables` talks to the kernel; `FakeNFTables` keeps the tables in memory for unit tests.
public protocol NFTablesClient: Sendable {
    /// Applies all operations or none; throws `NFTError` with the kernel's or parser's text.
    /// Consuming: a client may free a large transaction as soon as it has translated it.
    func apply(_ transaction: consuming NFTTransaction) throws
    /// The shape of `table` in `family`, or nil when the table does not exist. Drift checks read it
    /// while transactions may be applied on another thread.
    func shape(family: NFTFamily, table: String) throws -> NFTTableShape?
    /// The kernel tables of `table` (`KernelTables`) that exist in `family`.
    func kernelTables(family: NFTFamily, table: String) throws -> [String]
    /// The ruleset's generation now.
    func generation() throws -> RulesetGeneration
}
