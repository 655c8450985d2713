import NodeApplier
import ProxyModel
import Testing

@Suite struct ClusterStateTests {
    let a = ServiceName(namespace: "default", name: "a")
    let b = ServiceName(namespace: "default", name: "b")

    func snapshot(_ objects: [ProxyObject]) -> ClusterState {
        var state = ClusterState(revision: 1, storeID: "s")
        for object in objects { state.insert(object) }
        return state
    }

    /// Slices come back as the model slices they were, sorted by name, each endpoint with its first
    /// address (the only one the proxy reads).
    @Test func slicesComeBackSortedWithTheirEndpoints() {
        let second = slice("a-2", service: "a", family: .ipv6, [endpoint("fd00::2", node: "node-b", ready: false, terminating: true)])
        var first = slice("a-1", service: "a", [endpoint("10.0.0.1", node: "node-a", zone: "z1", hintZones: ["z1"])])
        first.endpoints.append(Endpoint(addresses: [ip("10.0.0.2"), ip("10.0.0.3")], nodeName: "node-a"))
        let state = snapshot([.endpointSlice(second), .endpointSlice(first)])
        var expectedFirst = first
        expectedFirst.endpoints[1].addresses = [ip("10.0.0.2")]
        #expect(state.slices(of: a) == [expectedFirst, second])
    }

    /// A slice that changes its service leaves the old one; updates replace; deletes remove.
    @Test func slicesFollowUpdatesMovesAndDeletes() {
        let one = slice("s-1", service: "a", [endpoint("10.0.0.1", node: "node-a")])
        let two = slice("s-2", service: "a", [endpoint("10.0.0.2", node: "node-a")])
        var state = snapshot([.endpointSlice(one), .endpointSlice(two)])

        var updated = one
        updated.endpoints = [endpoint("10.0.0.9", node: "node-b")]
        #expect(state.apply(to: 2, upserts: [.endpointSlice(updated)], deletes: []) == [a])
        #expect(state.slices(of: a) == [updated, two])

        var moved = two
        moved.serviceName = "b"
        #expect(state.apply(to: 3, upserts: [.endpointSlice(moved)], deletes: []) == [a, b])
        #expect(state.slices(of: a) == [updated])
        #expect(state.slices(of: b) == [moved])

        let key = ObjectKey(kind: .endpointSlice, namespace: "default", name: "s-1")
        #expect(state.apply(to: 4, upserts: [], deletes: [key]) == [a])
        #expect(state.slices(of: a).isEmpty)
        #expect(state.slices(of: b) == [moved])
        #expect(state.revision == 4)
    }

    /// Services keep the one label the proxy reads, and nothing else of their labels.
    @Test func servicesKeepOnlyTheProxyNameLabel() {
        let other = Service(
            metadata: meta("a", labels: ["app": "web", NodeView.serviceProxyNameLabel: "other"]), clusterIPs: [ip("10.96.0.1")],
            ports: [ServicePort(name: "http", port: 80)])
        let state = snapshot([.service(other)])
        #expect(state.service(a)?.metadata.labels == [NodeView.serviceProxyNameLabel: "other"])
        #expect(state.service(a).map(NodeView.isProxied) == false)
        #expect(Array(state.serviceNames) == [a])
    }
}
