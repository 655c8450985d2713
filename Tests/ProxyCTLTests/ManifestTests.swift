import ProxyAPI
import ProxyModel
import Testing

@testable import ProxyCTL

@Suite struct ManifestTests {
    @Test func acceptsAServiceExportedFromARealCluster() throws {
        let yaml = """
            apiVersion: v1
            kind: Service
            metadata:
              name: web
              namespace: shop
              uid: 6f1c0d1e-0000-4000-8000-000000000001
              resourceVersion: "48213"
              creationTimestamp: "2025-05-01T10:00:00Z"
              annotations: {kubectl.kubernetes.io/last-applied-configuration: "{}"}
              labels: {app: web, tier: "1"}
              managedFields: [{manager: kubectl, operation: Update}]
            spec:
              type: LoadBalancer
              clusterIP: 10.96.4.7
              clusterIPs: [10.96.4.7, "fd00:10:96::4:7"]
              ipFamilies: [IPv4, IPv6]
              ipFamilyPolicy: PreferDualStack
              selector: {app: web}
              allocateLoadBalancerNodePorts: true
              externalTrafficPolicy: Local
              healthCheckNodePort: 32001
              sessionAffinity: ClientIP
              sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
              loadBalancerSourceRanges: [192.0.2.0/24]
              ports:
              - {name: http, port: 80, targetPort: http, nodePort: 30080, protocol: TCP, appProtocol: http}
              - {name: dns, port: 53, targetPort: 5353, protocol: UDP}
            status:
              loadBalancer:
                ingress: [{ip: 203.0.113.10, ipMode: VIP}, {hostname: lb.example.com}, {ip: 203.0.113.11, ipMode: Proxy}]
            """
        let objects = try Manifests.decode(yaml, source: "web.yaml", defaultNamespace: "default")
        #expect(objects.count == 1)
        let service = try Service(wire: objects[0].object.service)
        #expect(service.metadata == ObjectMeta(namespace: "shop", name: "web", labels: ["app": "web", "tier": "1"]))
        #expect(service.type == .loadBalancer)
        #expect(service.clusterIPs.map(\.description) == ["10.96.4.7", "fd00:10:96::4:7"])
        #expect(service.ports[0] == ServicePort(name: "http", protocol: .tcp, port: 80, targetPort: .name("http"), nodePort: 30080))
        #expect(service.ports[1].targetPort == .number(5353))
        #expect(service.sessionAffinity == .clientIP(timeoutSeconds: 600))
        #expect(service.healthCheckNodePort == 32001)
        #expect(service.loadBalancerIngressIPs.map(\.description) == ["203.0.113.10", "203.0.113.11"])
        #expect(service.loadBalancerIngressIPModes == [.vip, .proxy])
        // Written back as a cluster shows it.
        let ingress = (Format.manifest(.service(service))["status"] as? [String: Any])
            .flatMap { $0["loadBalancer"] as? [String: Any] }.flatMap { $0["ingress"] as? [[String: String]] }
        #expect(ingress == [["ip": "203.0.113.10", "ipMode": "VIP"], ["ip": "203.0.113.11", "ipMode": "Proxy"]])
        #expect(objects[0].location == "web.yaml: document 1 (Service shop/web)")
    }

    @Test func readsMultiDocumentFilesListsAndLegacyEndpoints() throws {
        let yaml = """
            apiVersion: v1
            kind: List
            items:
            - apiVersion: v1
              kind: Service
              metadata: {name: a}
              spec: {ports: [{port: 80}]}
            - apiVersion: discovery.k8s.io/v1
              kind: EndpointSlice
              metadata: {name: a-1, labels: {kubernetes.io/service-name: a}}
              addressType: IPv6
              endpoints: [{addresses: ["fd00::5"], conditions: {ready: false, serving: true, terminating: true}, hints: {forZones: [{name: z1}]}}]
            ---
            ---
            apiVersion: v1
            kind: Endpoints
            metadata: {name: legacy, namespace: ops}
            subsets:
            - addresses: [{ip: 10.0.0.5, nodeName: n1}, {ip: "fd00::9"}]
              notReadyAddresses: [{ip: 10.0.0.6}]
              ports: [{name: http, port: 8080, protocol: TCP}]
            """
        let objects = try Manifests.decode(yaml, source: "all.yaml", defaultNamespace: "default")
        #expect(objects.map(\.name) == ["a", "a-1", "legacy-legacy-0-v4", "legacy-legacy-0-v6"])
        #expect(objects.map(\.document) == [1, 1, 3, 3])
        let slice = try EndpointSlice(wire: objects[1].object.endpointSlice)
        #expect(slice.endpoints[0].conditions == EndpointConditions(ready: false, serving: true, terminating: true))
        #expect(slice.endpoints[0].hintZones == ["z1"])
        let legacy = try EndpointSlice(wire: objects[2].object.endpointSlice)
        #expect(legacy.serviceName == "legacy")
        #expect(legacy.metadata.namespace == "ops")
        #expect(legacy.endpoints.map(\.conditions.ready) == [true, false])
        #expect(legacy.endpoints[0].nodeName == "n1")
        #expect(legacy.ports == [EndpointPort(name: "http", protocol: .tcp, port: 8080)])
    }

    @Test(arguments: [
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}", "all.yaml: document 1: unsupported kind v1 Pod"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {prots: []}", "all.yaml: document 1 (Service default/s): spec.prots: unknown or unsupported field"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 0}]}", "spec.ports[0].port: must be between 1 and 65535, got 0"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80, protocol: ICMP}]}", "spec.ports[0].protocol: unsupported protocol \"ICMP\""),
        ("kind: List\nitems: []\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: eighty}]}", "document 2 (Service default/s): spec.ports[0].port: must be an integer"),
        ("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\naddressType: FQDN", "metadata.labels[kubernetes.io/service-name]: required"),
        ("key: [unclosed", "all.yaml: not valid YAML or JSON"),
    ])
    func reportsTheFileDocumentObjectAndField(yaml: String, message: String) {
        do {
            _ = try Manifests.decode(yaml, source: "all.yaml", defaultNamespace: "default")
            Issue.record("expected an error containing \(message)")
        } catch {
            #expect("\(error)".contains(message), "\(error)")
        }
    }

    @Test func jsonManifestsAreAcceptedToo() throws {
        let json = #"{"apiVersion":"v1","kind":"Service","metadata":{"name":"j"},"spec":{"ports":[{"port":443,"targetPort":8443}]}}"#
        let objects = try Manifests.decode(json, source: "j.json", defaultNamespace: "default")
        #expect(objects[0].object.service.ports[0].targetPortNumber == 8443)
    }
}

@Suite struct ApplySizeTests {
    @Test func anApplyOverTheServersLimitIsRefusedBeforeItIsSent() throws {
        let request = Kubeproxy_V1_ApplyRequest.with {
            $0.items = (0..<3).map { index in
                .with { $0.object = ProxyObject.service(Service(metadata: ObjectMeta(namespace: "default", name: "web-\(index)"))).wire }
            }
        }
        let size = (try request.serializedBytes() as [UInt8]).count
        try Apply.checkSize(of: request, limit: size)
        #expect {
            try Apply.checkSize(of: request, limit: size - 1)
        } throws: { error in
            "\(error)" == "3 objects make an Apply of \(size) bytes, more than the \(size - 1) the control server takes in one "
                + "request: apply them in parts (each apply is one transaction)"
        }
    }
}
