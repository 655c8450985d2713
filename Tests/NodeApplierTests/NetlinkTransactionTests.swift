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

    /// The first frontend with a count beyond the scan brings that count's `pick-N` chain and slot
    /// map, a copy of the shared slot map's definition as the kernel holds it (with the `typeof`
    /// notes nft writes); without that definition, libnftables writes it. The next ones add
    /// elements only.
    @Test func aCountBeyondTheScanBringsItsMapOnceACopyOfTheSharedOnes() throws {
        let endpoints = (1...70).map { endpoint("10.244.7.\($0)", node: "node-a") }
        var planner = Planner.full(tableName: "kube-proxy-swift", node: fixtureNode, affinityShards: oneShard, contributions: [:]).planner
        func add(_ name: String, _ address: String) throws -> NFTTransaction {
            let service = Service(metadata: meta(name), clusterIPs: [ip(address)], ports: [ServicePort(name: "http", port: 80)])
            return try self.add([service], slices: [slice(name, service: name, endpoints)], to: &planner)
        }
        let first = try add("large", "10.96.0.70")
        #expect(first.operations.contains { if case .defineChain(_, let chain) = $0 { chain.name == "pick-tcp-70" } else { false } })
        #expect(first.operations.contains { if case .addSet(_, let set) = $0 { set.name == "backends-tcp-70" } else { false } })
        #expect(try !isBatch(first))
        let shared = NetlinkListing.SetDefinition(flags: 8, keyType: 1, keyLength: 16, dataType: 2, dataLength: 8, userData: [0, 4, 0, 0, 0, 0])
        #expect(try NetlinkTransaction.batch(for: first.operations, table: first.table, slotMaps: [.ip: [.tcp: shared]]) != nil)
        #expect(try NetlinkTransaction.batch(for: first.operations, table: first.table, slotMaps: [.ip: [.udp: shared]]) == nil)
        let second = try add("large2", "10.96.0.71")
        #expect(second.operations.allSatisfy { if case .addElements = $0 { true } else { false } })
        #expect(try isBatch(second))
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
