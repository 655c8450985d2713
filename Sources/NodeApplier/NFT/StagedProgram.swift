/// A whole ruleset for tables none of whose chains is hooked (they do not exist yet, or an
/// earlier staging failed halfway), programmed in steps of which packets only ever meet the last:
/// 1. `skeleton` (libnftables, one transaction) replaces the tables with every set, map and
///    regular chain, and the elements of interval sets, but no base chain;
/// 2. `elements` (every other set's and map's) go in as netlink batches (`NetlinkElements`);
/// 3. `hooks` (libnftables, one transaction) adds the base chains: the complete ruleset takes
///    effect at once.
/// When step 2 or 3 fails, deleting the tables leaves the packet path as it was.
///
/// Rules that look up the `typeof` slot maps are in regular chains, so they are written in the
/// batch that defines the maps (nft 1.0.6 cannot add them to maps read back from the kernel).
public struct StagedProgram: Sendable {
    public var table: String
    public var families: [NFTFamily] = []
    public var skeleton: NFTTransaction
    public var elements: [NetlinkElements.SetElements] = []
    public var hooks: NFTTransaction

    /// The staged form of a transaction that replaces `tables`.
    public init(table: String, tables: consuming [NFTTable]) {
        self.table = table
        skeleton = NFTTransaction(table: table)
        hooks = NFTTransaction(table: table)
        for var stripped in tables {
            families.append(stripped.family)
            for chain in stripped.chains.values.sorted(by: { $0.name < $1.name }) where chain.hook != nil {
                hooks.operations.append(.defineChain(stripped.family, chain))
                stripped.chains[chain.name] = nil
            }
            for set in stripped.sets.values.sorted(by: { $0.name < $1.name }) where !set.isInterval {
                if let elements = stripped.elements.removeValue(forKey: set.name), !elements.isEmpty {
                    self.elements.append(NetlinkElements.SetElements(family: stripped.family, set: set.name, elements: elements))
                }
            }
            skeleton.operations.append(.replaceTable(stripped))
        }
    }
}
