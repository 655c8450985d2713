import ProxyModel

/// One object written at a revision: its new state, or nil when it was deleted.
public struct ObjectChange: Sendable, Hashable {
    public var key: ObjectKey
    public var object: ProxyObject?
    /// The new state as the bytes of its wire message (the stored body with its revision), so
    /// that messages carrying it copy it in instead of encoding it again; nil when deleted.
    public var encoded: [UInt8]?

    public init(key: ObjectKey, object: ProxyObject?, encoded: [UInt8]?) {
        self.key = key
        self.object = object
        self.encoded = encoded
    }
}

/// A committed write: its revision, commit time and every object it changed.
public struct CommittedRevision: Sendable, Hashable {
    public var revision: Revision
    public var commitTimeUnixNanos: Int64
    public var changes: [ObjectChange]
}

/// A stored object as the bytes of its wire message, revision included, read without decoding.
public struct EncodedObject: Sendable {
    public var key: ObjectKey
    public var bytes: [UInt8]
}

/// The objects of some kinds at a revision, each as the bytes of its wire message.
public struct EncodedSnapshot: Sendable {
    public var revision: Revision
    public var commitTimeUnixNanos: Int64
    public var objects: [EncodedObject]
}

/// What a reader at some revision needs to reach the head.
public enum CatchUp: Sendable {
    /// Already at the head.
    case upToDate(Revision)
    /// The merged changes from `from` to `to`: the latest state of each changed object.
    case delta(from: Revision, to: Revision, commitTimeUnixNanos: Int64, changes: [ObjectChange])
    /// The reader's revision is compacted (or zero, or ahead of the head): it starts over from
    /// a snapshot (`encodedSnapshot`) at `head` or later.
    case snapshotNeeded(head: Revision)
}

/// Observers see every committed revision exactly once, in revision order, before the
/// writer's caller is answered.
public protocol CommitObserver: Sendable {
    func committed(_ revisions: [CommittedRevision])
    /// `writes` queued writes failed in SQLite (`error.isStorageFailure`): none of them was stored.
    func failed(_ error: StoreError, writes: Int)
}

extension CommitObserver {
    public func failed(_ error: StoreError, writes: Int) {}
}

public struct ApplyItem: Sendable {
    public var object: ProxyObject
    /// When set, the write succeeds only if the stored object is at this revision (0: must not exist).
    public var expectedRevision: Revision?

    public init(object: ProxyObject, expectedRevision: Revision? = nil) {
        self.object = object
        self.expectedRevision = expectedRevision
    }
}

public enum ApplyOutcome: String, Sendable {
    case created, configured, unchanged
}

public struct ApplyResult: Sendable {
    /// The revision of the write, or the head when nothing changed or on a dry run.
    public var revision: Revision
    /// Every object as stored (or as it would be stored), with allocated IPs and ports.
    public var objects: [(object: ProxyObject, outcome: ApplyOutcome)]
}

public struct DeleteItem: Sendable {
    public var key: ObjectKey
    public var expectedRevision: Revision?

    public init(key: ObjectKey, expectedRevision: Revision? = nil) {
        self.key = key
        self.expectedRevision = expectedRevision
    }
}

/// One page of a listing.
public struct ListPage: Sendable {
    public var objects: [ProxyObject]
    /// The revision the whole listing reflects.
    public var revision: Revision
    /// Pass back to get the next page; nil on the last page.
    public var continueToken: ListContinuation?
}

/// Where a paged listing stopped, and at which revision it started.
public struct ListContinuation: Sendable, Hashable {
    public var revision: Revision
    public var afterNamespace: String
    public var afterName: String

    public init(revision: Revision, afterNamespace: String, afterName: String) {
        self.revision = revision
        self.afterNamespace = afterNamespace
        self.afterName = afterName
    }
}
