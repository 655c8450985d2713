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

    public func apply(_ transaction: NFTTransaction) throws {
        guard !transaction.isEmpty else { return }
        let script = NFTRenderer.render(transaction)
        let replacesTables = transaction.operations.contains { if case .replaceTable = $0 { true } else { false } }
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
        let output: String
        do {
            output = try listings.withLock { try $0.run("list table \(family.rawValue) \(table)") }
        } catch let error as NFTError where error.message.contains("No such file or directory") {
            return nil
        }
        guard let root = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
            let items = root["nftables"] as? [[String: Any]]
        else { throw NFTError("libnftables: unexpected JSON listing of table \(table)") }
        var chains: [String: Int] = [:]
        var sets: Set<String> = []
        for item in items {
            if let chain = item["chain"] as? [String: Any], let name = chain["name"] as? String {
                chains[name, default: 0] += 0
            } else if let rule = item["rule"] as? [String: Any], let name = rule["chain"] as? String {
                chains[name, default: 0] += 1
            } else if let set = (item["set"] ?? item["map"]) as? [String: Any], let name = set["name"] as? String {
                sets.insert(name)
            }
        }
        return NFTTableShape(chains: chains, sets: sets)
    }
}
