import ProxyModel

/// The node's copy of the cluster state at one revision: Services and EndpointSlices.
///
/// Memory: at 50k services this is the applier's largest state, so slices are kept in a compact
/// form (`StoredSlice`: what the node view reads, a handful of allocations per slice instead of
/// one per endpoint) and turned back into model slices only while a service's rules are derived;
/// services keep only the labels the proxy reads. Slices the proxy ignores
/// (`NodeView.ignoringLabels`) are not kept.
public struct ClusterState: Sendable {
    public private(set) var revision: UInt64 = 0
    public private(set) var storeID = ""
    /// Boxed: a `Service` value is ~200 bytes, and a dictionary keeps 1.3–2.6 slots per entry.
    private var services: [ServiceName: ServiceBox] = [:]
    /// Each service's slices, sorted by name.
    private var slices: [ServiceName: [StoredSlice]] = [:]
    /// Which service (in the slice's namespace) each slice belongs to, so a deleted slice can be attributed.
    private var sliceOwners: [SliceKey: String] = [:]
    /// One copy of each node name the endpoints carry (most are longer than Swift stores inline);
    /// it grows only with the nodes the cluster has had.
    private var nodeNames: Set<String> = []

    public init() {}

    public func slices(of service: ServiceName) -> [EndpointSlice] {
        (slices[service] ?? []).map { $0.model(namespace: service.namespace, serviceName: service.name) }
    }

    public func service(_ name: ServiceName) -> Service? { services[name]?.service }

    /// The names of all Services held.
    public var serviceNames: some Collection<ServiceName> { services.keys }

    /// An empty state at a Snapshot's revision, filled object by object with `insert`. Decoding and
    /// inserting one object at a time keeps the short-lived model objects from interleaving with
    /// the stored ones on the heap (which would pin half-used pages).
    public init(revision: UInt64, storeID: String) {
        self.revision = revision
        self.storeID = storeID
    }

    /// Adds one object of a Snapshot.
    public mutating func insert(_ object: ProxyObject) { upsert(object) }

    /// The services a Delta touches (computed before applying it).
    public func affected(upserts: [ProxyObject], deletes: [ObjectKey]) -> Set<ServiceName> {
        var names: Set<ServiceName> = []
        for key in deletes {
            switch key.kind {
            case .service: names.insert(ServiceName(namespace: key.namespace, name: key.name))
            case .endpointSlice: if let owner = owner(of: SliceKey(key)) { names.insert(owner) }
            case .node: continue
            }
        }
        for object in upserts {
            switch object {
            case .service(let service): names.insert(ServiceName(namespace: service.metadata.namespace, name: service.metadata.name))
            case .endpointSlice(let slice):
                names.insert(ServiceName(namespace: slice.metadata.namespace, name: slice.serviceName))
                if let owner = owner(of: SliceKey(slice.metadata)) { names.insert(owner) }
            case .node: continue
            }
        }
        return names
    }

    /// Applies a Delta; returns the services whose rules may have changed.
    public mutating func apply(to revision: UInt64, upserts: [ProxyObject], deletes: [ObjectKey]) -> Set<ServiceName> {
        var changed: Set<ServiceName> = []
        for key in deletes {
            switch key.kind {
            case .service:
                let name = ServiceName(namespace: key.namespace, name: key.name)
                services[name] = nil
                changed.insert(name)
            case .endpointSlice:
                guard let service = sliceOwners.removeValue(forKey: SliceKey(key)) else { continue }
                let owner = ServiceName(namespace: key.namespace, name: service)
                removeSlice(key.name, of: owner)
                changed.insert(owner)
            case .node:
                continue
            }
        }
        for object in upserts {
            changed.formUnion(upsert(object))
        }
        self.revision = revision
        return changed
    }

    @discardableResult
    private mutating func upsert(_ object: ProxyObject) -> Set<ServiceName> {
        switch object {
        case .service(var service):
            let name = ServiceName(namespace: service.metadata.namespace, name: service.metadata.name)
            // The only labels the proxy reads; the others would cost a dictionary per service.
            service.metadata.labels = service.metadata.labels.filter { NodeView.ignoringLabels.contains($0.key) }
            services[name] = ServiceBox(service: service)
            return [name]
        case .endpointSlice(let slice):
            let key = SliceKey(slice.metadata)
            let owner = ServiceName(namespace: slice.metadata.namespace, name: slice.serviceName)
            var changed: Set<ServiceName> = [owner]
            let ignored = NodeView.isIgnored(slice.metadata)
            if let previous = self.owner(of: key), previous != owner || ignored {
                removeSlice(key.name, of: previous)
                changed.insert(previous)
            }
            // A slice that took an ignoring label is gone for the proxy, as if deleted.
            guard !ignored else {
                sliceOwners[key] = nil
                return changed
            }
            sliceOwners[key] = slice.serviceName
            let stored = StoredSlice(slice, nodeName: { name in nodeNames.insert(name).memberAfterInsert })
            var list = slices.removeValue(forKey: owner) ?? []
            let index = list.firstIndex { $0.name >= stored.name } ?? list.count
            if index < list.count, list[index].name == stored.name { list[index] = stored } else { list.insert(stored, at: index) }
            slices[owner] = list
            return changed
        case .node:
            return []
        }
    }

    private func owner(of slice: SliceKey) -> ServiceName? {
        sliceOwners[slice].map { ServiceName(namespace: slice.namespace, name: $0) }
    }

    private mutating func removeSlice(_ name: String, of owner: ServiceName) {
        guard var list = slices.removeValue(forKey: owner) else { return }
        list.removeAll { $0.name == name }
        if !list.isEmpty { slices[owner] = list }
    }
}

private struct SliceKey: Hashable {
    var namespace: String
    var name: String

    init(_ key: ObjectKey) { (namespace, name) = (key.namespace, key.name) }
    init(_ metadata: ObjectMeta) { (namespace, name) = (metadata.namespace, metadata.name) }
}

private final class ServiceBox: Sendable {
    let service: Service

    init(service: Service) { self.service = service }
}

/// An EndpointSlice as the node keeps it: what the node view reads. Each endpoint keeps its first
/// address only (kube-proxy uses no other) inline, instead of an array of its own.
private struct StoredSlice: Sendable {
    var name: String
    var addressType: IPFamily
    var ports: [EndpointPort]
    var endpoints: [StoredEndpoint]

    struct StoredEndpoint: Sendable {
        var address: IPAddress?
        var conditions: EndpointConditions
        var nodeName: String?
        var zone: String?
        var hintZones: [String]
        var hintNodes: [String]
    }

    /// `nodeName` returns the shared copy of a node name.
    init(_ slice: EndpointSlice, nodeName: (String) -> String) {
        name = slice.metadata.name
        addressType = slice.addressType
        ports = slice.ports
        endpoints = slice.endpoints.map {
            StoredEndpoint(
                address: $0.addresses.first, conditions: $0.conditions, nodeName: $0.nodeName.map(nodeName), zone: $0.zone,
                hintZones: $0.hintZones, hintNodes: $0.hintNodes)
        }
    }

    func model(namespace: String, serviceName: String) -> EndpointSlice {
        EndpointSlice(
            metadata: ObjectMeta(namespace: namespace, name: name), serviceName: serviceName, addressType: addressType, ports: ports,
            endpoints: endpoints.map {
                Endpoint(
                    addresses: $0.address.map { [$0] } ?? [], conditions: $0.conditions, nodeName: $0.nodeName, zone: $0.zone,
                    hintZones: $0.hintZones, hintNodes: $0.hintNodes)
            })
    }
}
