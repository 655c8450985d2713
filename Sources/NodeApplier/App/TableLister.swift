/// Lists our tables for drift checks on a thread of its own: off the applier's executor, so that
/// syncs go on meanwhile (a listing takes 17–45 ms at 10k and 50k services, `proxy-bench
/// nftables`), and off the cooperative pool, since netlink blocks.
actor TableLister {
    private let nft: any NFTablesClient
    private let executor = SerialQueueExecutor(label: "node-applier.listing")
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    init(_ nft: any NFTablesClient) { self.nft = nft }

    func shapes(of table: String) throws -> [NFTFamily: NFTTableShape?] { try Self.shapes(of: table, nft: nft) }

    /// The shapes of `table` in every family (nil where the table does not exist).
    static func shapes(of table: String, nft: any NFTablesClient) throws -> [NFTFamily: NFTTableShape?] {
        var shapes: [NFTFamily: NFTTableShape?] = [:]
        for family in NFTFamily.allCases { shapes[family] = try nft.shape(family: family, table: table) }
        return shapes
    }
}
