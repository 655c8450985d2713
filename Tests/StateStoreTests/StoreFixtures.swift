import Foundation
import ProxyModel

@testable import StateStore

/// A store on a fresh SQLite file in a temporary directory, with the production configuration.
struct TemporaryStore {
    let directory: URL
    let store: Store

    init(retainedRevisions: UInt64 = 10_000, validation: ValidationContext = .init()) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("store-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        store = try Store(
            configuration: StoreConfiguration(
                path: directory.appendingPathComponent("state.db").path, validation: validation,
                retainedRevisions: retainedRevisions))
    }

    func remove() {
        try? FileManager.default.removeItem(at: directory)
    }
}

func service(_ name: String, namespace: String = "default", port: Int = 80, configure: (inout Service) -> Void = { _ in })
    -> ProxyObject
{
    var service = Service(
        metadata: ObjectMeta(namespace: namespace, name: name), ports: [ServicePort(name: "http", port: port)])
    configure(&service)
    return .service(service)
}

func slice(_ name: String, service: String, addresses: [String], namespace: String = "default") -> ProxyObject {
    .endpointSlice(
        EndpointSlice(
            metadata: ObjectMeta(namespace: namespace, name: name), serviceName: service, addressType: .ipv4,
            ports: [EndpointPort(name: "http", port: 8080)],
            endpoints: addresses.map { Endpoint(addresses: [IPAddress($0)!]) }))
}

extension ProxyObject {
    var asService: Service? {
        if case .service(let service) = self { return service }
        return nil
    }
}

func key(_ kind: ObjectKind, _ name: String, namespace: String = "default") -> ObjectKey {
    ObjectKey(kind: kind, namespace: namespace, name: name)
}
