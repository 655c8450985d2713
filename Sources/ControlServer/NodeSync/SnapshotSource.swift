import ProxyModel
import StateStore

/// Snapshots at the head for nodes with nothing, without reading the store for each: the node
/// kinds' objects, each encoded once, are read from the store once and brought forward with the
/// revisions committed since; a snapshot is their bytes copied together
/// (`SyncMessages.snapshot`), built again only once the head has moved.
///
/// The broadcaster brings them forward every half history (`advance`), so that they stay within
/// its reach; should they fall out of it anyway, they are read again.
actor SnapshotSource {
    /// The objects at `revision`, encoded, by kind.
    private struct Objects {
        var revision: Revision
        var commitTimeUnixNanos: Int64
        var services: [ObjectKey: [UInt8]] = [:]
        var slices: [ObjectKey: [UInt8]] = [:]

        mutating func set(_ key: ObjectKey, _ bytes: [UInt8]?) {
            switch key.kind {
            case .service: services[key] = bytes
            case .endpointSlice: slices[key] = bytes
            case .node: break
            }
        }

        /// Brings the objects forward with the revisions committed after theirs.
        mutating func apply(_ revisions: [CommittedRevision]) {
            for revision in revisions where revision.revision > self.revision {
                for change in revision.changes { set(change.key, change.encoded) }
                self.revision = revision.revision
                commitTimeUnixNanos = revision.commitTimeUnixNanos
            }
        }
    }

    private let store: Store
    private let metrics: ServerMetrics
    private var objects: Objects?
    /// The store read in progress, which every caller meanwhile waits for.
    private var reading: Task<Void, any Error>?
    private var latest: (revision: Revision, message: EncodedMessage)?

    init(store: Store, metrics: ServerMetrics) {
        self.store = store
        self.metrics = metrics
    }

    /// A snapshot at `head` or later. `history` gives the revisions committed after a revision,
    /// oldest first, or nil when it no longer holds all of them.
    func snapshot(
        atLeast head: Revision, history: @Sendable (Revision) -> [CommittedRevision]?
    ) async throws -> (revision: Revision, message: EncodedMessage) {
        while true {
            if let latest, latest.revision >= head { return latest }
            guard var current = objects.take() else {
                try await read()
                continue
            }
            // Read again when the history no longer reaches back (or, after a restart, does not
            // reach the head yet).
            guard let later = history(current.revision), (later.last?.revision ?? current.revision) >= head else {
                try await read()
                continue
            }
            current.apply(later)
            objects = current
            let message = try SyncMessages.snapshot(
                revision: current.revision, commitTimeUnixNanos: current.commitTimeUnixNanos, storeID: store.identity,
                services: current.services.sorted { $0.key < $1.key }.map(\.value),
                slices: current.slices.sorted { $0.key < $1.key }.map(\.value))
            latest = (current.revision, message)
        }
    }

    /// Brings the objects read (if any) forward to the newest revision `history` holds, so that
    /// they do not fall out of its reach while no node needs a snapshot.
    func advance(history: @Sendable (Revision) -> [CommittedRevision]?) {
        guard var current = objects.take(), let later = history(current.revision) else { return }
        current.apply(later)
        objects = current
    }

    /// Reads the objects from the store, or waits for the read in progress.
    private func read() async throws {
        if let reading { return try await reading.value }
        let task = Task {
            defer { reading = nil }
            objects = try await Self.read(store, metrics: metrics)
        }
        reading = task
        try await task.value
    }

    private static func read(_ store: Store, metrics: ServerMetrics) async throws -> Objects {
        let snapshot = try await store.encodedSnapshot(kinds: SyncMessages.nodeKinds)
        metrics.snapshots.increment()
        var objects = Objects(revision: snapshot.revision, commitTimeUnixNanos: snapshot.commitTimeUnixNanos)
        for object in snapshot.objects { objects.set(object.key, object.bytes) }
        return objects
    }
}
