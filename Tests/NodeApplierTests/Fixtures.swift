import Logging
import NodeApplier
import ProxyAPI
import ProxyModel
import Testing

func ip(_ text: String) -> IPAddress { IPAddress(text)! }
func cidr(_ text: String) -> CIDR { CIDR(text)! }

let fixtureNode = NodeConfig(
    nodeName: "node-a", zone: "zone-a", nodeIPs: [ip("192.168.10.1"), ip("fd00:10::1")],
    clusterCIDRs: [cidr("10.244.0.0/16"), cidr("fd00:244::/64")])

/// ClientIP affinity in one kernel table, as below `Layout.AffinityShards.servicesPerShard` services.
let oneShard = Layout.AffinityShards(for: 0)

let podA1 = "10.244.1.11"  // on node-a
let podA2 = "10.244.1.12"  // on node-a
let podB1 = "10.244.2.21"  // on node-b
let podB2 = "10.244.2.22"  // on node-b
let outsideClient = ip("192.168.50.7")
let allowedClient = ip("203.0.113.9")

func meta(_ name: String, labels: [String: String] = [:]) -> ObjectMeta {
    ObjectMeta(namespace: "default", name: name, labels: labels)
}

func endpoint(
    _ address: String, node: String, ready: Bool = true, serving: Bool? = nil, terminating: Bool = false, zone: String? = nil,
    hintZones: [String] = []
) -> Endpoint {
    Endpoint(
        addresses: [ip(address)], conditions: EndpointConditions(ready: ready, serving: serving, terminating: terminating),
        nodeName: node, zone: zone, hintZones: hintZones)
}

func slice(
    _ name: String, service: String, family: IPFamily = .ipv4, ports: [EndpointPort] = [EndpointPort(name: "http", port: 8080)],
    _ endpoints: [Endpoint]
) -> EndpointSlice {
    EndpointSlice(metadata: meta(name), serviceName: service, addressType: family, ports: ports, endpoints: endpoints)
}

/// A fixture set that exercises every feature of the layout.
enum Fixture {
    static let services: [Service] = [
        // Dual-stack ClusterIP, named targetPort resolved through the slice's port name, spread over 3 / 2 endpoints.
        Service(
            metadata: meta("web"), clusterIPs: [ip("10.96.0.10"), ip("fd00:10:96::10")], ipFamilies: [.ipv4, .ipv6],
            ipFamilyPolicy: .requireDualStack, ports: [ServicePort(name: "http", port: 80, targetPort: .name("web"))]),
        // One endpoint: plain DNAT.
        Service(metadata: meta("single"), clusterIPs: [ip("10.96.0.11")], ports: [ServicePort(name: "http", port: 80)]),
        // NodePort, Cluster policy, TCP, UDP and SCTP.
        Service(
            metadata: meta("nodeport"), type: .nodePort, clusterIPs: [ip("10.96.0.12")],
            ports: [
                ServicePort(name: "http", protocol: .tcp, port: 80, nodePort: 30080),
                ServicePort(name: "dns", protocol: .udp, port: 53, nodePort: 30053),
                ServicePort(name: "sig", protocol: .sctp, port: 9000, nodePort: 30900),
            ]),
        // LoadBalancer, Local policy, source ranges, health check node port; a second ingress IP
        // in ipMode Proxy (the load balancer sends its traffic to the NodePort itself).
        Service(
            metadata: meta("lb-local"), type: .loadBalancer, clusterIPs: [ip("10.96.0.13")],
            ports: [ServicePort(name: "http", port: 80, nodePort: 30081)], externalTrafficPolicy: .local,
            loadBalancerSourceRanges: [cidr("203.0.113.0/24")], loadBalancerIngressIPs: [ip("172.18.0.10"), ip("172.18.0.12")],
            loadBalancerIngressIPModes: [.vip, .proxy], healthCheckNodePort: 32100),
        // LoadBalancer, Local policy, no endpoint on this node.
        Service(
            metadata: meta("lb-remote"), type: .loadBalancer, clusterIPs: [ip("10.96.0.14")],
            ports: [ServicePort(name: "http", port: 80, nodePort: 30082)], externalTrafficPolicy: .local,
            loadBalancerIngressIPs: [ip("172.18.0.11")], healthCheckNodePort: 32101),
        // ClientIP affinity, on a NodePort with Local policy.
        Service(
            metadata: meta("sticky"), type: .nodePort, clusterIPs: [ip("10.96.0.15")],
            ports: [ServicePort(name: "http", port: 80, nodePort: 30083)], sessionAffinity: .clientIP(timeoutSeconds: 600),
            externalTrafficPolicy: .local),
        // internalTrafficPolicy Local, endpoints only elsewhere.
        Service(
            metadata: meta("itp-local"), clusterIPs: [ip("10.96.0.16")], ports: [ServicePort(name: "http", port: 80)],
            internalTrafficPolicy: .local),
        // No endpoints.
        Service(metadata: meta("empty"), clusterIPs: [ip("10.96.0.17")], ports: [ServicePort(name: "http", port: 80)]),
        // Only serving+terminating endpoints.
        Service(metadata: meta("draining"), clusterIPs: [ip("10.96.0.18")], ports: [ServicePort(name: "http", port: 80)]),
        // Zone hints.
        Service(
            metadata: meta("zonal"), clusterIPs: [ip("10.96.0.19")], ports: [ServicePort(name: "http", port: 80)],
            trafficDistribution: .preferSameZone),
        // externalIPs, Cluster policy.
        Service(
            metadata: meta("external"), clusterIPs: [ip("10.96.0.20")], ports: [ServicePort(name: "http", port: 80)],
            externalIPs: [ip("198.51.100.5")]),
        // Not ours: headless, ExternalName, another proxy's.
        Service(metadata: meta("headless"), headless: true, ports: [ServicePort(name: "http", port: 80)]),
        Service(metadata: meta("alias"), type: .externalName, externalName: "example.com"),
        Service(
            metadata: meta("other-proxy", labels: [NodeView.serviceProxyNameLabel: "other"]), clusterIPs: [ip("10.96.0.21")],
            ports: [ServicePort(name: "http", port: 80)]),
    ]

