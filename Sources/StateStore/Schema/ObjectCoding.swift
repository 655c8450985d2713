import Foundation
import ProxyAPI
import ProxyModel
import SwiftProtobuf

/// Objects are stored as the protobuf of their wire message (as Kubernetes stores its objects
/// in etcd); the `kind` column says which message. Objects reach the store through the wire API,
/// so they are already in the form their wire message reads back to.
///
/// Bodies never hold the revision (it lives in the `revision` column of `objects` and
/// `changes`), and labels are written in key order, so an object's encoding depends only on its
/// content: an unchanged write is recognised by comparing bytes, without decoding what is stored.
enum ObjectCoding {
    private static let ordered: BinaryEncodingOptions = {
        var options = BinaryEncodingOptions()
        options.useDeterministicOrdering = true
        return options
    }()

    static func encode(_ object: ProxyObject) throws -> Data {
        var object = object
        object.metadata.revision = .zero
        switch object {
        case .service(let service): return try service.wire.serializedBytes(options: ordered)
        case .endpointSlice(let slice): return try slice.wire.serializedBytes(options: ordered)
        case .node(let node): return try node.wire.serializedBytes(options: ordered)
        }
    }

    static func decode(kind: ObjectKind, _ data: Data, revision: Int64) throws -> ProxyObject {
        var object: ProxyObject
        switch kind {
        case .service: object = .service(try Service(wire: WireService(serializedBytes: data)))
        case .endpointSlice: object = .endpointSlice(try EndpointSlice(wire: WireEndpointSlice(serializedBytes: data)))
        case .node: object = .node(try Node(wire: WireNode(serializedBytes: data)))
        }
        object.metadata.revision = Revision(UInt64(revision))
        return object
    }

    /// The bytes of a stored body's wire message with its revision, without decoding it.
    static func wireBytes(_ body: Data, revision: Int64) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(body.count + 16)
        bytes += body
        WireFields.appendRevision(Revision(UInt64(revision)), to: &bytes)
        return bytes
    }

    static func kind(_ text: String) throws -> ObjectKind {
        guard let kind = ObjectKind(rawValue: text) else { throw StoreError.storage("unknown kind \(text) in database") }
        return kind
    }
}
