import ProxyModel

/// The node's copy of the cluster state at one revision: Services and EndpointSlices.
public struct ClusterState: Sendable {
    public private(set) var revision: UInt64 = 0
    public private(set) var storeID = ""
    public private(set) var services: [ServiceName: Service] = [:]
    private var slices: [ServiceName: [String: EndpointSlice]] = [:]
    /// Which service each slice belongs to, so a deleted slice can be attributed.
    private var sliceOwners: [ObjectKey: ServiceName] = [:]

    public init() {}

    public func slices(of service: ServiceName) -> [EndpointSlice] {
        (slices[service] ?? [:]).sorted { $0.key < $1.key }.map(\.value)
    }

    /// Every service name that has a Service or EndpointSlices.
    public var serviceNames: Set<ServiceName> { Set(services.keys).union(slices.keys) }

    /// Replaces everything (a Snapshot).
    public mutating func replace(revision: UInt64, storeID: String, objects: [ProxyObject]) {
        self = ClusterState()
        self.revision = revision
        self.storeID = storeID
        for object in objects { upsert(object) }
    }

    /// The services a Delta touches (computed before applying it).
    public func affected(upserts: [ProxyObject], deletes: [ObjectKey]) -> Set<ServiceName> {
        var names: Set<ServiceName> = []
        for key in deletes {
            switch key.kind {
            case .service: names.insert(ServiceName(namespace: key.namespace, name: key.name))
            case .endpointSlice: if let owner = sliceOwners[key] { names.insert(owner) }
            case .node: continue
            }
        }
        for object in upserts {
            switch object {
            case .service(let service): names.insert(ServiceName(namespace: service.metadata.namespace, name: service.metadata.name))
            case .endpointSlice(let slice):
                names.insert(ServiceName(namespace: slice.metadata.namespace, name: slice.serviceName))
                let key = ObjectKey(kind: .endpointSlice, namespace: slice.metadata.namespace, name: slice.metadata.name)
                if let owner = sliceOwners[key] { names.insert(owner) }
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
                guard let owner = sliceOwners.removeValue(forKey: key) else { continue }
                slices[owner]?[key.name] = nil
                if slices[owner]?.isEmpty == true { slices[owner] = nil }
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
        case .service(let service):
            let name = ServiceName(namespace: service.metadata.namespace, name: service.metadata.name)
            services[name] = service
            return [name]
        case .endpointSlice(let slice):
            let key = ObjectKey(kind: .endpointSlice, namespace: slice.metadata.namespace, name: slice.metadata.name)
            let owner = ServiceName(namespace: slice.metadata.namespace, name: slice.serviceName)
            var changed: Set<ServiceName> = [owner]
            if let previous = sliceOwners[key], previous != owner {
                slices[previous]?[key.name] = nil
                if slices[previous]?.isEmpty == true { slices[previous] = nil }
                changed.insert(previous)
            }
            sliceOwners[key] = owner
            slices[owner, default: [:]][key.name] = slice
            return changed
        case .node:
            return []
        }
    }
}
