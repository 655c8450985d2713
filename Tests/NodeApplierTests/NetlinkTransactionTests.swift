@testable import NodeApplier
import ProxyModel
import Testing

/// Which partial syncs go to the kernel as netlink batches (`NetlinkTransaction`) and which are
/// left to libnftables. The batches are built here, not sent; the e2e tests run them in the kernel
/// and read them back with `nft list`.
@Suite struct NetlinkTransactionTests {
    /// The partial sync that adds `services`, with their slices, to the fixture node's empty tables.
    func partial(_ services: [Service], slices: [EndpointSlice] = Fixture.slices) throws -> NFTTransaction {
        var planner = Planner.full(tableName: "kube-proxy-swift", node: fixtureNode, affinityShards: oneShard, contributions: [:]).planner
        return try add(services, slices: slices, to: &planner)
    }

    /// The partial sync that adds `services`, with their slices, to what `planner` planned.
    func add(_ services: [Service], slices: [EndpointSlice] = Fixture.slices, to planner: inout Planner) throws -> NFTTransaction {
        var changes: [ServiceName: Planner.Change] = [:]
        for service in services {
            let own = slices.filter { $0.serviceName == service.metadata.name }
            changes[ServiceName(namespace: service.metadata.namespace, name: service.metadata.name)] = Planner.Change(
                old: [:], new: Layout.contribution(of: NodeView.ports(of: service, slices: own, node: fixtureNode), affinityShards: oneShard))
        }
        return try #require(planner.update(changes) { _ in [:] })
    }

    func isBatch(_ transaction: NFTTransaction) throws -> Bool {
        try NetlinkTransaction.batch(for: transaction.operations, table: transaction.table) != nil
    }

    @Test func everyFixtureServiceButTheFirewalledOneGoesAsABatch() throws {
        let unfirewalled = Fixture.services.filter { $0.loadBalancerSourceRanges.isEmpty }
        #expect(unfirewalled.count == Fixture.services.count - 1)
        let covered = try partial(unfirewalled)
        // The ClientIP-affinity service's sets and chains are in it, in both families.
        let affinitySets = covered.operations.filter { if case .addSet(_, let set) = $0 { set.dynamicTimeoutSeconds != nil } else { false } }
        #expect(!affinitySets.isEmpty)
        #expect(try isBatch(covered))
        // The firewall's source ranges are an interval set written in its rule: libnftables.
        #expect(try !isBatch(partial(Fixture.services)))
    }

    /// A frontend with a count beyond the scan changes elements only, in the large slot map (every
    /// table has its power's pick chain): a batch, with no verdict until the rehome.
    @Test func aCountBeyondTheScanChangesElementsOnly() throws {
        var planner = Planner.full(tableName: "kube-proxy-swift", node: fixtureNode, affinityShards: oneShard, contributions: [:]).planner
        let service = Service(metadata: meta("large"), clusterIPs: [ip("10.96.0.70")], ports: [ServicePort(name: "http", port: 80)])
        let endpoints = (1...70).map { endpoint("10.244.7.\($0)", node: "node-a") }
        let transaction = try add([service], slices: [slice("large", service: "large", endpoints)], to: &planner)
        #expect(transaction.operations.allSatisfy { if case .addElements = $0 { true } else { false } })
        let large = transaction.operations.compactMap { if case .addElements(_, let set, let elements) = $0, set == "backends-tcp-large" { elements } else { nil } }
        #expect(large.flatMap { $0 }.count == 70)
        #expect(try isBatch(transaction))
        #expect(planner.awayFrontends == 1)
    }

    /// The rehome changes elements only (every table has the `pick-N` chains of the scan's counts).
    @Test func theRehomeGoesAsABatch() throws {
        var planner = Planner.full(tableName: "kube-proxy-swift", node: fixtureNode, affinityShards: oneShard, contributions: [:]).planner
        _ = try add(Fixture.services.filter { $0.loadBalancerSourceRanges.isEmpty }, to: &planner)
        let rehome = planner.rehome()
        #expect(!rehome.isEmpty)
        #expect(rehome.operations.allSatisfy { if case .addElements = $0 { true } else if case .deleteElements = $0 { true } else { false } })
        #expect(try isBatch(rehome))
    }

    @Test func whatHasNoNetlinkEncodingHereIsLeftToLibnftables() throws {
        let cidrs = NFTOperation.addElements(.ip, set: "cluster-cidrs", [NFTElement(key: NFTTuple().appending(.cidr(cidr("10.0.0.0/8"))))])
        #expect(try NetlinkTransaction.batch(for: [cidrs], table: "t") == nil)
        // A rule translating to the other family's address: the layout never writes one.
        let mixed = NFTOperation.defineChain(.ip, NFTChain(name: "x", rules: [NFTRule([.l4proto(.tcp)], [.dnat(ip("fd00::1"), port: 80)])]))
        #expect(try NetlinkTransaction.batch(for: [mixed], table: "t") == nil)
        #expect(try NetlinkTransaction.batch(for: [.deleteTable(.ip, "t")], table: "t") == nil)
    }
}
