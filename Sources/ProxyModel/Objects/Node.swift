/// A node running a node-applier; registered by its Hello on the NodeSync stream.
public struct Node: Hashable, Sendable, Codable {
    public var metadata: ObjectMeta
    public var addresses: [IPAddress]
    public var zone: String?

    public init(metadata: ObjectMeta, addresses: [IPAddress] = [], zone: String? = nil) {
        self.metadata = metadata
        self.addresses = addresses
        self.zone = zone
    }
}

/// What the control server knows about a node's sync progress.
public struct NodeStatus: Hashable, Sendable, Codable {
    public var name: String
    public var addresses: [IPAddress]
    public var zone: String?
    public var connected: Bool
    /// The revision last sent (or being sent) to the node.
    public var desiredRevision: Revision
    /// The last revision the node acknowledged.
    public var appliedRevision: Revision
    /// The text of the last NACK, cleared by a later ACK.
    public var lastError: String?
    public var lastErrorRevision: Revision?
    /// Nanoseconds since the Unix epoch of the last message from the node.
    public var lastSeenUnixNanos: Int64

    public init(
        name: String, addresses: [IPAddress] = [], zone: String? = nil, connected: Bool = false,
        desiredRevision: Revision = .zero, appliedRevision: Revision = .zero, lastError: String? = nil,
        lastErrorRevision: Revision? = nil, lastSeenUnixNanos: Int64 = 0
    ) {
        self.name = name
        self.addresses = addresses
        self.zone = zone
        self.connected = connected
        self.desiredRevision = desiredRevision
        self.appliedRevision = appliedRevision
        self.lastError = lastError
        self.lastErrorRevision = lastErrorRevision
        self.lastSeenUnixNanos = lastSeenUnixNanos
    }
}
