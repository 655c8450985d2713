import ProxyAPI
import ProxyModel
import StateStore

/// Builds the NodeSync server messages. Nodes only receive Services and EndpointSlices.
enum SyncMessages {
    static let nodeKinds: Set<ObjectKind> = [.service, .endpointSlice]

    /// A Delta made of the changes' stored bytes (`ObjectChange.encoded`), copied in as elements of
    /// `upserts`, not encoded again; only the deleted objects' references are encoded.
    static func delta(from: Revision, to: Revision, commitTimeUnixNanos: Int64, changes: [ObjectChange]) throws -> EncodedMessage {
        let header: [UInt8] = try Kubeproxy_V1_Delta.with {
            $0.fromRevision = from.rawValue
            $0.toRevision = to.rawValue
            $0.commitTimeUnixNanos = commitTimeUnixNanos
        }.serializedBytes()
        // Field numbers of schema/proto: ServerMessage.delta 2; Delta.upserts 3 and Delta.deletes
        // 4; Object.service 1 and Object.endpoint_slice 2. An upsert is an Object holding the
        // object's bytes (`wrapper`), a delete the reference's bytes.
        var fields: [(field: UInt8, wrapper: UInt8?, bytes: [UInt8])] = []
        for change in changes {
            switch (change.key.kind, change.encoded) {
            case (.service, let bytes?): fields.append((3, 1, bytes))
            case (.endpointSlice, let bytes?): fields.append((3, 2, bytes))
            case (.service, nil), (.endpointSlice, nil): fields.append((4, nil, try change.key.wire.serializedBytes()))
            case (.node, _): continue
            }
        }
        func contentLength(_ field: (field: UInt8, wrapper: UInt8?, bytes: [UInt8])) -> Int {
            field.wrapper == nil ? field.bytes.count : WireFields.fieldSize(length: field.bytes.count)
        }
        let length = header.count + fields.reduce(0) { $0 + WireFields.fieldSize(length: contentLength($1)) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(WireFields.fieldSize(length: length))
        WireFields.appendHeader(field: 2, length: length, to: &bytes)
        bytes += header
        for field in fields {
            WireFields.appendHeader(field: field.field, length: contentLength(field), to: &bytes)
            if let wrapper = field.wrapper { WireFields.appendHeader(field: wrapper, length: field.bytes.count, to: &bytes) }
            bytes += field.bytes
        }
        return EncodedMessage(bytes: bytes)
    }

    /// A Snapshot of objects already encoded one by one (`ObjectChange.encoded`): each is copied in as an
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
