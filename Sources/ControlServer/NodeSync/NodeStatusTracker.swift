import Logging
import ProxyModel
import ServiceLifecycle
import StateStore
import Synchronization

/// Live sync status of every node, kept in memory and flushed to the store periodically
/// (status is hot: every ACK of every node would otherwise be a durable write).
public final class NodeStatusTracker: ServiceLifecycle.Service, Sendable {
    private struct Entry {
        var status: NodeStatus
        var streams = 0
    }

    private struct Shared {
        var entries: [String: Entry] = [:]
        var dirty: Set<String> = []
        /// Whether the last flush failed: a failing store is logged once, not at every flush.
        var failing = false
    }

    private let shared = Mutex(Shared())
    private let store: Store
    private let flushInterval: Duration
    private let logger: Logger

    public init(store: Store, flushInterval: Duration, logger: Logger) {
        self.store = store
        self.flushInterval = flushInterval
        self.logger = logger
    }

    private func update(_ name: String, _ body: (inout Entry) -> Void) {
        shared.withLock { shared in
            var entry = shared.entries[name] ?? Entry(status: NodeStatus(name: name))
            body(&entry)
            entry.status.connected = entry.streams > 0
            entry.status.lastSeenUnixNanos = WallClock.nowUnixNanos()
            shared.entries[name] = entry
            shared.dirty.insert(name)
        }
    }

    /// A stream opened; `stored` is the node's persisted status (kept across restarts).
    func connected(_ node: Node, stored: NodeStatus?) {
        update(node.metadata.name) { entry in
            if entry.streams == 0, let stored {
                entry.status = stored
            }
            entry.status.addresses = node.addresses
            entry.status.zone = node.zone
            entry.streams += 1
        }
    }

    func disconnected(_ name: String) {
        update(name) { $0.streams -= 1 }
    }

    func seen(_ name: String) {
        update(name) { _ in }
    }

    func sent(_ name: String, revision: Revision) {
        update(name) { $0.status.desiredRevision = max($0.status.desiredRevision, revision) }
    }

    func acked(_ name: String, revision: Revision) {
        update(name) { entry in
            entry.status.appliedRevision = revision
            if let errorRevision = entry.status.lastErrorRevision, revision >= errorRevision {
                entry.status.lastError = nil
                entry.status.lastErrorRevision = nil
            }
        }
    }

    func nacked(_ name: String, revision: Revision, error: String) {
        update(name) { entry in
            entry.status.lastError = error
            entry.status.lastErrorRevision = revision
        }
    }

    /// Live status of nodes this server has seen since it started.
    func live() -> [String: NodeStatus] {
        shared.withLock { $0.entries.mapValues(\.status) }
    }

    /// Writes changed statuses to the store.
    public func flush() async {
        let pending = shared.withLock { shared in
            defer { shared.dirty = [] }
            return shared.dirty.compactMap { shared.entries[$0]?.status }
        }
        do {
            try await store.saveNodeStatuses(pending)
            let recovered = shared.withLock { shared in
                defer { shared.failing = false }
                return shared.failing
            }
            if recovered { logger.info("node status persisted again") }
        } catch {
            let first = shared.withLock { shared in
                defer { shared.failing = true }
                shared.dirty.formUnion(pending.map(\.name))
                return !shared.failing
            }
            logger.log(
                level: first ? .warning : .debug, "cannot persist node status, retrying every \(flushInterval)",
                metadata: ["error": "\(error)"])
        }
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await Task.sleep(for: flushInterval)
            await flush()
        }
        await flush()
    }
}
