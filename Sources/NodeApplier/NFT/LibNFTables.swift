import CNFTables
import Foundation
import Synchronization

/// `NFTablesClient` over libnftables, without spawning `nft`: each transaction is rendered once and
/// run as one batch (one atomic kernel transaction), except a full program where none of our
/// chains is hooked, which is staged (`StagedProgram`) with its elements through libnftnl.
/// Chains and sets are read with netlink dumps (`NetlinkListing`).
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

        /// libnftables keeps every object of a batch in its cache: after a whole table that is
        /// hundreds of MB. A fresh context drops it; the next command fetches what it needs.
        static func dropCache(_ context: inout Context) {
            if let fresh = try? Context() { context = fresh }
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

    public init() throws {
        commands = Mutex(try Context())
    }

    public func apply(_ transaction: consuming NFTTransaction) throws {
        guard !transaction.isEmpty else { return }
        let replaced = transaction.operations.compactMap { if case .replaceTable(let table) = $0 { table.family } else { nil } }
        if replaced.count == transaction.operations.count, try !isHooked(transaction.table, in: replaced) {
            let name = transaction.table
            let tables = transaction.operations.compactMap { if case .replaceTable(let table) = $0 { table } else { nil } }
            _ = consume transaction
            try applyStaged(StagedProgram(table: name, tables: consume tables))
            return
        }
        let script = NFTRenderer.render(transaction)
        // A whole table's objects (~100 MB at 50k services) need not stay alive while libnftables runs.
        _ = consume transaction
        try commands.withLock { context in
            defer { if !replaced.isEmpty { Context.dropCache(&context) } }
            try context.run(script)
        }
    }

    /// A whole ruleset where nothing of ours is hooked into the packet path: see `StagedProgram`.
    private func applyStaged(_ program: consuming StagedProgram) throws {
        let skeleton = NFTRenderer.render(program.skeleton)
        let hooks = NFTRenderer.render(program.hooks)
        let cleanup = program.families.map { "delete table \($0.rawValue) \(program.table)\n" }.joined()
        let table = program.table
        let elements = program.elements
        _ = consume program
        defer { commands.withLock { Context.dropCache(&$0) } }
        try commands.withLock { try $0.run(skeleton) }
        do {
            try NetlinkElements.load(consume elements, table: table)
            try commands.withLock { try $0.run(hooks) }
        } catch {
            // Nothing of these tables was hooked into the packet path yet: without them the
            // kernel forwards packets as it did before.
            try? commands.withLock { try $0.run(cleanup) }
            throw error
        }
    }

    /// Whether `table` has a base chain in any of `families`.
    private func isHooked(_ table: String, in families: [NFTFamily]) throws -> Bool {
        try families.contains { try NetlinkListing.chains(family: $0, table: table).contains(where: \.hooked) }
    }

    /// Parses and checks `script` against the kernel without committing anything (`nft --check`).
    public static func check(_ script: String) throws {
        try Context(dryRun: true).run(script)
    }

    public func shape(family: NFTFamily, table: String) throws -> NFTTableShape? {
        let chains = try NetlinkListing.chains(family: family, table: table)
        // Every table the applier writes has base chains: none means the table is gone.
        guard !chains.isEmpty else { return nil }
        return NFTTableShape(chains: Set(chains.map(\.name)), sets: Set(try NetlinkListing.sets(family: family, table: table)))
    }
}
