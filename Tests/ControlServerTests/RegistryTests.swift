import GRPCCore
import GRPCNIOTransportHTTP2
import ProxyAPI
import ProxyGRPC
import ProxyModel
import Testing

@testable import ControlServer

typealias Registry = Kubeproxy_V1_Registry.Client<HTTP2ClientTransport.Posix>

func expectStatus(
    _ code: RPCError.Code, containing text: String? = nil, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () async throws -> Void
) async {
    do {
        try await body()
        Issue.record("expected \(code)", sourceLocation: sourceLocation)
    } catch let error as RPCError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        if let text { #expect(error.message.contains(text), "\(error.message)", sourceLocation: sourceLocation) }
    } catch {
        Issue.record("expected RPCError \(code), got \(error)", sourceLocation: sourceLocation)
    }
}

@Suite(.serialized) struct RegistryTests {
    @Test func applyReturnsStoredObjectsWithAllocationsAndGetReadsThemBack() async throws {
        try await withServer { server in
            try await server.withClient { client in
                let registry = Registry(wrapping: client)
                var wire = webService().wire
                wire.service.type = "NodePort"
                wire.service.ipFamilyPolicy = "PreferDualStack"
                let response = try await registry.apply(.with { $0.items = [.with { $0.object = wire }] })
                #expect(response.revision == 1)
                #expect(response.results[0].outcome == .created)
                let stored = response.results[0].object.service
                #expect(stored.clusterIps.count == 2)
                #expect(stored.ipFamilies == ["IPv4", "IPv6"])
                #expect((30000...32767).contains(Int(stored.ports[0].nodePort)))
                let read = try await registry.get(.with { $0.ref = .with { $0.kind = .service; $0.namespace = "default"; $0.name = "web" } })
                #expect(read.object.service == stored)
                let again = try await registry.apply(.with { $0.items = [.with { $0.object = wire }] })
                #expect(again.results[0].outcome == .unchanged)
                #expect(again.revision == 1)
            }
        }
    }

    @Test func errorsMapToStatusCodesNamingTheField() async throws {
        try await withServer { server in
            try await server.withClient { client in
                let registry = Registry(wrapping: client)
                var bad = webService().wire
                bad.service.ports[0].port = 70000
                bad.service.clusterIps = ["10.96.0.010"]
                await expectStatus(.invalidArgument, containing: "items[0].spec.ports[0].port: must be between 1 and 65535") {
                    _ = try await registry.apply(.with { $0.items = [.with { $0.object = bad }] })
                }
                await expectStatus(.invalidArgument, containing: "items[0].spec.clusterIPs[0]") {
                    _ = try await registry.apply(.with { $0.items = [.with { $0.object = bad }] })
                }
                var wrongProtocol = webService().wire
                wrongProtocol.service.ports[0].protocol = .UNRECOGNIZED(9)
                await expectStatus(.invalidArgument, containing: "spec.ports[0].protocol") {
                    _ = try await registry.apply(.with { $0.items = [.with { $0.object = wrongProtocol }] })
                }
                await expectStatus(.invalidArgument, containing: "items") { _ = try await registry.apply(.init()) }
                await expectStatus(.notFound, containing: "Service default/nope") {
                    _ = try await registry.get(.with { $0.ref = .with { $0.kind = .service; $0.namespace = "default"; $0.name = "nope" } })
                }
                var fixed = webService().wire
                fixed.service.clusterIps = ["10.96.0.10"]
                _ = try await registry.apply(.with { $0.items = [.with { $0.object = fixed }] })
                var clash = fixed
                clash.service.metadata.name = "clash"
                await expectStatus(.alreadyExists, containing: "10.96.0.10 is already allocated to service default/web") {
                    _ = try await registry.apply(.with { $0.items = [.with { $0.object = clash }] })
                }
                await expectStatus(.failedPrecondition, containing: "expected 0") {
                    _ = try await registry.apply(.with { $0.items = [.with { $0.object = fixed; $0.expectedRevision = 0 }] })
                }
                await expectStatus(.notFound) {
                    _ = try await registry.delete(.with { $0.items = [.with { $0.ref = .with { $0.kind = .service; $0.namespace = "default"; $0.name = "nope" } }] })
                }
                await expectStatus(.invalidArgument, containing: "kind") { _ = try await registry.list(.init()) }
                await expectStatus(.invalidArgument, containing: "page_token") {
                    _ = try await registry.list(.with { $0.kind = .service; $0.pageToken = "%%%" })
                }
                await expectStatus(.notFound) { _ = try await registry.getNode(.with { $0.name = "ghost" }) }
                // Nothing of the failed writes was stored.
                let list = try await registry.list(.with { $0.kind = .service })
                #expect(list.objects.map(\.service.metadata.name) == ["web"])
                #expect(list.revision == 1)
            }
        }
    }

