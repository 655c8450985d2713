import Testing

@testable import ProxyModel

/// One row of a validation table: a change to a valid object, and the field the error must
/// name (nil: the object stays valid).
struct Case<Object>: CustomTestStringConvertible, Sendable {
    let name: String
    let field: String?
    let change: @Sendable (inout Object) -> Void

    init(_ name: String, rejects field: String?, _ change: @escaping @Sendable (inout Object) -> Void) {
        self.name = name
        self.field = field
        self.change = change
    }

    var testDescription: String { name }
}

func ip(_ text: String) -> IPAddress { IPAddress(text)! }

let validService = Service(
    metadata: ObjectMeta(namespace: "default", name: "web", labels: ["app": "web"]),
    ports: [ServicePort(name: "http", port: 80, targetPort: .number(8080))])

let serviceCases: [Case<Service>] = [
    Case("a minimal ClusterIP service", rejects: nil) { _ in },
    Case("a dual-stack service with both families", rejects: nil) {
        $0.ipFamilyPolicy = .requireDualStack
        $0.ipFamilies = [.ipv6, .ipv4]
        $0.clusterIPs = [ip("fd00:10:96::10"), ip("10.96.0.10")]
    },
    Case("a NodePort service with a nodePort in range", rejects: nil) {
        $0.type = .nodePort
        $0.ports[0].nodePort = 30080
    },
    Case("a LoadBalancer with Local policy and health check port", rejects: nil) {
        $0.type = .loadBalancer
        $0.externalTrafficPolicy = .local
        $0.healthCheckNodePort = 32000
        $0.loadBalancerSourceRanges = [CIDR("192.0.2.0/24")!]
        $0.loadBalancerIngressIPs = [ip("192.0.2.10")]
    },
    Case("a headless service without ports", rejects: nil) {
        $0.headless = true
        $0.ports = []
    },
    Case("an ExternalName service", rejects: nil) {
        $0.type = .externalName
        $0.externalName = "db.example.com"
    },
    Case("a named targetPort", rejects: nil) { $0.ports[0].targetPort = .name("http-alt") },
    Case("ClientIP affinity at the maximum timeout", rejects: nil) { $0.sessionAffinity = .clientIP(timeoutSeconds: 86400) },

    Case("a name that is not a DNS label", rejects: "metadata.name") { $0.metadata.name = "Web_1" },
    Case("a name starting with a digit", rejects: "metadata.name") { $0.metadata.name = "1web" },
    Case("a name longer than 63", rejects: "metadata.name") { $0.metadata.name = String(repeating: "a", count: 64) },
    Case("an empty namespace", rejects: "metadata.namespace") { $0.metadata.namespace = "" },
    Case("an oversized label value", rejects: "metadata.labels[app]") {
        $0.metadata.labels["app"] = String(repeating: "x", count: 64)
    },
    Case("an invalid label key", rejects: "metadata.labels[-bad]") { $0.metadata.labels["-bad"] = "x" },
    Case("an oversized label key prefix", rejects: "metadata.labels[\(String(repeating: "p", count: 254))/k]") {
        $0.metadata.labels[String(repeating: "p", count: 254) + "/k"] = "v"
    },
    Case("port 0", rejects: "spec.ports[0].port") { $0.ports[0].port = 0 },
    Case("port 65536", rejects: "spec.ports[0].port") { $0.ports[0].port = 65536 },
    Case("targetPort 70000", rejects: "spec.ports[0].targetPort") { $0.ports[0].targetPort = .number(70000) },
    Case("a named targetPort longer than 15", rejects: "spec.ports[0].targetPort") {
        $0.ports[0].targetPort = .name("a-very-long-port-name")
    },
    Case("a named targetPort without a letter", rejects: "spec.ports[0].targetPort") { $0.ports[0].targetPort = .name("8080") },
    Case("a named targetPort with a double dash", rejects: "spec.ports[0].targetPort") { $0.ports[0].targetPort = .name("a--b") },
    Case("two unnamed ports", rejects: "spec.ports[1].name") {
        $0.ports = [ServicePort(port: 80), ServicePort(port: 81)]
    },
    Case("duplicate port names", rejects: "spec.ports[1].name") {
        $0.ports.append(ServicePort(name: "http", port: 81))
    },
    Case("duplicate port and protocol", rejects: "spec.ports[1]") {
        $0.ports.append(ServicePort(name: "other", port: 80))
    },
    Case("a port name that is not a DNS label", rejects: "spec.ports[0].name") { $0.ports[0].name = "HTTP" },
    Case("no ports", rejects: "spec.ports") { $0.ports = [] },
    Case("a nodePort on a ClusterIP service", rejects: "spec.ports[0].nodePort") { $0.ports[0].nodePort = 30080 },
    Case("a nodePort outside the range", rejects: "spec.ports[0].nodePort") {
        $0.type = .nodePort
        $0.ports[0].nodePort = 8080
    },
    Case("duplicate nodePorts", rejects: "spec.ports[1].nodePort") {
        $0.type = .nodePort
        $0.ports[0].nodePort = 30080
        $0.ports.append(ServicePort(name: "b", port: 81, nodePort: 30080))
    },
    Case("an affinity timeout of 0", rejects: "spec.sessionAffinityConfig.clientIP.timeoutSeconds") {
        $0.sessionAffinity = .clientIP(timeoutSeconds: 0)
    },
    Case("an affinity timeout above a day", rejects: "spec.sessionAffinityConfig.clientIP.timeoutSeconds") {
        $0.sessionAffinity = .clientIP(timeoutSeconds: 86401)
    },
    Case("a ClusterIP outside the service CIDR", rejects: "spec.clusterIPs[0]") { $0.clusterIPs = [ip("192.168.1.1")] },
    Case("the network address of the service CIDR", rejects: "spec.clusterIPs[0]") { $0.clusterIPs = [ip("10.96.0.0")] },
    Case("a ClusterIP of a family the service does not have", rejects: "spec.clusterIPs[0]") {
        $0.ipFamilies = [.ipv4]
        $0.clusterIPs = [ip("fd00:10:96::1")]
    },
    Case("two ClusterIPs with SingleStack", rejects: "spec.clusterIPs") {
        $0.clusterIPs = [ip("10.96.0.10"), ip("fd00:10:96::10")]
    },
    Case("two ClusterIPs of one family", rejects: "spec.clusterIPs") {
        $0.ipFamilyPolicy = .preferDualStack
        $0.clusterIPs = [ip("10.96.0.10"), ip("10.96.0.11")]
    },
    Case("two families with SingleStack", rejects: "spec.ipFamilies") { $0.ipFamilies = [.ipv4, .ipv6] },
    Case("duplicate families", rejects: "spec.ipFamilies") {
        $0.ipFamilyPolicy = .preferDualStack
        $0.ipFamilies = [.ipv4, .ipv4]
    },
    Case("headless with type NodePort", rejects: "spec.clusterIPs") {
        $0.type = .nodePort
        $0.headless = true
    },
    Case("ExternalName without a name", rejects: "spec.externalName") { $0.type = .externalName },
    Case("ExternalName that is not a DNS name", rejects: "spec.externalName") {
        $0.type = .externalName
        $0.externalName = "not a name"
    },
    Case("externalName on a ClusterIP service", rejects: "spec.externalName") { $0.externalName = "db.example.com" },
    Case("a loopback externalIP", rejects: "spec.externalIPs[0]") { $0.externalIPs = [ip("127.0.0.1")] },
    Case("a multicast externalIP", rejects: "spec.externalIPs[0]") { $0.externalIPs = [ip("ff02::1")] },
    Case("a link-local ingress IP", rejects: "status.loadBalancer.ingress[0].ip") {
        $0.loadBalancerIngressIPs = [ip("169.254.0.1")]
    },
    Case("an ingress IP in ipMode Proxy", rejects: nil) {
        $0.type = .loadBalancer
        $0.loadBalancerIngressIPs = [ip("192.0.2.10"), ip("192.0.2.11")]
        $0.loadBalancerIngressIPModes = [.vip, .proxy]
    },
    Case("ipModes not one per ingress IP", rejects: "status.loadBalancer.ingress") {
        $0.loadBalancerIngressIPs = [ip("192.0.2.10"), ip("192.0.2.11")]
        $0.loadBalancerIngressIPModes = [.proxy]
    },
    Case("externalTrafficPolicy Local on a plain ClusterIP", rejects: "spec.externalTrafficPolicy") {
        $0.externalTrafficPolicy = .local
    },
    Case("a healthCheckNodePort without Local policy", rejects: "spec.healthCheckNodePort") {
        $0.type = .loadBalancer
        $0.healthCheckNodePort = 32000
    },
    Case("a healthCheckNodePort outside the range", rejects: "spec.healthCheckNodePort") {
        $0.type = .loadBalancer
        $0.externalTrafficPolicy = .local
        $0.healthCheckNodePort = 80
    },
]

