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

    static func snapshot(_ snapshot: StateSnapshot, storeID: String) throws -> EncodedMessage {
        let message = Kubeproxy_V1_ServerMessage.with {
            $0.snapshot = .with { wire in
                wire.storeID = storeID
                wire.revision = snapshot.revision.rawValue
                wire.commitTimeUnixNanos = snapshot.commitTimeUnixNanos
                for object in snapshot.objects {
                    switch object {
                    case .service(let service): wire.services.append(service.wire)
                    case .endpointSlice(let slice): wire.endpointSlices.append(slice.wire)
                    case .node: break
                    }
                }
            }
        }
        return EncodedMessage(bytes: try message.serializedBytes())
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
