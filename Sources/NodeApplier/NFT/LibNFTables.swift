import CNFTables
import Foundation
import Synchronization

/// `NFTablesClient` over libnftables: each transaction is rendered once and run as one batch
/// (one atomic kernel transaction), without spawning `nft`.
public final class LibNFTables: NFTablesClient {
    private final class Context: @unchecked Sendable {
        let pointer: OpaquePointer

        init(json: Bool, dryRun: Bool = false) throws {
            guard let pointer = nft_ctx_new(UInt32(NFT_CTX_DEFAULT)) else { throw NFTError("libnftables: nft_ctx_new failed") }
            self.pointer = pointer
            nft_ctx_buffer_output(pointer)
            nft_ctx_buffer_error(pointer)
            if json { nft_ctx_output_set_flags(pointer, UInt32(NFT_CTX_OUTPUT_JSON) | UInt32(NFT_CTX_OUTPUT_TERSE)) }
            if dryRun { nft_ctx_set_dry_run(pointer, true) }
        }

        deinit { nft_ctx_free(pointer) }

        /// libnftables keeps every object of a batch in its cache: after a whole table that is
        /// hundreds of MB. A fresh context drops it; the next command fetches what it needs.
        static func dropCache(_ context: inout Context) {
            if let fresh = try? Context(json: false) { context = fresh }
        }

        /// Runs a script; returns the output buffer or throws with the error buffer.
        func run(_ script: String) throws -> String {
            let status = script.withCString { nft_run_cmd_from_buffer(pointer, $0) }
            if status != 0 {
                let error = nft_ctx_get_error_buffer(pointer).map { String(cString: $0) } ?? ""
                throw NFTError(error.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty ? "nft: exit status \(status)" : error)
            }
            return nft_ctx_get_output_buffer(pointer).map { String(cString: $0) } ?? ""
        }
    }

    private let commands: Mutex<Context>
    private let listings: Mutex<Context>

    public init() throws {
        commands = Mutex(try Context(json: false))
        listings = Mutex(try Context(json: true))
    }

    public func apply(_ transaction: consuming NFTTransaction) throws {
        guard !transaction.isEmpty else { return }
        let tables = transaction.operations.compactMap { if case .replaceTable(let table) = $0 { table } else { nil } }
        if tables.count == transaction.operations.count, try !exists(transaction.table, in: tables.map(\.family)) {
            let name = transaction.table
            _ = consume transaction
            try applyStaged(StagedProgram(table: name, tables: consume tables))
            return
        }
        let replacesTables = !tables.isEmpty
        let script = NFTRenderer.render(transaction)
        // A whole table's objects (~100 MB at 50k services) need not stay alive while libnftables runs.
        _ = consume transaction
        try commands.withLock { context in
            defer { if replacesTables { Context.dropCache(&context) } }
            _ = try context.run(script)
        }
    }

    /// A whole ruleset into a kernel without our tables: see `StagedProgram`.
    private func applyStaged(_ program: consuming StagedProgram) throws {
        let skeleton = NFTRenderer.render(program.skeleton)
        let hooks = NFTRenderer.render(program.hooks)
        let cleanup = program.families.map { "delete table \($0.rawValue) \(program.table)\n" }.joined()
        let table = program.table
        let elements = program.elements
        _ = consume program
        try commands.withLock { context in
            defer { Context.dropCache(&context) }
            _ = try context.run(skeleton)
            do {
                try NetlinkElements.load(elements, table: table)
                _ = try context.run(hooks)
            } catch {
                // Nothing was hooked into the packet path yet: without the tables the kernel is as it was.
                _ = try? context.run(cleanup)
                throw error
            }
        }
    }

    /// Whether `table` exists in any of `families` (listing tables fetches nothing else).
    private func exists(_ table: String, in families: [NFTFamily]) throws -> Bool {
        let output = try listings.withLock { try $0.run("list tables") }
        return try Self.items(of: output, kind: "table").contains { item in
            item["name"] as? String == table && families.contains { $0.rawValue == item["family"] as? String }
        }
    }

    /// Parses and checks `script` against the kernel without committing anything (`nft --check`).
    public static func check(_ script: String) throws {
        _ = try Context(json: false, dryRun: true).run(script)
    }

    public func shape(family: NFTFamily, table: String) throws -> NFTTableShape? {
        var chains: Set<String> = []
        var sets: Set<String> = []
        for (command, kind) in [("chains", "chain"), ("sets", "set"), ("maps", "map")] {
            let output = try listings.withLock { try $0.run("list \(command) \(family.rawValue)") }
            for object in try Self.items(of: output, kind: kind) where object["table"] as? String == table {
                guard let name = object["name"] as? String else { continue }
                if kind == "chain" { chains.insert(name) } else { sets.insert(name) }
            }
        }
        // Every table the applier writes has base chains: none means the table is gone.
        return chains.isEmpty ? nil : NFTTableShape(chains: chains, sets: sets)
    }

    /// The objects of one kind in a JSON listing.
    private static func items(of listing: String, kind: String) throws -> [[String: Any]] {
        guard let root = try JSONSerialization.jsonObject(with: Data(listing.utf8)) as? [String: Any],
            let items = root["nftables"] as? [[String: Any]]
        else { throw NFTError("libnftables: unexpected JSON listing of \(kind)s") }
        return items.compactMap { $0[kind] as? [String: Any] }
    }
}
