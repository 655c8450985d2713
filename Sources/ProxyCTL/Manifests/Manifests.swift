import Foundation
import ProxyAPI
import ProxyModel
import Yams

/// One object read from a manifest, with where it came from (for error messages).
public struct ManifestObject: Sendable {
    public var source: String
    /// 1-based index of the YAML document in its file.
    public var document: Int
    public var object: WireObject

    public var kind: ObjectKind {
        switch object.kind {
        case .service: .service
        case .endpointSlice: .endpointSlice
        case .node, nil: .node
        }
    }

    public var namespace: String {
        switch object.kind {
        case .service(let service): service.metadata.namespace
        case .endpointSlice(let slice): slice.metadata.namespace
        case .node, nil: ""
        }
    }

    public var name: String {
        switch object.kind {
        case .service(let service): service.metadata.name
        case .endpointSlice(let slice): slice.metadata.name
        case .node(let node): node.metadata.name
        case nil: ""
        }
    }

    /// `file: document 2 (Service default/db)`
    public var location: String {
        "\(source): document \(document) (\(kind.rawValue) \(namespace)/\(name))"
    }
}

/// A manifest that cannot be used: names the file, the document, the object and the field.
public struct ManifestError: Error, CustomStringConvertible {
    public var description: String
}

/// Kubernetes manifests (YAML or JSON, multi-document, `kind: List`) as the control server's
/// objects. Server-set fields (status other than load-balancer ingress, managedFields,
/// uid, resourceVersion, annotations, …) are ignored; fields a proxy cannot honour, and
/// typos, are errors rather than silently dropped.
public enum Manifests {
    /// Reads a file, every `.yaml`/`.yml`/`.json` file of a directory (sorted), or `-` (stdin).
    public static func load(_ path: String, defaultNamespace: String) throws -> [ManifestObject] {
        if path == "-" {
            let data = FileHandle.standardInput.readDataToEndOfFile()
            return try decode(String(decoding: data, as: UTF8.self), source: "<stdin>", defaultNamespace: defaultNamespace)
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ManifestError(description: "\(path): no such file or directory")
        }
        if isDirectory.boolValue {
            let entries = try FileManager.default.contentsOfDirectory(atPath: path).sorted()
                .filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") || $0.hasSuffix(".json") }
            return try entries.flatMap { try load((path as NSString).appendingPathComponent($0), defaultNamespace: defaultNamespace) }
        }
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return try decode(text, source: path, defaultNamespace: defaultNamespace)
    }

    public static func decode(_ text: String, source: String, defaultNamespace: String) throws -> [ManifestObject] {
        var objects: [ManifestObject] = []
        var documents: [Any] = []
        do {
            let parser = try Parser(yaml: text)
            while let root = try parser.nextRoot() { documents.append(root.any) }
        } catch {
            throw ManifestError(description: "\(source): not valid YAML or JSON: \(error)")
        }
        for (index, document) in documents.enumerated() {
            if document is NSNull { continue }
            try decodeDocument(document, source: source, document: index + 1, defaultNamespace: defaultNamespace, into: &objects)
        }
        return objects
    }

    private static func decodeDocument(
        _ document: Any, source: String, document index: Int, defaultNamespace: String, into objects: inout [ManifestObject]
    ) throws {
        guard let map = document as? [String: Any] else {
            throw ManifestError(description: "\(source): document \(index): must be a mapping with apiVersion and kind")
        }
        let apiVersion = map["apiVersion"] as? String ?? ""
        let kind = map["kind"] as? String ?? ""
        let metadata = map["metadata"] as? [String: Any] ?? [:]
        let label = "\(kind) \((metadata["namespace"] as? String) ?? defaultNamespace)/\((metadata["name"] as? String) ?? "")"
        var reader = ManifestReader()
        func fail() throws -> Never {
            let problems = reader.violations.list.map(\.description).joined(separator: "; ")
            throw ManifestError(description: "\(source): document \(index) (\(label)): \(problems)")
        }
        switch (apiVersion, kind) {
        case (_, "List"), ("v1", "ServiceList"), ("v1", "EndpointsList"), ("discovery.k8s.io/v1", "EndpointSliceList"):
            for item in reader.list(map["items"], "items") {
                try decodeDocument(item, source: source, document: index, defaultNamespace: defaultNamespace, into: &objects)
            }
            if !reader.violations.list.isEmpty { try fail() }
        case ("v1", "Service"):
            let service = ServiceManifest.decode(map, defaultNamespace: defaultNamespace, reader: &reader)
            if !reader.violations.list.isEmpty { try fail() }
            objects.append(ManifestObject(source: source, document: index, object: .with { $0.service = service }))
        case ("discovery.k8s.io/v1", "EndpointSlice"):
            let slice = EndpointSliceManifest.decode(map, defaultNamespace: defaultNamespace, reader: &reader)
            if !reader.violations.list.isEmpty { try fail() }
            objects.append(ManifestObject(source: source, document: index, object: .with { $0.endpointSlice = slice }))
        case ("v1", "Endpoints"):
            let slices = EndpointSliceManifest.decodeLegacy(map, defaultNamespace: defaultNamespace, reader: &reader)
            if !reader.violations.list.isEmpty { try fail() }
            for slice in slices {
                objects.append(ManifestObject(source: source, document: index, object: .with { $0.endpointSlice = slice }))
            }
        default:
            let what = kind.isEmpty ? "a document without kind" : "\(apiVersion.isEmpty ? "" : apiVersion + " ")\(kind)"
            throw ManifestError(
                description:
                    "\(source): document \(index): unsupported kind \(what): expected v1 Service, discovery.k8s.io/v1 EndpointSlice, v1 Endpoints or a List of them"
            )
        }
    }

    /// Fields every Kubernetes object may carry that a proxy has no use for.
    static let ignoredMetadata: Set<String> = [
        "annotations", "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
        "deletionGracePeriodSeconds", "managedFields", "ownerReferences", "finalizers", "selfLink", "generateName",
    ]

    static func metadata(_ map: [String: Any], defaultNamespace: String, reader: inout ManifestReader) -> Kubeproxy_V1_ObjectMeta {
        guard let metadata = reader.map(map["metadata"], "metadata") else {
            reader.violations.add("metadata.name", "required")
            return .init()
        }
        reader.onlyKnown(metadata, "metadata", known: ["name", "namespace", "labels"], ignored: ignoredMetadata)
        return .with {
            $0.name = reader.string(metadata["name"], "metadata.name") ?? ""
            $0.namespace = reader.string(metadata["namespace"], "metadata.namespace") ?? defaultNamespace
            $0.labels = reader.labels(metadata["labels"], "metadata.labels")
        }
    }

    static func l4Protocol(_ value: Any?, _ path: String, reader: inout ManifestReader) -> Kubeproxy_V1_Protocol {
        switch reader.string(value, path) {
        case nil, "TCP": return .tcp
        case "UDP": return .udp
        case "SCTP": return .sctp
        case let other?:
            reader.violations.add(path, "unsupported protocol \"\(other)\": must be one of TCP, UDP, SCTP")
            return .tcp
        }
    }
}
