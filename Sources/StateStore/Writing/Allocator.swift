import GRDB
import ProxyModel

/// ClusterIP, NodePort and healthCheckNodePort allocation inside a write transaction.
///
/// Kubernetes semantics: requested values are honoured when free; an update that omits
/// them keeps what the service already holds; allocation picks at random (so that
/// statically chosen values rarely collide with allocated ones). The UNIQUE constraints of
/// `cluster_ips` and `node_ports` are the final guard.
struct Allocator {
    let db: Database
    let context: ValidationContext
    /// Prefix for field paths in errors (`items[2].`).
    let fieldPrefix: String

    /// Probes at random this many times before scanning.
    private static let randomProbes = 32
    /// Never scan more than this many candidates (a /64 service CIDR is not scanned whole).
    private static let scanLimit: UInt128 = 1 << 20

    func resolve(_ input: Service, existing: Service?) throws -> Service {
        var service = input
        let owner = (service.metadata.namespace, service.metadata.name)
        if service.type == .externalName {
            service.clusterIPs = []
            service.ipFamilies = []
            service.healthCheckNodePort = nil
            for index in service.ports.indices { service.ports[index].nodePort = nil }
            return service
        }
        if let existing, existing.type != .externalName, existing.headless != service.headless {
            throw StoreError.invalid(
                ValidationError(field: fieldPrefix + "spec.clusterIPs", message: "may not change between None and an address"))
        }
        service.ipFamilies = resolveFamilies(service, existing: existing)
        if !service.headless {
            var addresses: [IPAddress] = []
            for (index, family) in service.ipFamilies.enumerated() {
                let field = fieldPrefix + "spec.clusterIPs[\(index)]"
                let requested = service.clusterIPs.first { $0.family == family }
                let previous = existing?.clusterIPs.first { $0.family == family }
                if let requested {
                    if let previous, previous != requested {
                        throw StoreError.invalid(
                            ValidationError(field: field, message: "field is immutable: the service holds \(previous)"))
                    }
                    try claimIP(requested, owner: owner, field: field)
                    addresses.append(requested)
                } else if let previous {
                    addresses.append(previous)
                } else {
                    addresses.append(try allocateIP(family))
                }
            }
            service.clusterIPs = addresses
        }
        try resolveNodePorts(&service, existing: existing, owner: owner)
        return service
    }

    private func resolveFamilies(_ service: Service, existing: Service?) -> [IPFamily] {
        var families = service.ipFamilies
        if families.isEmpty { families = service.clusterIPs.map(\.family) }
        if families.isEmpty, let existing { families = existing.ipFamilies }
        if families.isEmpty, let primary = context.serviceCIDRs.first?.family { families = [primary] }
        if service.ipFamilyPolicy == .singleStack {
            return Array(families.prefix(1))
        }
        if families.count == 1, let other = context.serviceCIDRs.first(where: { $0.family != families[0] }) {
            families.append(other.family)
        }
        return families
    }

    private func resolveNodePorts(_ service: inout Service, existing: Service?, owner: (String, String)) throws {
        var claimed = Set<String>()
        for index in service.ports.indices {
            let port = service.ports[index]
            guard service.usesNodePorts else {
                service.ports[index].nodePort = nil
                continue
            }
            let field = fieldPrefix + "spec.ports[\(index)].nodePort"
            let tag = { (number: Int) in "\(number)/\(port.protocol.rawValue)" }
            let previous = existing?.ports.first { $0.port == port.port && $0.protocol == port.protocol }?.nodePort
            if let requested = port.nodePort {
                try claimNodePort(requested, protocol: port.protocol, owner: owner, field: field)
            } else if let previous, !claimed.contains(tag(previous)) {
                service.ports[index].nodePort = previous
            } else {
                service.ports[index].nodePort = try allocateNodePort(protocol: port.protocol, avoiding: claimed)
            }
            claimed.insert(tag(service.ports[index].nodePort!))
        }
        guard service.needsHealthCheckNodePort else {
            service.healthCheckNodePort = nil
            return
        }
        let field = fieldPrefix + "spec.healthCheckNodePort"
        if let requested = service.healthCheckNodePort {
            try claimNodePort(requested, protocol: .tcp, owner: owner, field: field)
        } else if let previous = existing?.healthCheckNodePort, !claimed.contains("\(previous)/TCP") {
            service.healthCheckNodePort = previous
        } else {
            service.healthCheckNodePort = try allocateNodePort(protocol: .tcp, avoiding: claimed)
        }
    }

    // MARK: ClusterIPs

    private func ipOwner(_ address: IPAddress) throws -> (String, String)? {
        try Row.fetchOne(
            db, sql: "SELECT namespace, name FROM cluster_ips WHERE family = ? AND ip = ?",
            arguments: [address.family.rawValue, address.description]
        ).map { ($0["namespace"], $0["name"]) }
    }