@Suite struct ServiceValidationTests {
    @Test(arguments: serviceCases)
    func validatesService(_ row: Case<Service>) {
        var service = validService
        row.change(&service)
        let context = ValidationContext()
        if let field = row.field {
            #expect(throws: ValidationError.self) { try service.validate(in: context) }
            do {
                try service.validate(in: context)
            } catch {
                #expect(error.violations.map(\.field).contains(field), "\(error)")
            }
        } else {
            #expect(throws: Never.self) { try service.validate(in: context) }
        }
    }

    @Test func reportsEveryViolationWithItsField() {
        var service = validService
        service.metadata.name = "Bad"
        service.ports = [ServicePort(name: "a", port: 0), ServicePort(name: "a", port: 70000)]
        do {
            try service.validate()
            Issue.record("expected a validation error")
        } catch {
            #expect(error.violations.map(\.field) == ["metadata.name", "spec.ports[0].port", "spec.ports[1].name", "spec.ports[1].port"])
            #expect(error.description.contains("spec.ports[1].port: must be between 1 and 65535, got 70000"))
        }
    }

    @Test func requireDualStackNeedsBothFamiliesConfigured() {
        var service = validService
        service.ipFamilyPolicy = .requireDualStack
        let v4Only = ValidationContext(serviceCIDRs: [CIDR("10.96.0.0/12")!])
        #expect(throws: ValidationError.self) { try service.validate(in: v4Only) }
        #expect(throws: Never.self) { try service.validate(in: ValidationContext()) }
    }
}
