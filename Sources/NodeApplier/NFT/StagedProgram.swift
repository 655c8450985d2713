/// A whole ruleset, programmed in steps of which packets only ever meet the last:
/// 1. `prepare` (libnftables, one transaction) removes what a failed earlier program left behind;
/// 2. `skeleton` (one transaction) adds every set, map and regular chain, and the elements of
///    interval sets, but no base chain;
/// 3. `elements` (every other set's and map's) go in as netlink batches (`NetlinkElements`);
/// 4. `hooks` (one transaction) adds the base chains, and removes the ruleset they replace: the
///    complete new ruleset takes effect at once.
/// When step 3 or 4 fails, `rollback` removes what steps 2 and 3 added and leaves the packet path
/// as it was.
///
/// Two forms:
/// - `fresh`, where none of our chains is hooked (node boot, tables deleted, a failed program):
///   the skeleton replaces the tables; generation `a`.
/// - `swap`, over a live ruleset (applier restart, resync after a failure or drift): the new one
///   is staged under the other generation's names next to the live one, which `hooks` deletes.
///
/// Rules that look up the `typeof` slot maps are in regular chains, so they are written in the
/// batch that defines the maps (nft 1.0.6 cannot add them to maps read back from the kernel).
public struct StagedProgram: Sendable {
    /// The kernel tables of our table in one family, and their chains and sets, as the kernel
    /// lists them.
    public struct Listing: Hashable, Sendable {
        public var tables: [String]
        public var chains: [String]
        public var sets: [String]

        public init(tables: [String], chains: [String], sets: [String]) {
            self.tables = tables
            self.chains = chains
            self.sets = sets
        }
    }

    public var table: String
    /// The generation the program installs.
    public var generation: Generation
    public var prepare: NFTTransaction
    public var skeleton: NFTTransaction
    public var elements: [NetlinkElements.SetElements] = []
    public var hooks: NFTTransaction
    public var rollback: NFTTransaction

    /// Tables none of whose chains is hooked: replaced as a whole, in generation `a`. Kernel
    /// tables the new ones do not include (affinity shards of a larger count) are deleted.
    public static func fresh(table: String, tables: consuming [NFTTable], kernel: [NFTFamily: Listing]) -> StagedProgram {
        var program = StagedProgram(table: table, generation: .a)
        for var stripped in tables {
            let family = stripped.family
            let names = KernelTables.names(of: stripped)
            program.take(&stripped)
            program.skeleton.operations += (kernel[family]?.tables ?? []).filter { !names.contains($0) }.map { .deleteTable(family, $0) }
            program.skeleton.operations.append(.replaceTable(stripped))
            program.rollback.operations += names.map { .deleteTable(family, $0) }
        }
        return program
    }

    /// Tables in the layout's names that replace the `live` generation's ruleset, whose objects
    /// the kernel lists as `kernel` (a family without a table has no listing). Kernel tables the
    /// new ones do not include (affinity shards of a larger count) go with the live ruleset.
    public static func swap(
        table: String, tables: consuming [NFTTable], live: Generation, kernel: [NFTFamily: Listing]
    ) -> StagedProgram {
        let target = live.other
        var program = StagedProgram(table: table, generation: target)
        for var stripped in tables {
            stripped = stripped.named(target)
            let family = stripped.family
            let listing = kernel[family] ?? Listing(tables: [], chains: [], sets: [])
            let isLive = { (name: String) in Generation(of: name) == live }
            program.prepare.operations += removal(
                family, chains: listing.chains.filter { !isLive($0) }, sets: listing.sets.filter { !isLive($0) })
            let names = KernelTables.names(of: stripped)
            program.take(&stripped)
            program.skeleton.operations += names.map { .addTable(family, $0) }
            let sets = stripped.sets.values.sorted { $0.name < $1.name }
            let chains = stripped.chains.values.sorted { $0.name < $1.name }
            for set in sets {
                program.skeleton.operations.append(.addSet(family, set))
                if let elements = stripped.elements[set.name], !elements.isEmpty {
                    program.skeleton.operations.append(
                        .addElements(family, set: set.name, elements.map { NFTElement(key: $0.key, value: $0.value) }))
                }
            }
            // Every chain exists before any rule jumps to one.
            program.skeleton.operations += chains.map { .addChain(family, $0.name) }
            program.skeleton.operations += chains.map { .defineChain(family, $0) }
            // The live objects of the tables kept; the others go with their tables.
            let kept = { (name: String) in isLive(name) && names.contains(KernelTables.name(table, holding: name)) }
            program.hooks.operations += removal(family, chains: listing.chains.filter(kept), sets: listing.sets.filter(kept))
            program.hooks.operations += listing.tables.filter { !names.contains($0) }.map { .deleteTable(family, $0) }
            program.rollback.operations += removal(family, chains: chains.map(\.name), sets: sets.map(\.name))
        }
        return program
    }

    private init(table: String, generation: Generation) {
        self.table = table
        self.generation = generation
        prepare = NFTTransaction(table: table)
        skeleton = NFTTransaction(table: table)
        hooks = NFTTransaction(table: table)
        rollback = NFTTransaction(table: table)
    }

    /// Moves `table`'s base chains into `hooks` and the elements of its sets (but interval sets)
    /// into `elements`.
    private mutating func take(_ table: inout NFTTable) {
        for chain in table.chains.values.sorted(by: { $0.name < $1.name }) where chain.hook != nil {
            hooks.operations.append(.defineChain(table.family, chain))
            table.chains[chain.name] = nil
        }
        for set in table.sets.values.sorted(by: { $0.name < $1.name }) where !set.isInterval {
            if let setElements = table.elements.removeValue(forKey: set.name), !setElements.isEmpty {
                elements.append(NetlinkElements.SetElements(family: table.family, set: set.name, elements: setElements))
            }
        }
    }

    /// Removes chains and sets whatever references them: rules go first (they reference sets and
    /// chains), then sets (verdict maps reference chains), then chains.
    static func removal(_ family: NFTFamily, chains: [String], sets: [String]) -> [NFTOperation] {
        chains.map { .flushChain(family, $0) } + sets.map { .deleteSet(family, $0) } + chains.map { .deleteChain(family, $0) }
    }
}
