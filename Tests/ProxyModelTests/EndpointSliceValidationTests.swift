import Testing

@testable import ProxyModel

let validSlice = EndpointSlice(
    metadata: ObjectMeta(namespace: "default", name: "web-abc12"), serviceName: "web", addressType: .ipv4,
    ports: [EndpointPort(name: "http", port: 8080)],
    endpoints: [
        Endpoint(addresses: [ip("10.244.1.5")], nodeName: "node-a", zone: "zone-1", hintZones: ["zone-1"]),
        Endpoint(addresses: [ip("10.244.2.7")], conditions: EndpointConditions(ready: false, serving: true, terminating: true)),
    ])

let sliceCases: [Case<EndpointSlice>] = [
    Case("a valid slice", rejects: nil) { _ in },
    Case("an IPv6 slice", rejects: nil) {
        $0.addressType = .ipv6
        $0.endpoints = [Endpoint(addresses: [ip("fd00:244::5")])]
    },
    Case("exactly 1000 endpoints", rejects: nil) {
        $0.endpoints = (0..<1000).map { Endpoint(addresses: [IPAddress.v4(0x0AF4_0000 + UInt32($0) + 1)]) }
    },
    Case("1001 endpoints", rejects: "endpoints") {
        $0.endpoints = (0..<1001).map { Endpoint(addresses: [IPAddress.v4(0x0AF4_0000 + UInt32($0) + 1)]) }
    },
    Case("an IPv6 address in an IPv4 slice", rejects: "endpoints[0].addresses[0]") {
        $0.endpoints[0].addresses = [ip("fd00::5")]
    },
    Case("a loopback endpoint", rejects: "endpoints[1].addresses[0]") { $0.endpoints[1].addresses = [ip("127.0.0.1")] },
    Case("a link-local endpoint", rejects: "endpoints[0].addresses[0]") { $0.endpoints[0].addresses = [ip("169.254.169.254")] },
    Case("a multicast endpoint", rejects: "endpoints[0].addresses[0]") { $0.endpoints[0].addresses = [ip("239.1.1.1")] },
    Case("an unspecified endpoint", rejects: "endpoints[0].addresses[0]") { $0.endpoints[0].addresses = [ip("0.0.0.0")] },
    Case("an IPv6 loopback endpoint", rejects: "endpoints[0].addresses[0]") {
        $0.addressType = .ipv6
        $0.endpoints = [Endpoint(addresses: [ip("::1")])]
    },
    Case("an endpoint without addresses", rejects: "endpoints[0].addresses") { $0.endpoints[0].addresses = [] },
    Case("port 0", rejects: "ports[0].port") { $0.ports[0].port = 0 },
    Case("duplicate port names", rejects: "ports[1].name") { $0.ports.append(EndpointPort(name: "http", port: 9090)) },
    Case("a port name that is not a DNS label", rejects: "ports[0].name") { $0.ports[0].name = "Http" },
    Case("a service name that is not a DNS label", rejects: "metadata.labels[kubernetes.io/service-name]") {
        $0.serviceName = "Web"
    },
    Case("a slice name that is not a DNS subdomain", rejects: "metadata.name") { $0.metadata.name = "web_1" },
    Case("a node name that is not a DNS subdomain", rejects: "endpoints[0].nodeName") { $0.endpoints[0].nodeName = "Node A" },
    Case("an empty zone hint", rejects: "endpoints[0].hints.forZones[0].name") { $0.endpoints[0].hintZones = [""] },
]

@Suite struct EndpointSliceValidationTests {
    @Test(arguments: sliceCases)
    func validatesSlice(_ row: Case<EndpointSlice>) {
        var slice = validSlice
        row.change(&slice)
        if let field = row.field {
            do {
                try slice.validate()
                Issue.record("expected \(field) to be rejected")
            } catch {
                #expect(error.violations.map(\.field).contains(field), "\(error)")
            }
        } else {
            #expect(throws: Never.self) { try slice.validate() }
        }
    }

    @Test func conditionsTakeKubernetesDefaults() {
        let unset = EndpointConditions()
        #expect(unset.ready && unset.serving && !unset.terminating)
        let terminating = EndpointConditions(ready: false, terminating: true)
        #expect(!terminating.ready && terminating.serving && terminating.terminating)
    }
}

@Suite struct NodeValidationTests {
    @Test func acceptsNodesAndRejectsBadNamesAndAddresses() throws {
        let node = Node(metadata: ObjectMeta(namespace: "", name: "node-a.example"), addresses: [ip("10.0.0.1"), ip("fd00::1")], zone: "z1")
        try node.validate()
        var bad = node
        bad.metadata.name = "Node_A"
        bad.metadata.namespace = "default"
        bad.addresses = [ip("0.0.0.0")]
        do {
            try bad.validate()
            Issue.record("expected an error")
        } catch {
            #expect(error.violations.map(\.field) == ["metadata.namespace", "metadata.name", "addresses[0]"])
        }
    }
}

@Suite struct FieldParsingTests {
    @Test func rejectsNonCanonicalAndMalformedText() {
        var v = Violations()
        #expect(v.ip("10.0.0.1", "a") == ip("10.0.0.1"))
        #expect(v.ip("FD00::1", "b") == nil)
        #expect(v.ip("fd00:0::1", "c") == nil)
        #expect(v.ip("10.0.0.256", "d") == nil)
        #expect(v.cidr("10.0.0.0/8", "e") != nil)
        #expect(v.cidr("10.0.0.1/8", "f") == nil)
        #expect(v.choice("Cluster", "g", empty: TrafficPolicy.cluster) == .cluster)
        #expect(v.choice("cluster", "h", empty: TrafficPolicy.cluster) == nil)
        #expect(v.list.map(\.field) == ["b", "c", "d", "f", "h"])
        #expect(v.list[0].message == "must be in canonical form \"fd00::1\", got \"FD00::1\"")
    }
}
