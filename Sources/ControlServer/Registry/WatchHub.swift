import ProxyModel
import StateStore
import Synchronization

/// Fans committed revisions out to Watch streams. Each watcher has a bounded buffer; a
/// watcher that falls further behind is ended (and told to watch again from its last
/// revision) instead of growing the server's memory.
public final class WatchHub: CommitObserver {
    public struct Subscription: Sendable {
        public let id: UInt64
        public let events: AsyncStream<CommittedRevision>
    }

    private struct Shared {
        var subscribers: [UInt64: AsyncStream<CommittedRevision>.Continuation] = [:]
        var overflowed: Set<UInt64> = []
        var nextID: UInt64 = 1
        var closed = false
    }

    private let shared = Mutex(Shared())
    private let bufferLimit: Int

    public init(bufferLimit: Int = 1024) {
        self.bufferLimit = bufferLimit
    }

    public func subscribe() -> Subscription {
        let (events, continuation) = AsyncStream<CommittedRevision>.makeStream(bufferingPolicy: .bufferingOldest(bufferLimit))
        let id = shared.withLock { shared in
            let id = shared.nextID
            shared.nextID += 1
            if shared.closed { continuation.finish() } else { shared.subscribers[id] = continuation }
            return id
        }
        return Subscription(id: id, events: events)
    }

    /// Removes the subscription; returns whether it was ended for falling behind.
    @discardableResult
    public func unsubscribe(_ id: UInt64) -> Bool {
        let (continuation, overflowed) = shared.withLock { shared in
            (shared.subscribers.removeValue(forKey: id), shared.overflowed.remove(id) != nil)
        }
        continuation?.finish()
        return overflowed
    }

    public func committed(_ revisions: [CommittedRevision]) {
        let subscribers = shared.withLock { $0.subscribers }
        for (id, continuation) in subscribers {
            for revision in revisions {
                if case .dropped = continuation.yield(revision) {
                    shared.withLock { shared in
                        shared.overflowed.insert(id)
                        shared.subscribers[id] = nil
                    }
                    continuation.finish()
                    break
                }
            }
        }
    }

    public func close() {
        let subscribers = shared.withLock { shared in
            shared.closed = true
            defer { shared.subscribers = [:] }
            return Array(shared.subscribers.values)
        }
        for continuation in subscribers { continuation.finish() }
    }
}
