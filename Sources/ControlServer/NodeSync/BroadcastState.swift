import ProxyModel
import StateStore

/// A serialized `ServerMessage`. Deltas for caught-up nodes are encoded once and the same
/// instance (the same bytes) is handed to every node's stream.
public final class EncodedMessage: Sendable {
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) {
        self.bytes = bytes
    }
}

/// Identifies one NodeSync stream (a node may reconnect while its old stream lingers).
public typealias ConnectionID = UInt64

/// The fan-out protocol as a value: events in, actions out, no I/O.
///
/// Guarantees:
/// * Each stream sees strictly increasing revisions; every delta starts at exactly the
///   revision the stream was last sent (no gaps, no repeats).
/// * At most one undelivered message per stream (the "slot"), so memory per node is O(1)
///   beyond the shared bytes. A stream whose slot is still full when a revision is
///   published falls behind and later gets one merged delta from its revision to the head.
/// * A caught-up stream gets the shared, once-encoded delta of each publication.
public struct BroadcastState: Sendable {
    struct Stream: Sendable {
        /// The revision the node will hold once it has everything sent so far; nil until the
        /// initial snapshot or delta has been prepared.
        var sent: Revision?
        /// Where the initial sync starts (the node's applied revision); nil once it is prepared.
        var initialFrom: Revision?
        /// The one message waiting to be written.
        var slot: EncodedMessage?
        /// A catch-up (or initial sync) is being prepared.
        var preparing = false
    }

    /// What a stream's writer should do next.
    public enum Step: Equatable, Sendable {
        /// Write this message.
        case write(EncodedMessage)
        /// Prepare the first message: a snapshot or delta from the node's applied revision.
        case initialSync(from: Revision)
        /// Prepare a merged delta from `from` to the head (the stream fell behind).
        case catchUp(from: Revision)
        /// Nothing to do until signalled.
        case idle

        public static func == (lhs: Step, rhs: Step) -> Bool {
            switch (lhs, rhs) {
            case (.write(let a), .write(let b)): a === b
            case (.initialSync(let a), .initialSync(let b)): a == b
            case (.catchUp(let a), .catchUp(let b)): a == b
            case (.idle, .idle): true
            default: false
            }
        }
    }

    /// The last published revision: the newest revision that changed what nodes hold.
    /// (Revisions that only touch other kinds, such as Node registrations, are not published;
    /// a stream's `sent` may therefore be ahead of `head`.)
    public private(set) var head: Revision
    var streams: [ConnectionID: Stream] = [:]

    public init(head: Revision) {
        self.head = head
    }

    public var streamCount: Int { streams.count }

    /// A stream opened with a Hello carrying the node's applied revision.
    public mutating func joined(_ id: ConnectionID, appliedRevision: Revision) {
        streams[id] = Stream(sent: nil, initialFrom: appliedRevision)
    }

    public mutating func left(_ id: ConnectionID) {
        streams[id] = nil
    }

    /// The node asked to start over (it saw a gap or lost its state).
    public mutating func resync(_ id: ConnectionID, appliedRevision: Revision) {
        guard streams[id] != nil else { return }
        streams[id] = Stream(sent: nil, initialFrom: appliedRevision)
    }

    /// Revisions `from+1 ... to` were committed and encoded once as `message`.
    /// Returns the streams whose writers must be woken.
    public mutating func published(from: Revision, to: Revision, message: EncodedMessage) -> [ConnectionID] {
        head = max(head, to)
        var wake: [ConnectionID] = []
        for (id, stream) in streams {
            guard let sent = stream.sent, sent < to else { continue }
            if sent == from && stream.slot == nil && !stream.preparing {
                streams[id]!.slot = message
                streams[id]!.sent = to
            }
            wake.append(id)
        }
        return wake
    }

    /// The writer asks what to do; taking a message empties the slot.
    public mutating func next(_ id: ConnectionID) -> Step {
        guard var stream = streams[id], !stream.preparing else { return .idle }
        defer { streams[id] = stream }
        if let message = stream.slot {
            stream.slot = nil
            return .write(message)
        }
        if let from = stream.initialFrom {
            stream.preparing = true
            return .initialSync(from: from)
        }
        if let sent = stream.sent, sent < head {
            stream.preparing = true
            return .catchUp(from: sent)
        }
        return .idle
    }

    /// A prepared initial sync or catch-up: `message` brings the node from `from` to `to`
    /// (nil when the node turned out to be at `to` already). Dropped if the stream moved on
    /// meanwhile; its writer then prepares again.
    public mutating func prepared(_ id: ConnectionID, from: Revision, to: Revision, message: EncodedMessage?) {
        guard var stream = streams[id] else { return }
        stream.preparing = false
        if let initialFrom = stream.initialFrom {
            // The first message replaces whatever the node holds, even if `to` < `from`
            // (a node that claims a revision this server never reached gets a snapshot).
            if initialFrom == from {
                stream.slot = message
                stream.sent = to
                stream.initialFrom = nil
            }
        } else if stream.sent == from, stream.slot == nil, to > from {
            stream.slot = message
            stream.sent = to
        }
        streams[id] = stream
    }

    /// Preparing failed (e.g. a storage error): let the writer try again.
    public mutating func preparationFailed(_ id: ConnectionID) {
        streams[id]?.preparing = false
    }

    /// The revision last sent to a stream (what the node is expected to apply).
    public func sentRevision(_ id: ConnectionID) -> Revision? {
        streams[id]?.sent
    }
}
