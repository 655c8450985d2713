import CNFTables
import Foundation
import Synchronization

/// `NFTablesClient` over libnftables, without spawning `nft`: each transaction is rendered once and
/// run as one batch (one atomic kernel transaction), except a full program, which is staged
/// (`StagedProgram`) with its elements through libnftnl, and a partial sync `NetlinkTransaction`
/// covers (elements, affinity sets and chains), which goes to the kernel as a netlink batch.
/// Objects carry the names of the live `Generation`. Chains and sets are read with netlink dumps
/// (`NetlinkListing`).
public final class LibNFTables: NFTablesClient {
    private final class Context: @unchecked Sendable {
        let pointer: OpaquePointer

        init(dryRun: Bool = false) throws {
            guard let pointer = nft_ctx_new(UInt32(NFT_CTX_DEFAULT)) else { throw NFTError("libnftables: nft_ctx_new failed") }
            self.pointer = pointer
            nft_ctx_buffer_output(pointer)
            nft_ctx_buffer_error(pointer)
            if dryRun { nft_ctx_set_dry_run(pointer, true) }
        }

        deinit { nft_ctx_free(pointer) }

        /// The socket partial syncs go out on (`NetlinkTransaction`) and listings are read on (a
        /// full program's; a drift check's on the listing context), opened once: closing a
        /// netfilter socket right after a commit that deleted something waits for the kernel to
        /// free it (an RCU grace period, ~16 ms here).
        private var netlink: NetlinkSocket?

        /// Runs `body` on the netlink socket. A refused batch or a failed dump may leave answers
        /// unread: the socket is closed with it.
        func withNetlink<Result>(_ body: (NetlinkSocket) throws -> Result) throws -> Result {
            let socket = try netlink ?? NetlinkSocket()
            netlink = socket
            do {
                return try body(socket)
            } catch {
                netlink = nil
                throw error
            }
        }

        /// libnftables keeps every object of a batch in its cache: after a whole table that is
        /// hundreds of MB. A fresh context drops it; the next command fetches what it needs. The
        /// old one is freed on another thread: after a swap at 50k services that took 0.14–0.19 s.
        static func dropCache(_ context: inout Context) {
            guard let fresh = try? Context() else { return }
            _ = BackgroundRelease(consume context)
            context = fresh
        }

        /// Runs a script; throws with the error buffer. (Output is buffered so that nothing reaches stdout.)
        func run(_ script: String) throws {
            let status = script.withCString { nft_run_cmd_from_buffer(pointer, $0) }
            if status != 0 {
                let error = nft_ctx_get_error_buffer(pointer).map { String(cString: $0) } ?? ""
                throw NFTError(error.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty ? "nft: exit status \(status)" : error)
            }
        }
    }

    private let commands: Mutex<Context>
    /// Drift checks list the tables on a netlink socket of their own: a listing and a commit do
    /// not wait for each other.
    private let listings: Mutex<Context>
    /// The generation of the names our objects have in the kernel, as of the last full program.
    private let live = Mutex(Generation.a)

    public init() throws {
        commands = Mutex(try Context())
        listings = Mutex(try Context())
    }

    public func apply(_ transaction: consuming NFTTransaction) throws {
        guard !transaction.isEmpty else { return }
        let tables = transaction.operations.compactMap { if case .replaceTable(let table) = $0 { table } else { nil } }
        if tables.count == transaction.operations.count {
            let name = transaction.table
            _ = consume transaction
            try applyStaged(try program(table: name, tables: consume tables))
            return
        }
        let named = transaction.named(live.withLock { $0 })
        try commands.withLock { context in
            if try context.withNetlink({ try NetlinkTransaction.apply(named.operations, table: named.table, on: $0) }) { return }
            try context.run(NFTRenderer.render(named))
        }
    }

