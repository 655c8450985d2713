import Logging
import ProxyModel
import StateStore
import Synchronization

/// Pushes committed revisions to every NodeSync stream: the I/O shell around `BroadcastState`.
///
/// Each commit batch is encoded once into a delta whose bytes all caught-up streams share.
/// Streams that fell behind are served merged deltas built from a bounded in-memory history
/// of recent revisions (cached per starting revision, so streams behind by the same amount
/// share those bytes too), or from the store when they are further behind.
///
/// Nodes with nothing get snapshots at the head from a `SnapshotSource`, which reads the store
/// once and brings what it read forward with the history.
public final class Broadcaster: CommitObserver {
    private struct Shared: Sendable {
        var state: BroadcastState
        var signals: [ConnectionID: AsyncStream<Void>.Continuation] = [:]
        var nextID: ConnectionID = 1
        /// Recent committed revisions (node kinds only), oldest first, contiguous.
        var history: [CommittedRevision] = []
        /// Merged deltas to the current head, by starting revision.
        var catchUps: [Revision: EncodedMessage] = [:]
        /// Revisions committed since the snapshot source's objects were last brought forward.
        var sinceAdvance = 0
        var closed = false

        /// Whether the history holds every revision committed after `revision`.
        func historyFollows(_ revision: Revision) -> Bool {
            guard let first = history.first else { return true }
            return first.revision.rawValue <= revision.rawValue + 1
        }
    }

    private let shared: Mutex<Shared>
    private let store: Store
    private let snapshots: SnapshotSource
    private let historyLimit: Int
    private let metrics: ServerMetrics
    private let logger: Logger

    public init(store: Store, head: Revision, historyLimit: Int, metrics: ServerMetrics, logger: Logger) {
        self.store = store
        snapshots = SnapshotSource(store: store, metrics: metrics)
        self.historyLimit = max(1, historyLimit)
        self.metrics = metrics
        self.logger = logger
        self.shared = Mutex(Shared(state: BroadcastState(head: head)))
    }

    // MARK: commits

    public func committed(_ revisions: [CommittedRevision]) {
        guard let last = revisions.last else { return }
        let relevant = revisions.map { revision in
            var filtered = revision
            filtered.changes = revision.changes.filter { SyncMessages.nodeKinds.contains($0.key.kind) }
            return filtered
        }
        // Only `committed` moves the published head, and the store calls it serially.
        let (from, advance) = shared.withLock { shared in
            shared.history.append(contentsOf: relevant)
            if shared.history.count > historyLimit { shared.history.removeFirst(shared.history.count - historyLimit) }
            shared.sinceAdvance += relevant.count
            let advance = shared.sinceAdvance >= max(1, historyLimit / 2)
            if advance { shared.sinceAdvance = 0 }
            return (shared.state.head, advance)
        }
        if advance {
            Task { [self] in await snapshots.advance { [self] revision in history(after: revision) } }
        }
        guard relevant.contains(where: { !$0.changes.isEmpty }) else { return }
        let message: EncodedMessage
        do {
            message = try SyncMessages.delta(
                from: from, to: last.revision, commitTimeUnixNanos: last.commitTimeUnixNanos,
                changes: SyncMessages.merge(relevant))
        } catch {
            logger.error("cannot encode delta \(from)->\(last.revision): \(error)")
            return
        }
        metrics.deltaBytes.increment(by: Int64(message.bytes.count))
        let wake = shared.withLock { shared -> [AsyncStream<Void>.Continuation] in
            shared.catchUps = [:]
            return shared.state.published(from: from, to: last.revision, message: message).compactMap { shared.signals[$0] }
        }
        for signal in wake { signal.yield() }
    }

    // MARK: streams

