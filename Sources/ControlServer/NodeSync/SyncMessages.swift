import ProxyAPI
import ProxyModel
import StateStore

/// Builds the NodeSync server messages. Nodes only receive Services and EndpointSlices.
enum SyncMessages {
    static let nodeKinds: Set<ObjectKind> = [.service, .endpointSlice]

    static func delta(from: Revision, to: Revision, commitTimeUnixNanos: Int64, changes: [ObjectChange]) throws -> EncodedMessage {
        let message = Kubeproxy_V1_ServerMessage.with {
            $0.delta = .with { delta in
                delta.fromRevision = from.rawValue
                delta.toRevision = to.rawValue
                delta.commitTimeUnixNanos = commitTimeUnixNanos
                for change in changes where nodeKinds.contains(change.key.kind) {
                    if let object = change.object {
                        delta.upserts.append(object.wire)
                    } else {
                        delta.deletes.append(change.key.wire)
                    }
                }
            }
        }
        return EncodedMessage(bytes: try message.serializedBytes())
    }

    /// A Service or EndpointSlice as its wire message's bytes, what a snapshot is made of; nil for
    /// a Node, which nodes do not receive.
    static func encoded(_ object: ProxyObject) throws -> [UInt8]? {
        switch object {
        case .service(let service): try service.wire.serializedBytes()
        case .endpointSlice(let slice): try slice.wire.serializedBytes()
        case .node: nil
        }
    }

    /// A Snapshot of objects already encoded one by one (`encoded`): each is copied in as an
    /// element of its repeated field, not encoded again, so a snapshot costs its bytes only.
    static func snapshot(
        revision: Revision, commitTimeUnixNanos: Int64, storeID: String, services: [[UInt8]], slices: [[UInt8]]
    ) throws -> EncodedMessage {
        let header: [UInt8] = try Kubeproxy_V1_Snapshot.with {
            $0.revision = revision.rawValue
            $0.commitTimeUnixNanos = commitTimeUnixNanos
            $0.storeID = storeID
        }.serializedBytes()
        // Field numbers of schema/proto: ServerMessage.snapshot 1, Snapshot.services 2 and
        // Snapshot.endpoint_slices 3.
        let length = header.count + (services + slices).reduce(0) { $0 + WireFields.fieldSize(length: $1.count) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(WireFields.fieldSize(length: length))
        WireFields.appendHeader(field: 1, length: length, to: &bytes)
        bytes += header
        for (field, objects) in [(UInt8(2), services), (3, slices)] {
            for object in objects {
                WireFields.appendHeader(field: field, length: object.count, to: &bytes)
                bytes += object
            }
        }
        return EncodedMessage(bytes: bytes)
    }

    static func heartbeat(unixNanos: Int64) throws -> EncodedMessage {
        let message = Kubeproxy_V1_ServerMessage.with { $0.heartbeat = .with { $0.unixNanos = unixNanos } }
        return EncodedMessage(bytes: try message.serializedBytes())
    }

    /// The latest state of every object changed in `revisions` (oldest first).
    static func merge(_ revisions: some Sequence<CommittedRevision>) -> [ObjectChange] {
        var latest: [ObjectKey: ObjectChange] = [:]
        for revision in revisions {
            for change in revision.changes { latest[change.key] = change }
        }
        return latest.values.sorted { $0.key < $1.key }
    }
}
