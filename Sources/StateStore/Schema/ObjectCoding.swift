import Foundation
import ProxyModel

/// Objects are stored as JSON of their model type; the `kind` column says which type.
enum ObjectCoding {
    static func encode(_ object: ProxyObject) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        switch object {
        case .service(let service): return try encoder.encode(service)
        case .endpointSlice(let slice): return try encoder.encode(slice)
        case .node(let node): return try encoder.encode(node)
        }
    }

    static func decode(kind: ObjectKind, _ data: Data) throws -> ProxyObject {
        let decoder = JSONDecoder()
        switch kind {
        case .service: return .service(try decoder.decode(Service.self, from: data))
        case .endpointSlice: return .endpointSlice(try decoder.decode(EndpointSlice.self, from: data))
        case .node: return .node(try decoder.decode(Node.self, from: data))
        }
    }

    static func kind(_ text: String) throws -> ObjectKind {
        guard let kind = ObjectKind(rawValue: text) else { throw StoreError.storage("unknown kind \(text) in database") }
        return kind
    }
}