    /// A whole ruleset: staged fresh where nothing of ours is hooked, else swapped in next to the
    /// live generation. When base chains of both generations are hooked (made by hand), the `b`
    /// ones are removed first.
    ///
    /// Objects in another kernel table than their names belong in (a build before the affinity
    /// table kept ClientIP affinity in the main table) cannot be removed by name: then the tables
    /// are staged fresh, replaced as a whole, and new connections go untranslated until the base
    /// chains are back (~1 s at 50k services), once.
    private func program(table: String, tables: consuming [NFTTable]) throws -> StagedProgram {
        var kernel: [NFTFamily: StagedProgram.Listing] = [:]
        var hooked: Set<Generation> = []
        var misplaced = false
        for family in tables.map(\.family) {
            let (kernelTables, chains, sets) = try netlink { socket in
                (
                    try NetlinkListing.tables(family: family, table: table, on: socket),
                    try NetlinkListing.chains(family: family, table: table, on: socket),
                    try NetlinkListing.sets(family: family, table: table, on: socket)
                )
            }
            hooked.formUnion(chains.filter(\.hooked).map { Generation(of: $0.name) })
            misplaced = misplaced || chains.contains { !Self.belongs($0.name, in: $0.table, of: table) }
                || sets.contains { !Self.belongs($0.name, in: $0.table, of: table) }
            kernel[family] = StagedProgram.Listing(tables: kernelTables, chains: chains.map(\.name), sets: sets.map(\.name))
        }
        guard !hooked.isEmpty, !misplaced else { return .fresh(table: table, tables: tables, kernel: kernel) }
        return .swap(table: table, tables: tables, live: hooked.contains(.a) ? .a : .b, kernel: kernel)
    }

    /// See `StagedProgram`.
    private func applyStaged(_ program: consuming StagedProgram) throws {
        let prepare = program.prepare.isEmpty ? nil : NFTRenderer.render(program.prepare)
        let skeleton = NFTRenderer.render(program.skeleton)
        let hooks = NFTRenderer.render(program.hooks)
        let rollback = NFTRenderer.render(program.rollback)
        let table = program.table
        let generation = program.generation
        let elements = program.elements
        _ = consume program
        defer { commands.withLock { Context.dropCache(&$0) } }
        if let prepare { try commands.withLock { try $0.run(prepare) } }
        try commands.withLock { try $0.run(skeleton) }
        do {
            try NetlinkElements.load(consume elements, table: table)
            try commands.withLock { try $0.run(hooks) }
        } catch {
            // Nothing of what the skeleton added is hooked into the packet path yet: without it
            // the kernel forwards packets as it did before.
            try? commands.withLock { try $0.run(rollback) }
            throw error
        }
        live.withLock { $0 = generation }
    }

    public func kernelTables(family: NFTFamily, table: String) throws -> [String] {
        try netlink { try NetlinkListing.tables(family: family, table: table, on: $0) }
    }

    public func generation() throws -> RulesetGeneration {
        RulesetGeneration(id: try netlink { try $0.generation() })
    }

    /// Runs `body` on the context's netlink socket.
    private func netlink<Result: Sendable>(_ body: (NetlinkSocket) throws -> Result) throws -> Result {
        try commands.withLock { try $0.withNetlink(body) }
    }

    /// Parses and checks `script` against the kernel without committing anything (`nft --check`).
    public static func check(_ script: String) throws {
        try Context(dryRun: true).run(script)
    }

    /// Whether `object` is in the kernel table of `table` its name belongs in.
    private static func belongs(_ object: String, in kernelTable: String, of table: String) -> Bool {
        KernelTables.name(table, holding: object) == kernelTable
    }

    /// In the layout's names; objects of the other generation (left over), or in the wrong kernel
    /// table, keep their kernel names with a note, so that they never match the plan.
    public func shape(family: NFTFamily, table: String) throws -> NFTTableShape? {
        try listings.withLock { context in
            try context.withNetlink { try Self.shape(family: family, table: table, generation: live.withLock { $0 }, on: $0) }
        }
    }

    private static func shape(family: NFTFamily, table: String, generation: Generation, on socket: NetlinkSocket) throws -> NFTTableShape? {
        let chains = try NetlinkListing.chains(family: family, table: table, on: socket)
        // Every table the applier writes has base chains: none means the table is gone.
        guard !chains.isEmpty else { return nil }
        let layoutName = { (name: String, kernelTable: String) in
            guard Self.belongs(name, in: kernelTable, of: table) else { return "\(name) (table \(kernelTable))" }
            return generation.layoutName(name) ?? "\(name) (generation \(generation.other))"
        }
        let rules = try NetlinkListing.ruleCounts(family: family, tables: Set(chains.map(\.table)), on: socket)
        return NFTTableShape(
            chains: Dictionary(uniqueKeysWithValues: chains.map { (layoutName($0.name, $0.table), rules[$0.table]?[$0.name] ?? 0) }),
            sets: Set(try NetlinkListing.sets(family: family, table: table, on: socket).map { layoutName($0.name, $0.table) }))
    }
}
