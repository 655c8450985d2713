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

    /// kube-proxy's informers select away Services and EndpointSlices with either label: another
    /// proxy's, and headless services' slices (a service so labelled is not proxied even with a
    /// ClusterIP). A slice that takes the label is gone, and back when it loses it.
    @Test func objectsWithTheLabelsKubeProxyIgnoresAreIgnored() {
        let labelled = Service(
            metadata: meta("a", labels: [NodeView.headlessLabel: ""]), clusterIPs: [ip("10.96.0.1")], ports: [ServicePort(name: "http", port: 80)])
        #expect(snapshot([.service(labelled)]).service(a).map(NodeView.isProxied) == false)
        var slice = EndpointSlice(
            metadata: meta("s-1", labels: ["kubernetes.io/service-name": "a"]), serviceName: "a", addressType: .ipv4,
            ports: [EndpointPort(name: "http", port: 8080)], endpoints: [Endpoint(addresses: [ip("10.244.1.5")])])
        var state = snapshot([.endpointSlice(slice)])
        #expect(state.slices(of: a).count == 1)
        for label in NodeView.ignoringLabels {
            var ignored = slice
            ignored.metadata.labels[label] = "x"
            #expect(state.affected(upserts: [.endpointSlice(ignored)], deletes: []) == [a])
            #expect(state.apply(to: state.revision + 1, upserts: [.endpointSlice(ignored)], deletes: []) == [a])
            #expect(state.slices(of: a).isEmpty)
            // Deleting it now changes nothing; bringing it back without the label restores it.
            #expect(state.apply(to: state.revision + 1, upserts: [], deletes: [ObjectKey(kind: .endpointSlice, namespace: "default", name: "s-1")]).isEmpty)
            #expect(state.apply(to: state.revision + 1, upserts: [.endpointSlice(slice)], deletes: []) == [a])
            #expect(state.slices(of: a).count == 1)
        }
        slice.metadata.labels[NodeView.serviceProxyNameLabel] = "other"
        #expect(snapshot([.endpointSlice(slice)]).slices(of: a).isEmpty)
    }

    /// Services keep the labels the proxy reads, and nothing else of their labels.
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
