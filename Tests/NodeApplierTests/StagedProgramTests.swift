import NodeApplier
import ProxyModel
import Testing

/// The staged full program holds exactly the tables it is made of: in its fresh form (skeleton,
/// netlink elements, base chains) and as a swap of generations, which the fake kernel runs step by
/// step with its reference checks. The kernel-side equivalence is `e2e`'s
/// `test_full_program_is_the_same_staged_or_swapped`.
@Suite struct StagedProgramTests {
    @Test func freshProgramSplitsTheTablesWithoutLosingAnything() async throws {
        let (_, nft) = try await fixtureApplier()
        let tables = try NFTFamily.allCases.map { try #require(nft.table($0)) }
        let program = StagedProgram.fresh(table: "kube-proxy-swift", tables: tables, kernel: [:])
        #expect(program.generation == .a)
        #expect(program.prepare.isEmpty)
        #expect(
            program.rollback.operations
                == NFTFamily.allCases.flatMap { [.deleteTable($0, "kube-proxy-swift"), .deleteTable($0, "kube-proxy-swift-affinity")] })

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

    /// Live generation `a` with leftovers of a failed swap (a `b` chain and set) and no ip6 table:
    /// after the swap the kernel holds exactly the tables in `b`'s names; after a rollback instead
    /// of the last step, exactly the live ruleset.
    @Test func swapReplacesTheLiveGenerationAndRollsBackToIt() async throws {
        let (_, planned) = try await fixtureApplier()
        let tables = try NFTFamily.allCases.map { try #require(planned.table($0)) }
        let live = try #require(planned.table(.ip))
        let kernel = FakeNFTables()
        try kernel.apply(
            NFTTransaction(
                table: "kube-proxy-swift",
                operations: [
                    .replaceTable(live), .addChain(.ip, "services.b"),
                    .addSet(.ip, NFTSetDefinition(name: "cluster-ips.b", type: .address(interval: false))),
                ]))
        func listing(_ family: NFTFamily) -> StagedProgram.Listing? {
            kernel.table(family).map {
                StagedProgram.Listing(tables: KernelTables.names(of: $0), chains: Array($0.chains.keys), sets: Array($0.sets.keys))
            }
        }
        let program = StagedProgram.swap(
            table: "kube-proxy-swift", tables: tables, live: .a, kernel: [.ip: listing(.ip)!])
        #expect(program.generation == .b)
        #expect(program.prepare.operations == [.flushChain(.ip, "services.b"), .deleteSet(.ip, "cluster-ips.b"), .deleteChain(.ip, "services.b")])

        func run(_ transaction: NFTTransaction) throws {
            try kernel.apply(transaction)
            // Until the hooks, the live ruleset is untouched.
            if transaction != program.hooks {
                let now = try #require(kernel.table(.ip))
                for name in live.chains.keys { #expect(now.chains[name] == live.chains[name]) }
                for name in live.sets.keys { #expect(now.elements[name] == live.elements[name]) }
            }
        }
        try run(program.prepare)
        try run(program.skeleton)
        #expect(program.skeleton.operations.allSatisfy {
            if case .defineChain(_, let chain) = $0 { chain.hook == nil } else { true }
        })
        try run(
            NFTTransaction(
                table: "kube-proxy-swift",
                operations: program.elements.map { part in
                    .addElements(part.family, set: part.set, part.elements.map { NFTElement(key: $0.key, value: $0.value) })
                }))
        let staged = try NFTFamily.allCases.map { try #require(kernel.table($0)) }

        try kernel.apply(program.hooks)
        for table in tables {
            let expected = withoutEmptyElements(table.named(.b))
            let found = withoutEmptyElements(try #require(kernel.table(table.family)))
            #expect(found == expected, "\(table.family): \(difference(found, expected))")
        }
        #expect(kernel.table(.ip)?.chains["services.b"]?.rules.isEmpty == false)
        #expect(kernel.table(.ip)?.elements["service-ips.b"]?.values.contains([.verdict(.goto("pick-tcp-2.b"))]) == true)

        // Back to before the hooks: the rollback instead.
        try kernel.apply(NFTTransaction(table: "kube-proxy-swift", operations: staged.map { .replaceTable($0) }))
        try kernel.apply(program.rollback)
        #expect(kernel.table(.ip).map(withoutEmptyElements) == withoutEmptyElements(live))
        #expect(kernel.table(.ip6) == NFTTable(family: .ip6, name: "kube-proxy-swift"))
    }

    /// Fewer affinity shards than the kernel holds: the fresh program and the swap both delete the
    /// tables of the shards beyond, and leave nothing of theirs.
    @Test func programsDeleteTheTablesOfShardsBeyondTheirCount() throws {
        func table(shards: Int) -> NFTTable {
            let affinityShards = Layout.AffinityShards(for: shards * Layout.AffinityShards.servicesPerShard)
            return Layout.baseTable(family: .ip, name: "t", node: fixtureNode, affinityShards: affinityShards)
        }
        let live = table(shards: 4)
        #expect(KernelTables.names(of: live) == ["t", "t-affinity", "t-affinity-1", "t-affinity-2", "t-affinity-3"])
        let listing = StagedProgram.Listing(tables: KernelTables.names(of: live), chains: Array(live.chains.keys), sets: Array(live.sets.keys))
        let beyond: [NFTOperation] = [.deleteTable(.ip, "t-affinity-2"), .deleteTable(.ip, "t-affinity-3")]

        let fresh = StagedProgram.fresh(table: "t", tables: [table(shards: 2)], kernel: [.ip: listing])
        #expect(Array(fresh.skeleton.operations.prefix(2)) == beyond)

        let swap = StagedProgram.swap(table: "t", tables: [table(shards: 2)], live: .a, kernel: [.ip: listing])
        #expect(Array(swap.hooks.operations.suffix(2)) == beyond)
        let kernel = FakeNFTables()
        try kernel.apply(NFTTransaction(table: "t", operations: [.replaceTable(live)]))
        for step in [swap.prepare, swap.skeleton, swap.hooks] { try kernel.apply(step) }
        let after = try #require(kernel.table(.ip))
        #expect(KernelTables.names(of: after) == ["t", "t-affinity", "t-affinity-1"])
        #expect(after.chains.keys.contains("aff1-nat-prerouting.b") && after.sets.keys.contains("aff1-service-ips.b"))
    }

    @Test func generationNamesMapBothWays() {
        #expect(Generation.b.name("pick-tcp-2") == "pick-tcp-2.b")
        #expect(Generation.a.name("pick-tcp-2") == "pick-tcp-2")
        #expect(Generation.b.layoutName("pick-tcp-2.b") == "pick-tcp-2")
        #expect(Generation.b.layoutName("pick-tcp-2") == nil)
        #expect(Generation.a.layoutName("pick-tcp-2.b") == nil)
        #expect(Generation(of: "aff-9139a2d558e0fadc") == .a)
    }
}

/// The fake kernel keeps an empty element list for every set; planned tables need not.
private func withoutEmptyElements(_ table: NFTTable) -> NFTTable {
    var table = table
    table.elements = table.elements.filter { !$0.value.isEmpty }
    return table
}

/// What differs between two tables, by object name (the full dump of a table is unreadable).
private func difference(_ found: NFTTable, _ expected: NFTTable) -> String {
    func differing<V: Equatable>(_ a: [String: V], _ b: [String: V]) -> [String] {
        Set(a.keys).union(b.keys).filter { a[$0] != b[$0] }.sorted()
    }
    return "sets \(differing(found.sets, expected.sets)), chains \(differing(found.chains, expected.chains)), "
        + "elements \(differing(found.elements, expected.elements))"
}