    static let slices: [EndpointSlice] = [
        slice(
            "web-v4", service: "web", ports: [EndpointPort(name: "http", port: 8080)],
            [endpoint(podA1, node: "node-a"), endpoint(podB1, node: "node-b"), endpoint(podB2, node: "node-b")]),
        slice(
            "web-v6", service: "web", family: .ipv6, ports: [EndpointPort(name: "http", port: 8080)],
            [endpoint("fd00:244::11", node: "node-a"), endpoint("fd00:244::21", node: "node-b")]),
        slice("single", service: "single", [endpoint(podB1, node: "node-b")]),
        slice(
            "nodeport", service: "nodeport",
            ports: [
                EndpointPort(name: "http", protocol: .tcp, port: 8080), EndpointPort(name: "dns", protocol: .udp, port: 5353),
                EndpointPort(name: "sig", protocol: .sctp, port: 9000),
            ], [endpoint(podA1, node: "node-a"), endpoint(podB1, node: "node-b")]),
        slice("lb-local", service: "lb-local", [endpoint(podA2, node: "node-a"), endpoint(podB2, node: "node-b")]),
        slice("lb-remote", service: "lb-remote", [endpoint(podB2, node: "node-b")]),
        slice("sticky", service: "sticky", [endpoint(podA1, node: "node-a"), endpoint(podB1, node: "node-b")]),
        slice("itp-local", service: "itp-local", [endpoint(podB1, node: "node-b")]),
        slice(
            "draining", service: "draining",
            [
                endpoint(podA1, node: "node-a", ready: false, serving: true, terminating: true),
                endpoint(podB1, node: "node-b", ready: false, serving: false, terminating: true),
            ]),
        slice(
            "zonal", service: "zonal",
            [
                endpoint(podA1, node: "node-a", zone: "zone-a", hintZones: ["zone-a"]),
                endpoint(podB1, node: "node-b", zone: "zone-b", hintZones: ["zone-b"]),
            ]),
        slice("external", service: "external", [endpoint(podB1, node: "node-b")]),
        slice("other-proxy", service: "other-proxy", [endpoint(podB1, node: "node-b")]),
    ]

    static func snapshot(revision: UInt64 = 1, services: [Service] = services, slices: [EndpointSlice] = slices)
        -> Kubeproxy_V1_ServerMessage
    {
        .with {
            $0.snapshot = .with {
                $0.revision = revision
                $0.services = services.map(\.wire)
                $0.endpointSlices = slices.map(\.wire)
                $0.storeID = "fixture"
            }
        }
    }
}

func delta(from: UInt64, to: UInt64, upserts: [ProxyObject] = [], deletes: [ObjectKey] = []) -> Kubeproxy_V1_ServerMessage {
    .with {
        $0.delta = .with {
            $0.fromRevision = from
            $0.toRevision = to
            $0.upserts = upserts.map(\.wire)
            $0.deletes = deletes.map(\.wire)
        }
    }
}

func quietLogger() -> Logger {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    return logger
}

/// An applier over the fake, synced with the fixture set.
func fixtureApplier(
    _ nft: FakeNFTables = FakeNFTables(), metrics: ApplierMetrics = ApplierMetrics(), node: NodeConfig = fixtureNode
) async throws -> (Applier, FakeNFTables) {
    let applier = Applier(node: node, tableName: "kube-proxy-swift", nft: nft, metrics: metrics, logger: quietLogger())
    try await applier.receive(Fixture.snapshot())
    #expect(await applier.sync() == .applied(revision: 1))
    return (applier, nft)
}

/// The lines of the metric `name` (each label set's) in `metrics`' text, sorted.
func metricLines(_ metrics: ApplierMetrics, _ name: String) -> [String] {
    String(decoding: metrics.render(), as: UTF8.self).split(separator: "\n")
        .filter { $0.hasPrefix(name + " ") || $0.hasPrefix(name + "{") }.map(String.init).sorted()
}