    private func claimIP(_ address: IPAddress, owner: (String, String), field: String) throws {
        if let holder = try ipOwner(address), holder != owner {
            throw StoreError.alreadyAllocated(
                field: field, message: "\(address) is already allocated to service \(holder.0)/\(holder.1)")
        }
    }

    private func allocateIP(_ family: IPFamily) throws -> IPAddress {
        guard let cidr = context.serviceCIDR(for: family) else {
            throw StoreError.invalid(ValidationError(field: fieldPrefix + "spec.ipFamilies", message: "no \(family.rawValue) service CIDR"))
        }
        // Offsets 1 ..< last: never the network address, nor the IPv4 broadcast address.
        let usable = cidr.size - (family == .ipv4 ? 2 : 1)
        let used = try Int.fetchOne(db, sql: "SELECT count(*) FROM cluster_ips WHERE family = ?", arguments: [family.rawValue]) ?? 0
        let found: IPAddress? = try probe(range: usable, used: UInt128(used)) { offset in
            let candidate = cidr.address(at: offset + 1)
            return try ipOwner(candidate) == nil ? candidate : nil
        }
        guard let found else { throw StoreError.exhausted("no free ClusterIP left in the service CIDR \(cidr)") }
        return found
    }

    // MARK: NodePorts

    private func portOwner(_ port: Int, _ proto: L4Protocol) throws -> (String, String)? {
        try Row.fetchOne(
            db, sql: "SELECT namespace, name FROM node_ports WHERE protocol = ? AND port = ?", arguments: [proto.rawValue, port]
        ).map { ($0["namespace"], $0["name"]) }
    }

    private func claimNodePort(_ port: Int, protocol proto: L4Protocol, owner: (String, String), field: String) throws {
        if let holder = try portOwner(port, proto), holder != owner {
            throw StoreError.alreadyAllocated(
                field: field, message: "port \(port)/\(proto.rawValue) is already allocated to service \(holder.0)/\(holder.1)")
        }
    }

    private func allocateNodePort(protocol proto: L4Protocol, avoiding claimed: Set<String>) throws -> Int {
        let range = context.nodePortRange
        let used = try Int.fetchOne(db, sql: "SELECT count(*) FROM node_ports WHERE protocol = ?", arguments: [proto.rawValue]) ?? 0
        let found: Int? = try probe(range: UInt128(range.count), used: UInt128(used + claimed.count)) { offset in
            let candidate = range.lowerBound + Int(offset)
            guard !claimed.contains("\(candidate)/\(proto.rawValue)") else { return nil }
            return try portOwner(candidate, proto) == nil ? candidate : nil
        }
        guard let found else {
            throw StoreError.exhausted(
                "no free \(proto.rawValue) NodePort left in the range \(range.lowerBound)-\(range.upperBound)")
        }
        return found
    }

    /// Random probes, then a scan from a random start; nil when nothing in `0..<range` is free.
    private func probe<T>(range: UInt128, used: UInt128, _ candidate: (UInt128) throws -> T?) throws -> T? {
        guard range > 0, used < range else { return nil }
        for _ in 0..<Self.randomProbes {
            if let found = try candidate(UInt128.random(in: 0..<range)) { return found }
        }
        let start = UInt128.random(in: 0..<range)
        var step: UInt128 = 0
        while step < min(range, Self.scanLimit) {
            if let found = try candidate((start + step) % range) { return found }
            step += 1
        }
        return nil
    }

    // MARK: recording

    /// Replaces the allocation rows of `service` with what it now holds.
    static func record(_ db: Database, _ service: Service) throws {
        let owner: StatementArguments = [service.metadata.namespace, service.metadata.name]
        try db.execute(sql: "DELETE FROM cluster_ips WHERE namespace = ? AND name = ?", arguments: owner)
        try db.execute(sql: "DELETE FROM node_ports WHERE namespace = ? AND name = ?", arguments: owner)
        for address in service.clusterIPs {
            try db.execute(
                sql: "INSERT INTO cluster_ips (family, ip, namespace, name) VALUES (?, ?, ?, ?)",
                arguments: [address.family.rawValue, address.description] + owner)
        }
        var ports = service.ports.compactMap { port in port.nodePort.map { ($0, port.protocol) } }
        if let healthCheck = service.healthCheckNodePort { ports.append((healthCheck, .tcp)) }
        for (port, proto) in ports {
            try db.execute(
                sql: "INSERT INTO node_ports (protocol, port, namespace, name) VALUES (?, ?, ?, ?)",
                arguments: [proto.rawValue, port] + owner)
        }
    }
}
