import Foundation
import ProxyModel

/// Objects are stored as JSON of their model type; the `kind` column says which type.
///
/// Bodies never hold the revision (it lives in the `revision` column of `objects` and
/// `changes`), so an object's encoding depends only on its content: an unchanged write is
/// recognised by comparing bytes, without decoding what is stored.
enum ObjectCoding {
    static func encode(_ object: ProxyObject) throws -> Data {
        var object = object
        object.metadata.revision = .zero
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        switch object {
        case .service(let service): return try encoder.encode(service)
        case .endpointSlice(let slice): return try encoder.encode(slice)
        case .node(let node): return try encoder.encode(node)
        }
    }

    static func decode(kind: ObjectKind, _ data: Data, revision: Int64) throws -> ProxyObject {
        let decoder = JSONDecoder()
        var object: ProxyObject
        switch kind {
        case .service: object = .service(try decoder.decode(Service.self, from: data))
        case .endpointSlice: object = .endpointSlice(try decoder.decode(EndpointSlice.self, from: data))
        case .node: object = .node(try decoder.decode(Node.self, from: data))
        }
        object.metadata.revision = Revision(UInt64(revision))
        return object
    }

    static func kind(_ text: String) throws -> ObjectKind {
        guard let kind = ObjectKind(rawValue: text) else { throw StoreError.storage("unknown kind \(text) in database") }
        return kind
    }
}
