import ArgumentParser
import ProxyAPI
import ProxyModel

struct SetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set", abstract: "Set parts of objects.", subcommands: [SetEndpoints.self])
}

struct SetEndpoints: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "endpoints",
        abstract: "Replace a service's manually set endpoints: proxyctl set endpoints SERVICE IP[:PORT] ...",
        discussion: "Writes one EndpointSlice per address family and port, named SERVICE-manual-v4-PORT / SERVICE-manual-v6-PORT, with every endpoint ready. Without :PORT the service's first target port (or port) is used. Manual slices not in the new set are deleted afterwards. No addresses: remove all manual endpoints.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The service.")
    var service: String

    @Argument(help: "IP or IP:PORT ([IPv6]:PORT for IPv6 with a port).")
    var endpoints: [String] = []

    func validate() throws {
        for endpoint in endpoints where Self.parse(endpoint) == nil {
            throw ValidationError("endpoint \"\(endpoint)\": expected IP, IP:PORT or [IPv6]:PORT")
        }
    }

    static func parse(_ text: String) -> (ip: IPAddress, port: Int?)? {
        if let address = IPAddress(text) { return (address, nil) }
        guard let hostPort = HostPort(text), let address = IPAddress(hostPort.host), hostPort.port > 0 else { return nil }
        return (address, hostPort.port)
    }

    func run() async throws {
        let namespace = global.namespace
        let options = global.callOptions
        let service = self.service
        let parsed = endpoints.map { Self.parse($0)! }
        let output = try await global.withRegistry { registry -> [String] in
            let ref = ObjectKey(kind: .service, namespace: namespace, name: service).wire
            let stored = try await registry.get(.with { $0.ref = ref }, options: options).object.service
            guard let first = stored.ports.first else { throw CommandFailure("service \(namespace)/\(service) has no ports") }
            let defaultPort = first.targetPortNumber != 0 ? Int(first.targetPortNumber) : Int(first.port)
            var groups: [String: WireEndpointSlice] = [:]
            for (address, port) in parsed {
                let port = port ?? defaultPort
                let family = address.family == .ipv4 ? "v4" : "v6"
                let name = "\(service)-manual-\(family)-\(port)"
                groups[name, default: .with {
                    $0.metadata.namespace = namespace
                    $0.metadata.name = name
                    $0.metadata.labels = ["kubernetes.io/service-name": service, "proxyctl/managed": "set-endpoints"]
                    $0.serviceName = service
                    $0.addressType = address.family.rawValue
                    $0.ports = [.with {
                        $0.name = stored.ports.count == 1 ? first.name : ""
                        $0.protocol = first.protocol
                        $0.port = UInt32(port)
                    }]
                }].endpoints.append(.with {
                    $0.addresses = [address.description]
                    $0.conditions.ready = true
                })
            }
            var lines: [String] = []
            if !groups.isEmpty {
                let response = try await registry.apply(
                    .with { $0.items = groups.keys.sorted().map { name in .with { $0.object.endpointSlice = groups[name]! } } },
                    options: options)
                for result in response.results {
                    let outcome = result.outcome == .unchanged ? "unchanged" : result.outcome == .created ? "created" : "configured"
                    lines.append("endpointslice.discovery.k8s.io/\(result.object.endpointSlice.metadata.name) \(outcome)")
                }
            }
            let stale = try await registry.listAll(.endpointSlice, namespace: namespace, options: options).compactMap { object in
                if case .endpointSlice(let slice) = object, slice.serviceName == service,
                    slice.metadata.name.hasPrefix("\(service)-manual-"), groups[slice.metadata.name] == nil
                {
                    return slice
                }
                return nil
            }
            if !stale.isEmpty {
                _ = try await registry.delete(
                    .with {
                        $0.items = stale.map { slice in
                            .with { $0.ref = ObjectKey(kind: .endpointSlice, namespace: namespace, name: slice.metadata.name).wire }
                        }
                    }, options: options)
                lines += stale.map { "endpointslice.discovery.k8s.io/\($0.metadata.name) deleted" }
            }
            return lines
        }
        for line in output { print(line) }
    }
}
