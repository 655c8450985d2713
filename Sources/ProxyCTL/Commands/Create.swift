import ArgumentParser
import ProxyAPI
import ProxyModel

struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create objects without writing YAML.", subcommands: [CreateService.self])
}

struct CreateService: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "service",
        abstract: "Create a service: proxyctl create service clusterip|nodeport|loadbalancer NAME --tcp PORT[:TARGET] ...")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "clusterip, nodeport or loadbalancer")
    var type: ServiceKind

    @Argument(help: "Service name.")
    var name: String

    @Option(help: "A TCP port, PORT or PORT:TARGET (TARGET a number or a port name); repeatable.")
    var tcp: [String] = []

    @Option(help: "A UDP port, PORT or PORT:TARGET; repeatable.")
    var udp: [String] = []

    @Option(help: "A ClusterIP to request, or None for a headless service (clusterip only).")
    var clusterip: String?

    @Option(name: .customLong("node-port"), help: "The NodePort of the first port (nodeport and loadbalancer only).")
    var nodePort: Int?

    enum ServiceKind: String, ExpressibleByArgument, CaseIterable {
        case clusterip, nodeport, loadbalancer

        var type: String {
            switch self {
            case .clusterip: "ClusterIP"
            case .nodeport: "NodePort"
            case .loadbalancer: "LoadBalancer"
            }
        }
    }

    func validate() throws {
        if tcp.isEmpty && udp.isEmpty && clusterip != "None" { throw ValidationError("give at least one --tcp or --udp port") }
        for spec in tcp + udp where Self.parse(spec) == nil {
            throw ValidationError("port \"\(spec)\": expected PORT or PORT:TARGET with PORT in 1-65535")
        }
        if nodePort != nil && type == .clusterip { throw ValidationError("--node-port: only for nodeport and loadbalancer") }
        if clusterip != nil && type != .clusterip { throw ValidationError("--clusterip: only for clusterip") }
    }

    static func parse(_ spec: String) -> (port: UInt32, target: String?)? {
        let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
        guard let port = UInt32(parts[0]), (1...65535).contains(port) else { return nil }
        return (port, parts.count == 2 ? parts[1] : nil)
    }

    func run() async throws {
        let specs = tcp.map { ($0, Kubeproxy_V1_Protocol.tcp) } + udp.map { ($0, Kubeproxy_V1_Protocol.udp) }
        let service = WireService.with { service in
            service.metadata.namespace = global.namespace
            service.metadata.name = name
            service.type = type.type
            if let clusterip { service.clusterIps = [clusterip] }
            service.ports = specs.enumerated().map { index, entry in
                let (port, target) = Self.parse(entry.0)!
                return .with {
                    $0.name = specs.count > 1 ? "\(port)-\(entry.1 == .udp ? "udp" : "tcp")" : ""
                    $0.protocol = entry.1
                    $0.port = port
                    if let target { if let number = UInt32(target) { $0.targetPortNumber = number } else { $0.targetPortName = target } }
                    if index == 0, let nodePort { $0.nodePort = UInt32(clamping: nodePort) }
                }
            }
        }
        let request = Kubeproxy_V1_ApplyRequest.with {
            $0.items = [.with {
                $0.object.service = service
                $0.expectedRevision = 0
            }]
        }
        let options = global.callOptions
        do {
            _ = try await global.withRegistry { try await $0.apply(request, options: options) }
        } catch let failure as CommandFailure where failure.description.hasPrefix("conflict:") {
            throw CommandFailure("service \"\(name)\" already exists in namespace \(global.namespace)")
        }
        print("service/\(name) created")
    }
}
