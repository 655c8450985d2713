import Foundation
import NodeApplier
import ProxyModel
import Testing

/// The rendered ruleset of the fixture set, compared with checked-in `.nft` files.
/// `UPDATE_GOLDEN=1 swift test --filter GoldenTests` rewrites them after an intended change.
@Suite struct GoldenTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden")

    @Test(arguments: NFTFamily.allCases)
    func rulesetMatchesGoldenFile(family: NFTFamily) async throws {
        let (_, nft) = try await fixtureApplier()
        let table = try #require(nft.table(family))
        let rendered = NFTRenderer.render(table: table)
        let file = Self.directory.appendingPathComponent("fixture-\(family.rawValue).nft")
        if ProcessInfo.processInfo.environment["UPDATE_GOLDEN"] == "1" {
            try FileManager.default.createDirectory(at: Self.directory, withIntermediateDirectories: true)
            try rendered.write(to: file, atomically: true, encoding: .utf8)
        }
        let golden = try String(contentsOf: file, encoding: .utf8)
        #expect(rendered == golden, "ruleset differs from \(file.lastPathComponent); rerun with UPDATE_GOLDEN=1 if intended")
    }

    /// The kernel's own parser and validation (a dry run: nothing is committed), as `nft --check` does.
    @Test(arguments: NFTFamily.allCases)
    func goldenRulesetPassesTheKernelCheck(family: NFTFamily) throws {
        let file = Self.directory.appendingPathComponent("fixture-\(family.rawValue).nft")
        let golden = try String(contentsOf: file, encoding: .utf8)
        try LibNFTables.check(golden)
    }

    /// Elements are written byte by byte: every kind of value, at the edges of its range, spelled
    /// as nft reads it.
    @Test func elementsAreSpelledAsNftReadsThem() throws {
        func address(_ text: String) throws -> NFTValue { .address(try #require(IPAddress(text))) }
        let elements = [
            NFTElement(key: [try address("0.0.0.0"), .proto(.tcp), .port(0), .integer(0)], value: [try address("255.255.255.255"), .port(65535)]),
            NFTElement(key: [try address("10.96.0.10"), .proto(.sctp), .port(8080), .integer(12)], value: [try address("10.244.1.109"), .port(9)]),
            NFTElement(key: [try address("2001:db8::a"), .proto(.udp), .port(53)], value: [.verdict(.goto("pick-udp-3"))]),
            NFTElement(key: [.cidr(try #require(CIDR("fd00:10::/64")))]),
            NFTElement(key: [try address("192.0.2.1"), .proto(.tcp), .port(443)], value: [.verdict(.drop)]),
        ]
        let script = NFTRenderer.render(NFTTransaction(table: "t", operations: [.addElements(.ip, set: "s", elements)]))
        #expect(
            script == "add element ip t s { 0.0.0.0 . tcp . 0 . 0 : 255.255.255.255 . 65535, "
                + "10.96.0.10 . sctp . 8080 . 12 : 10.244.1.109 . 9, 2001:db8::a . udp . 53 : goto pick-udp-3, "
                + "fd00:10::/64, 192.0.2.1 . tcp . 443 : drop }\n")
    }

    @Test func brokenRulesetFailsTheKernelCheck() {
        #expect(throws: NFTError.self) {
            try LibNFTables.check("table ip kube-proxy-swift-check {\n\tchain c {\n\t\tip daddr @missing drop\n\t}\n}\n")
        }
    }

    /// Every transaction the applier produces (full and partial) passes the kernel check too.
    @Test func partialTransactionsPassTheKernelCheck() async throws {
        var (planner, transaction) = Planner.full(tableName: "kube-proxy-swift-check", node: fixtureNode, affinityShards: oneShard, contributions: [:])
        let full = NFTRenderer.render(transaction)
        var contributions: [ServiceName: Planner.Change] = [:]
        for service in Fixture.services {
            let name = ServiceName(namespace: service.metadata.namespace, name: service.metadata.name)
            let slices = Fixture.slices.filter { $0.serviceName == service.metadata.name }
            contributions[name] = Planner.Change(
                old: [:], new: Layout.contribution(of: NodeView.ports(of: service, slices: slices, node: fixtureNode), affinityShards: oneShard))
        }
        let update = planner.update(contributions) { _ in [:] }
        let partial = try #require(update)
        // Both in one dry-run batch: the partial applies to the table the full one creates.
        try LibNFTables.check(full + NFTRenderer.render(partial))
    }
}
