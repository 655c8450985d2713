import NodeApplier
import ProxyModel
import Testing

/// The staged full program (skeleton, netlink elements, base chains) holds exactly what the one
/// transaction would; the kernel-side equivalence is `e2e`'s
/// `test_full_program_is_the_same_staged_or_in_one_transaction`.
@Suite struct StagedProgramTests {
    @Test func stagesSplitTheTablesWithoutLosingAnything() async throws {
        let (_, nft) = try await fixtureApplier()
        let tables = try NFTFamily.allCases.map { try #require(nft.table($0)) }
        let program = StagedProgram(table: "kube-proxy-swift", tables: tables)
        #expect(program.families == NFTFamily.allCases)

        var rebuilt: [NFTFamily: NFTTable] = [:]
        for operation in program.skeleton.operations {
            guard case .replaceTable(let table) = operation else {
                Issue.record("skeleton holds \(operation)")
                continue
            }
            // Nothing in the skeleton is hooked into the packet path.
            #expect(table.chains.values.allSatisfy { $0.hook == nil })
            // Only interval sets (CIDRs) keep their elements in the script.
            #expect(table.elements.keys.allSatisfy { table.sets[$0]?.isInterval == true })
            rebuilt[table.family] = table
        }
        for operation in program.hooks.operations {
            guard case .defineChain(let family, let chain) = operation, chain.hook != nil else {
                Issue.record("hooks hold \(operation)")
                continue
            }
            rebuilt[family]?.chains[chain.name] = chain
        }
        for part in program.elements {
            #expect(rebuilt[part.family]?.elements[part.set] == nil, "\(part.family) \(part.set) staged twice")
            rebuilt[part.family]?.elements[part.set] = part.elements
        }
        for table in tables {
            #expect(rebuilt[table.family] == table)
            #expect(program.elements.contains { $0.family == table.family && $0.set == "service-ips" })
        }
    }

    @Test func elementsAreEncodedAsNftRegistersHoldThem() throws {
        var bytes: [UInt8] = []
        NetlinkElements.encode([.address(ip("10.96.0.10")), .proto(.tcp), .port(8080), .integer(12)], into: &bytes)
        let slot = withUnsafeBytes(of: UInt32(12)) { Array($0) }  // numgen writes host byte order
        #expect(bytes == [10, 96, 0, 10, 6, 0, 0, 0, 0x1f, 0x90, 0, 0] + slot)

        NetlinkElements.encode([.address(ip("2001:db8::a")), .proto(.sctp), .port(65535)], into: &bytes)
        #expect(bytes == [0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [0x0a, 132, 0, 0, 0, 255, 255, 0, 0])

        NetlinkElements.encode([.address(ip("255.255.255.255")), .port(0)], into: &bytes)
        #expect(bytes == [255, 255, 255, 255, 0, 0, 0, 0])

        NetlinkElements.encode([.address(ip("0.0.0.1")), .address(ip("::1")), .proto(.udp)], into: &bytes)
        #expect(bytes == [0, 0, 0, 1] + Array(repeating: 0, count: 15) + [1, 17, 0, 0, 0])
    }
}
