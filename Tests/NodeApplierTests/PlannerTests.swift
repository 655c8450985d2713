@testable import NodeApplier
import ProxyModel
import Testing

@Suite struct PlannerTests {
    let frontend: NFTTuple = [.address(ip("10.96.0.50")), .proto(.tcp), .port(80)]
    let map = "single-backends-tcp"

    func claiming(_ backend: String) -> [NFTFamily: Contribution] {
        var contribution = Contribution()
        contribution.elements[map] = [frontend: [.address(ip(backend)), .port(8080)]]
        return [.ip: contribution]
    }

    func installed(_ nft: FakeNFTables) -> NFTTuple? { nft.table(.ip)?.elements[map]?[frontend] }

    /// Two services claiming one frontend: the one with the smaller name is installed, and when it
    /// leaves or comes back the kernel follows, as a full plan of the same services would have it.
    @Test func sharedElementFollowsItsHolder() throws {
        let alpha = ServiceName(namespace: "default", name: "alpha")
        let beta = ServiceName(namespace: "default", name: "beta")
        let nft = FakeNFTables()
        var (planner, full) = Planner.full(
            tableName: "t", node: fixtureNode, affinityShards: oneShard, contributions: [alpha: claiming("10.0.1.1"), beta: claiming("10.0.2.2")])
        try nft.apply(full)
        #expect(installed(nft) == [.address(ip("10.0.1.1")), .port(8080)])

        var asked: [ServiceName] = []
        let leave = try #require(
            planner.update([alpha: Planner.Change(old: claiming("10.0.1.1"), new: [:])]) { service in
                asked.append(service)
                return service == beta ? claiming("10.0.2.2") : [:]
            })
        try nft.apply(leave)
        #expect(installed(nft) == [.address(ip("10.0.2.2")), .port(8080)])
        #expect(asked == [beta])

        // The holder changes its value while the other one's stays: no kernel change for beta.
        let back = try #require(planner.update([alpha: Planner.Change(old: [:], new: claiming("10.0.3.3"))]) { _ in claiming("10.0.2.2") })
        try nft.apply(back)
        #expect(installed(nft) == [.address(ip("10.0.3.3")), .port(8080)])

        let betaMoves = try #require(planner.update([beta: Planner.Change(old: claiming("10.0.2.2"), new: claiming("10.0.4.4"))]) { _ in [:] })
        #expect(betaMoves.isEmpty)

        let bothLeave = try #require(
            planner.update([
                alpha: Planner.Change(old: claiming("10.0.3.3"), new: [:]), beta: Planner.Change(old: claiming("10.0.4.4"), new: [:]),
            ]) { _ in [:] })
        try nft.apply(bothLeave)
        #expect(installed(nft) == nil)
    }

    /// Packed keys tell apart components whose bytes alone would be equal.
    @Test func packedKeysAreDistinctPerComponentType() {
        let keys: [NFTTuple] = [
            [.address(.v4(0x0A00_0001))],
            [.address(.v6(0x0A00_0001))],
            [.cidr(cidr("10.0.0.1/32"))],
            [.integer(0x0A00_0001)],
            [.port(1), .port(0)],
            [.integer(1)],
            [.port(1)],
            [.proto(.tcp), .port(80)],
            [.proto(.udp), .port(80)],
            [.address(ip("fd00::1")), .address(ip("fd00::2"))],
            [.address(ip("fd00::2")), .address(ip("fd00::1"))],
        ]
        #expect(Set(keys.map(ElementKey<Bytes32>.init)).count == keys.count)
        for key in keys { if case .boxed = ElementKey<Bytes32>(key) { Issue.record("\(key) was not packed") } }
        // All but the two-address keys fit 16 bytes; what does not fit keeps its array.
        let small = Array(keys.dropLast(2))
        #expect(Set(small.map(ElementKey<Bytes16>.init)).count == small.count)
        for key in small { if case .boxed = ElementKey<Bytes16>(key) { Issue.record("\(key) was not packed in 16 bytes") } }
        if case .packed = ElementKey<Bytes16>([.address(ip("fd00::1")), .port(80)]) { Issue.record("19 bytes were packed in 16") }
        if case .packed = ElementKey<Bytes32>([.port(70000)]) { Issue.record("an out-of-range port was packed") }
        if case .packed = ElementKey<Bytes32>([.verdict(.accept)]) { Issue.record("a verdict was packed") }
    }
}
