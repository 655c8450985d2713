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
        let script = NFTRenderer.render(transaction)
        let replacesTables = transaction.operations.contains { if case .replaceTable = $0 { true } else { false } }
        // A whole table's objects (~100 MB at 50k services) need not stay alive while libnftables runs.
        _ = consume transaction
        try commands.withLock { context in
            defer {
                // libnftables keeps every object of a batch in its cache: after a whole table that is
                // hundreds of MB. A fresh context drops it; the next command fetches what it needs.
                if replacesTables, let fresh = try? Context(json: false) { context = fresh }
            }
            _ = try context.run(script)
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
            guard let root = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
                let items = root["nftables"] as? [[String: Any]]
            else { throw NFTError("libnftables: unexpected JSON listing of \(command)") }
            for item in items {
                guard let object = item[kind] as? [String: Any], object["table"] as? String == table,
                    let name = object["name"] as? String
                else { continue }
                if kind == "chain" { chains.insert(name) } else { sets.insert(name) }
            }
        }
        // Every table the applier writes has base chains: none means the table is gone.
        return chains.isEmpty ? nil : NFTTableShape(chains: chains, sets: sets)
    }
}
