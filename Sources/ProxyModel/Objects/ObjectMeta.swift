/// Identity and labels shared by every stored object.
public struct ObjectMeta: Hashable, Sendable, Codable {
    public var namespace: String
    public var name: String
    public var labels: [String: String]
    /// Revision of the object's last write; assigned by the store, ignored on input.
    public var revision: Revision

    public init(namespace: String, name: String, labels: [String: String] = [:], revision: Revision = .zero) {
        self.namespace = namespace
        self.name = name
        self.labels = labels
        self.revision = revision
    }
}

/// The kinds of stored objects.
public enum ObjectKind: String, Hashable, Sendable, Codable, CaseIterable, Comparable {
    case service = "Service"
    case endpointSlice = "EndpointSlice"
    case node = "Node"

    public static func < (lhs: ObjectKind, rhs: ObjectKind) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// Names one stored object. Nodes are cluster-scoped: their namespace is empty.
public struct ObjectKey: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
    public var kind: ObjectKind
    public var namespace: String
    public var name: String

    public init(kind: ObjectKind, namespace: String, name: String) {
        self.kind = kind
        self.namespace = namespace
        self.name = name
    }

    public var description: String {
        namespace.isEmpty ? "\(kind.rawValue) \(name)" : "\(kind.rawValue) \(namespace)/\(name)"
    }

    public static func < (lhs: ObjectKey, rhs: ObjectKey) -> Bool {
        (lhs.kind, lhs.namespace, lhs.name) < (rhs.kind, rhs.namespace, rhs.name)
    }
}

/// Any stored object.
public enum ProxyObject: Hashable, Sendable, Codable {
    case service(Service)
    case endpointSlice(EndpointSlice)
    case node(Node)

    public var kind: ObjectKind {
        switch self {
        case .service: .service
        case .endpointSlice: .endpointSlice
        case .node: .node
        }
    }

    public var metadata: ObjectMeta {
        get {
            switch self {
            case .service(let object): object.metadata
            case .endpointSlice(let object): object.metadata
            case .node(let object): object.metadata
            }
        }
        set {
            switch self {
            case .service(var object):
                object.metadata = newValue
                self = .service(object)
            case .endpointSlice(var object):
                object.metadata = newValue
                self = .endpointSlice(object)
            case .node(var object):
                object.metadata = newValue
                self = .node(object)
            }
        }
    }

    public var key: ObjectKey {
        ObjectKey(kind: kind, namespace: metadata.namespace, name: metadata.name)
    }
}
