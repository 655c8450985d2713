import ProxyModel
import Testing

@testable import ProxyAPI

@Suite struct ConversionTests {
    @Test func everyServiceFieldSurvivesTheWire() throws {
        let service = Service(
            metadata: ObjectMeta(namespace: "shop", name: "cart", labels: ["app": "cart"], revision: 7),
            type: .loadBalancer,
            clusterIPs: [IPAddress("10.96.0.7")!, IPAddress("fd00:10:96::7")!],
            ipFamilies: [.ipv4, .ipv6],
            ipFamilyPolicy: .requireDualStack,
            ports: [
                ServicePort(name: "http", protocol: .tcp, port: 80, targetPort: .name("web"), nodePort: 30080),
                ServicePort(name: "dns", protocol: .udp, port: 53, targetPort: .number(5353), nodePort: 30053),
                ServicePort(name: "sig", protocol: .sctp, port: 9000),
            ],
            sessionAffinity: .clientIP(timeoutSeconds: 600),
            externalTrafficPolicy: .local,
            internalTrafficPolicy: .local,
            externalIPs: [IPAddress("192.0.2.1")!],
            loadBalancerSourceRanges: [CIDR("198.51.100.0/24")!, CIDR("2001:db8::/32")!],
            loadBalancerIngressIPs: [IPAddress("203.0.113.9")!, IPAddress("203.0.113.10")!],
            loadBalancerIngressIPModes: [.vip, .proxy],
            healthCheckNodePort: 32100,
            trafficDistribution: .preferSameZone)
        #expect(try Service(wire: service.wire) == service)
        let headless = Service(metadata: ObjectMeta(namespace: "a", name: "b"), headless: true)
        #expect(headless.wire.clusterIps == ["None"])
        #expect(try Service(wire: headless.wire) == headless)
    }

    /// ipModes are one per ingress IP, "" meaning VIP; all VIP is the same as none.
    @Test func ingressIPModesDefaultToVIP() throws {
        var wire = Service(metadata: ObjectMeta(namespace: "a", name: "b"), type: .loadBalancer).wire
        wire.loadBalancerIngressIps = ["203.0.113.9", "203.0.113.10"]
        wire.loadBalancerIngressIpModes = ["", "VIP"]
        #expect(try Service(wire: wire).loadBalancerIngressIPModes == nil)
        wire.loadBalancerIngressIpModes = ["", "Proxy"]
        let service = try Service(wire: wire)
        #expect(service.loadBalancerIngressIPModes == [.vip, .proxy])
        #expect(service.loadBalancerVIPs == [IPAddress("203.0.113.9")!])
        #expect(service.wire.loadBalancerIngressIpModes == ["VIP", "Proxy"])
        wire.loadBalancerIngressIpModes = []
        #expect(try Service(wire: wire).loadBalancerVIPs.count == 2)
    }

    @Test func everySliceFieldSurvivesTheWire() throws {
        let slice = EndpointSlice(
            metadata: ObjectMeta(namespace: "shop", name: "cart-x1"), serviceName: "cart", addressType: .ipv6,
            ports: [EndpointPort(name: "http", protocol: .tcp, port: 8080)],
            endpoints: [
                Endpoint(
                    addresses: [IPAddress("fd00::5")!], conditions: EndpointConditions(ready: false, serving: true, terminating: true),
                    nodeName: "node-a", zone: "z1", hintZones: ["z1"], hintNodes: ["node-a"])
            ])
        #expect(try EndpointSlice(wire: slice.wire) == slice)
    }

    @Test func unsetWireFieldsTakeKubernetesDefaults() throws {
        var wire = Kubeproxy_V1_Service()
        wire.metadata.namespace = "default"
        wire.metadata.name = "web"
        wire.ports = [.with { $0.port = 80 }]
        wire.sessionAffinity = "ClientIP"
        let service = try Service(wire: wire)
        #expect(service.type == .clusterIP)
        #expect(service.ports[0].protocol == .tcp)
        #expect(service.ports[0].targetPort == nil)
        #expect(service.sessionAffinity == .clientIP(timeoutSeconds: 10800))
        #expect(service.externalTrafficPolicy == .cluster)
        var endpoint = Kubeproxy_V1_EndpointSlice()
        endpoint.addressType = "IPv4"
        endpoint.endpoints = [.with { $0.addresses = ["10.0.0.1"] }]
        let conditions = try EndpointSlice(wire: endpoint).endpoints[0].conditions
        #expect(conditions == EndpointConditions(ready: true, serving: true, terminating: false))
    }

    @Test func badWireTextNamesEveryField() {
        var wire = Kubeproxy_V1_Service()
        wire.type = "Cluster"
        wire.clusterIps = ["10.96.0.1", "fd00::01"]
        wire.ipFamilies = ["ipv4"]
        wire.loadBalancerSourceRanges = ["10.0.0.1/8"]
        wire.loadBalancerIngressIps = ["203.0.113.9"]
        wire.loadBalancerIngressIpModes = ["proxy"]
        wire.ports = [.with { $0.port = 80; $0.protocol = .UNRECOGNIZED(7) }]
        do {
            _ = try Service(wire: wire)
            Issue.record("expected an error")
        } catch {
            #expect(error.violations.map(\.field) == [
                "spec.type", "spec.clusterIPs[1]", "spec.ipFamilies[0]", "spec.ports[0].protocol",
                "spec.loadBalancerSourceRanges[0]", "status.loadBalancer.ingress[0].ipMode",
            ])
        }
        var slice = Kubeproxy_V1_EndpointSlice()
        slice.addressType = "IPv5"
        #expect(throws: ValidationError.self) { try EndpointSlice(wire: slice) }
        #expect(throws: ValidationError.self) { try ProxyObject(wire: Kubeproxy_V1_Object()) }
    }
}