    @Test func listPagesThroughEverythingAtOneRevision() async throws {
        try await withServer { server in
            try await server.withClient { client in
                let registry = Registry(wrapping: client)
                let slices = (0..<25).map { webSlice(String(format: "s%02d", $0)) }
                _ = try await registry.apply(.with { $0.items = slices.map { object in .with { $0.object = object.wire } } })
                var names: [String] = []
                var token = ""
                var revisions = Set<UInt64>()
                repeat {
                    let page = try await registry.list(.with {
                        $0.kind = .endpointSlice
                        $0.namespace = "default"
                        $0.pageSize = 10
                        $0.pageToken = token
                    })
                    names += page.objects.map(\.endpointSlice.metadata.name)
                    revisions.insert(page.revision)
                    token = page.nextPageToken
                } while !token.isEmpty
                #expect(names == (0..<25).map { String(format: "s%02d", $0) })
                #expect(revisions == [1])
            }
        }
    }

    @Test func watchReplaysHistoryThenFollowsAndReportsCompaction() async throws {
        try await withServer(retainedRevisions: 3) { server in
            try await server.withClient { client in
                let registry = Registry(wrapping: client)
                try await apply(client, webService())  // 1
                try await apply(client, webSlice("a"))  // 2
                let events = try await within(10, "watch events") {
                    try await registry.watch(.with { $0.fromRevision = 1 }) { response in
                        var events: [Kubeproxy_V1_WatchEvent] = []
                        for try await event in response.messages {
                            events.append(event)
                            if events.count == 1 {
                                _ = try await Registry(wrapping: client).delete(.with {
                                    $0.items = [.with { $0.ref = .with { $0.kind = .endpointSlice; $0.namespace = "default"; $0.name = "a" } }]
                                })
                            }
                            if events.count == 2 { break }
                        }
                        return events
                    }
                }
                #expect(events.map(\.revision) == [2, 3])
                #expect(events[0].changes[0].type == .put)
                #expect(events[0].changes[0].object.endpointSlice.metadata.name == "a")
                #expect(events[1].changes[0].type == .delete)
                #expect(events[1].changes[0].ref.name == "a")
                for index in 0..<4 { try await apply(client, webSlice("b\(index)")) }
                await expectStatus(.outOfRange, containing: "compacted") {
                    try await registry.watch(.with { $0.fromRevision = 1 }) { response in
                        for try await _ in response.messages {}
                    }
                }
                // A kind filter skips other objects.
                let filtered = try await within(10, "filtered watch") {
                    try await registry.watch(.with { $0.fromRevision = 5; $0.kinds = [.service] }) { response -> Kubeproxy_V1_WatchEvent? in
                        try await apply(client, webService(port: 81))
                        for try await event in response.messages { return event }
                        return nil
                    }
                }
                #expect(filtered?.changes.map(\.ref.kind) == [.service])
            }
        }
    }

    @Test func serverListensAndServesOverIPv6() async throws {
        try await withServer(listenHost: "::1") { server in
            #expect(server.address.host == "::1")
            try await server.withClient { client in
                let registry = Registry(wrapping: client)
                var wire = webService().wire
                wire.service.ipFamilies = ["IPv6"]
                let response = try await registry.apply(.with { $0.items = [.with { $0.object = wire }] })
                let address = try #require(IPAddress(response.results[0].object.service.clusterIps[0]))
                #expect(address.family == .ipv6)
                let node = TestNode(client: client, name: "v6-node", addresses: ["fd00::10"])
                try await node.waitFor(revision: 1)
                let info = try await registry.serverInfo(.init())
                #expect(info.serviceCidrs == ["10.96.0.0/12", "fd00:10:96::/112"])
                await node.close()
            }
        }
    }
}
