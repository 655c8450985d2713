import ProxyModel

/// How a `Store` is set up. Every field has a production default.
public struct StoreConfiguration: Sendable {
    /// Path of the SQLite database file; created with its WAL and SHM companions if missing.
    public var path: String
    /// Service CIDRs and NodePort range that validation and allocation use.
    public var validation: ValidationContext
    /// Revisions of change log kept for deltas and Watch (default 10,000). Older history is
    /// compacted; a node further behind gets a snapshot, a watcher must relist.
    public var retainedRevisions: UInt64
    /// How long a write waits for SQLite's lock held by another process (default 5 s).
    public var busyTimeoutSeconds: Double
    /// Concurrent readers (default 4).
    public var maximumReaders: Int

    public init(
        path: String, validation: ValidationContext = .init(), retainedRevisions: UInt64 = 10_000,
        busyTimeoutSeconds: Double = 5, maximumReaders: Int = 4
    ) {
        self.path = path
        self.validation = validation
        self.retainedRevisions = max(1, retainedRevisions)
        self.busyTimeoutSeconds = busyTimeoutSeconds
        self.maximumReaders = maximumReaders
    }
}
