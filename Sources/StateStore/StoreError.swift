import ProxyModel

/// Every way a store operation can fail. Converted to gRPC status codes in one place (ControlServer).
public enum StoreError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The input breaks a rule; each violation names its field path.
    case invalid(ValidationError)
    case notFound(ObjectKey)
    /// An expected revision did not match (`actual` is nil when the object does not exist).
    case conflict(ObjectKey, expected: Revision, actual: Revision?)
    /// A requested ClusterIP or NodePort belongs to another service.
    case alreadyAllocated(field: String, message: String)
    /// No free ClusterIP or NodePort is left.
    case exhausted(String)
    /// History at or below `compacted` is gone; the reader must relist (or take a snapshot).
    case compacted(requested: Revision, compacted: Revision)
    /// A paged listing can no longer be continued consistently.
    case listingExpired(String)
    /// SQLite failed (I/O, corruption); the write did not happen.
    case storage(String)
    /// The database or its disk is full (SQLite's `SQLITE_FULL`); the write did not happen, and
    /// writes succeed again once there is room.
    case full(String)

    public var description: String {
        switch self {
        case .invalid(let error): error.description
        case .notFound(let key): "\(key) not found"
        case .conflict(let key, let expected, let actual):
            if let actual {
                "\(key) is at revision \(actual), expected \(expected)"
            } else {
                "\(key) does not exist, expected revision \(expected)"
            }
        case .alreadyAllocated(let field, let message): "\(field): \(message)"
        case .exhausted(let message): message
        case .compacted(let requested, let compacted):
            "revision \(requested) has been compacted (history is retained after revision \(compacted)); list again"
        case .listingExpired(let message): message
        case .storage(let message): "storage failure: \(message)"
        case .full(let message): "storage full, nothing was written: \(message)"
        }
    }

    /// Whether SQLite itself failed (rather than the input or the state breaking a rule).
    public var isStorageFailure: Bool {
        switch self {
        case .storage, .full: true
        default: false
        }
    }
}