    /// Registers a stream after its Hello; the returned signals wake its writer.
    public func join(appliedRevision: Revision) -> (ConnectionID, AsyncStream<Void>) {
        let (signals, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id = shared.withLock { shared in
            let id = shared.nextID
            shared.nextID += 1
            shared.state.joined(id, appliedRevision: appliedRevision)
            if shared.closed {
                continuation.finish()
            } else {
                shared.signals[id] = continuation
            }
            return id
        }
        continuation.yield()
        metrics.connectedStreams.increment()
        return (id, signals)
    }

    public func leave(_ id: ConnectionID) {
        let signal = shared.withLock { shared in
            shared.state.left(id)
            return shared.signals.removeValue(forKey: id)
        }
        signal?.finish()
        metrics.connectedStreams.decrement()
    }

    public func resync(_ id: ConnectionID, appliedRevision: Revision) {
        let signal = shared.withLock { shared in
            shared.state.resync(id, appliedRevision: appliedRevision)
            return shared.signals[id]
        }
        signal?.yield()
    }

    public func wake(_ id: ConnectionID) {
        shared.withLock { $0.signals[id] }?.yield()
    }

    /// Ends every stream's signals (server shutdown); writers then return.
    public func close() {
        let signals = shared.withLock { shared in
            shared.closed = true
            defer { shared.signals = [:] }
            return Array(shared.signals.values)
        }
        for signal in signals { signal.finish() }
    }

    public func sentRevision(_ id: ConnectionID) -> Revision? {
        shared.withLock { $0.state.sentRevision(id) }
    }

    public var head: Revision { shared.withLock { $0.state.head } }

    /// Runs a stream's writer until its signals end: writes every message the state machine
    /// hands out and prepares initial syncs and catch-ups. `write` and `idle` (called when
    /// nothing is left to send, e.g. to send a heartbeat) are called serially.
    public func runWriter(
        _ id: ConnectionID, signals: AsyncStream<Void>, write: (EncodedMessage) async throws -> Void,
        idle: () async throws -> Void
    ) async throws {
        for await _ in signals {
            while true {
                let step = shared.withLock { $0.state.next(id) }
                switch step {
                case .idle:
                    try await idle()
                case .write(let message):
                    try await write(message)
                    metrics.sentBytes.increment(by: Int64(message.bytes.count))
                    continue
                case .initialSync(let from), .catchUp(let from):
                    try await prepare(id, from: from)
                    continue
                }
                break
            }
        }
    }

    private func prepare(_ id: ConnectionID, from: Revision) async throws {
        do {
            let (to, message) = try await build(from: from)
            shared.withLock { $0.state.prepared(id, from: from, to: to, message: message) }
        } catch {
            shared.withLock { $0.state.preparationFailed(id) }
            throw error
        }
    }

    /// A message that brings a node from `from` to the head (nil message: already there).
    private func build(from: Revision) async throws -> (Revision, EncodedMessage?) {
        enum Plan {
            case ready(Revision, EncodedMessage?)
            case merge(head: Revision, revisions: [CommittedRevision])
            case snapshot(head: Revision)
            case readStore
        }
        // Only lookups under the lock: encoding happens outside it, so that commits and
        // other streams' writers never wait for one stream's catch-up.
        let plan: Plan = shared.withLock { shared in
            let head = shared.state.head
            // A node with nothing always starts from a snapshot.
            if from == .zero { return .snapshot(head: head) }
            if from == head { return .ready(head, nil) }
            if let message = shared.catchUps[from] { return .ready(head, message) }
            // History holds every revision (published or not) up to the newest commit.
            guard from < head, shared.historyFollows(from), let newest = shared.history.last?.revision, newest >= head
            else { return .readStore }
            let first = shared.history[0].revision
            let start = Int(from.rawValue + 1 - first.rawValue)
            let end = Int(head.rawValue - first.rawValue)
            return .merge(head: head, revisions: Array(shared.history[start...end]))
        }
        switch plan {
        case .ready(let to, let message):
            if message != nil { metrics.catchUps.increment() }
            return (to, message)
        case .snapshot(let head):
            return try await snapshot(atLeast: head)
        case .merge(let head, let revisions):
            let message = try SyncMessages.delta(
                from: from, to: head, commitTimeUnixNanos: revisions.last!.commitTimeUnixNanos,
                changes: SyncMessages.merge(revisions))
            shared.withLock { shared in
                if shared.state.head == head { shared.catchUps[from] = message }
            }
            metrics.catchUps.increment()
            return (head, message)
        case .readStore:
            break
        }
        switch try await store.catchUp(from: from, kinds: SyncMessages.nodeKinds) {
        case .upToDate(let head):
            return (head, nil)
        case .delta(let from, let to, let commitTime, let changes):
            metrics.catchUps.increment()
            return (to, try SyncMessages.delta(from: from, to: to, commitTimeUnixNanos: commitTime, changes: changes))
        case .snapshotNeeded(let head):
            // A node the store's log no longer reaches (or one ahead of it) starts over from a
            // snapshot, as a node with nothing does, and shares its reads.
            return try await snapshot(atLeast: head)
        }
    }

    private func snapshot(atLeast head: Revision) async throws -> (Revision, EncodedMessage?) {
        try await snapshots.snapshot(atLeast: head) { [self] revision in history(after: revision) }
    }

    /// The revisions committed after `revision`, oldest first; nil when the history no longer
    /// holds all of them.
    private func history(after revision: Revision) -> [CommittedRevision]? {
        shared.withLock { shared in
            guard shared.historyFollows(revision) else { return nil }
            return shared.history.filter { $0.revision > revision }
        }
    }
}
