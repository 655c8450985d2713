import ProxyAPI
import ProxyModel

/// `discovery.k8s.io/v1 EndpointSlice` manifests, and legacy `v1 Endpoints` converted to slices.
enum EndpointSliceManifest {
    static let serviceNameLabel = "kubernetes.io/service-name"

    static func decode(_ map: [String: Any], defaultNamespace: String, reader: inout ManifestReader) -> WireEndpointSlice {
        reader.onlyKnown(map, "", known: ["apiVersion", "kind", "metadata", "addressType", "ports", "endpoints"])
        var slice = WireEndpointSlice()
        slice.metadata = Manifests.metadata(map, defaultNamespace: defaultNamespace, reader: &reader)
        if let service = slice.metadata.labels[serviceNameLabel] {
            slice.serviceName = service
        } else {
            reader.violations.add("metadata.labels[\(serviceNameLabel)]", "required: the slice's service")
        }
        switch reader.string(map["addressType"], "addressType") {
        case "FQDN":
            reader.violations.add("addressType", "FQDN slices cannot be proxied: use IPv4 or IPv6")
        case let family?:
            slice.addressType = family
        case nil:
            reader.violations.add("addressType", "required: IPv4 or IPv6")
        }
        for (index, value) in reader.list(map["ports"], "ports").enumerated() {
            let path = "ports[\(index)]"
            guard let port = reader.map(value, path) else { continue }
            reader.onlyKnown(port, path, known: ["name", "protocol", "port"], ignored: ["appProtocol"])
            slice.ports.append(
                .with {
                    $0.name = reader.string(port["name"], "\(path).name") ?? ""
                    $0.protocol = Manifests.l4Protocol(port["protocol"], "\(path).protocol", reader: &reader)
                    $0.port = reader.port(port["port"], "\(path).port") ?? 0
                })
        }
        for (index, value) in reader.list(map["endpoints"], "endpoints").enumerated() {
            let path = "endpoints[\(index)]"
            guard let endpoint = reader.map(value, path) else { continue }
            reader.onlyKnown(
                endpoint, path, known: ["addresses", "conditions", "nodeName", "zone", "hints"],
                ignored: ["targetRef", "hostname", "deprecatedTopology"])
            var wire = Kubeproxy_V1_Endpoint()
            wire.addresses = reader.strings(endpoint["addresses"], "\(path).addresses")
            if let conditions = reader.map(endpoint["conditions"], "\(path).conditions") {
                reader.onlyKnown(conditions, "\(path).conditions", known: ["ready", "serving", "terminating"])
                if let ready = reader.bool(conditions["ready"], "\(path).conditions.ready") { wire.conditions.ready = ready }
                if let serving = reader.bool(conditions["serving"], "\(path).conditions.serving") { wire.conditions.serving = serving }
                if let terminating = reader.bool(conditions["terminating"], "\(path).conditions.terminating") {
                    wire.conditions.terminating = terminating
                }
            }
            wire.nodeName = reader.string(endpoint["nodeName"], "\(path).nodeName") ?? ""
            wire.zone = reader.string(endpoint["zone"], "\(path).zone") ?? ""
            if let hints = reader.map(endpoint["hints"], "\(path).hints") {
                reader.onlyKnown(hints, "\(path).hints", known: ["forZones", "forNodes"])
                wire.hintZones = names(hints["forZones"], "\(path).hints.forZones", reader: &reader)
                wire.hintNodes = names(hints["forNodes"], "\(path).hints.forNodes", reader: &reader)
            }
            slice.endpoints.append(wire)
        }
        return slice
    }

    private static func names(_ value: Any?, _ path: String, reader: inout ManifestReader) -> [String] {
        reader.list(value, path).enumerated().compactMap { index, item in
            reader.map(item, "\(path)[\(index)]").flatMap { reader.string($0["name"], "\(path)[\(index)].name") }
        }
    }

    /// A `v1 Endpoints` object becomes one slice per subset and address family, named
    /// `<service>-legacy-<subset>-<v4|v6>`; notReadyAddresses become endpoints with ready=false.
    static func decodeLegacy(_ map: [String: Any], defaultNamespace: String, reader: inout ManifestReader) -> [WireEndpointSlice] {
        reader.onlyKnown(map, "", known: ["apiVersion", "kind", "metadata", "subsets"])
        let metadata = Manifests.metadata(map, defaultNamespace: defaultNamespace, reader: &reader)
        var slices: [WireEndpointSlice] = []
        for (subsetIndex, value) in reader.list(map["subsets"], "subsets").enumerated() {
            let path = "subsets[\(subsetIndex)]"
            guard let subset = reader.map(value, path) else { continue }
            reader.onlyKnown(subset, path, known: ["addresses", "notReadyAddresses", "ports"])
            var ports: [Kubeproxy_V1_EndpointPort] = []
            for (index, value) in reader.list(subset["ports"], "\(path).ports").enumerated() {
                guard let port = reader.map(value, "\(path).ports[\(index)]") else { continue }
                reader.onlyKnown(port, "\(path).ports[\(index)]", known: ["name", "protocol", "port"], ignored: ["appProtocol"])
                ports.append(
                    .with {
                        $0.name = reader.string(port["name"], "\(path).ports[\(index)].name") ?? ""
                        $0.protocol = Manifests.l4Protocol(port["protocol"], "\(path).ports[\(index)].protocol", reader: &reader)
                        $0.port = reader.port(port["port"], "\(path).ports[\(index)].port") ?? 0
                    })
            }
            var byFamily: [String: [Kubeproxy_V1_Endpoint]] = [:]
            for (field, ready) in [("addresses", true), ("notReadyAddresses", false)] {
                for (index, value) in reader.list(subset[field], "\(path).\(field)").enumerated() {
                    let addressPath = "\(path).\(field)[\(index)]"
                    guard let address = reader.map(value, addressPath) else { continue }
                    reader.onlyKnown(address, addressPath, known: ["ip", "nodeName"], ignored: ["targetRef", "hostname"])
                    guard let ip = reader.string(address["ip"], "\(addressPath).ip") else { continue }
                    let family = ip.contains(":") ? "IPv6" : "IPv4"
                    byFamily[family, default: []].append(
                        .with {
                            $0.addresses = [ip]
                            $0.conditions.ready = ready
                            $0.nodeName = reader.string(address["nodeName"], "\(addressPath).nodeName") ?? ""
                        })
                }
            }
            for (family, endpoints) in byFamily.sorted(by: { $0.key < $1.key }) {
                slices.append(
                    .with {
                        $0.metadata = metadata
                        $0.metadata.name = "\(metadata.name)-legacy-\(subsetIndex)-\(family == "IPv4" ? "v4" : "v6")"
                        $0.metadata.labels[serviceNameLabel] = metadata.name
                        $0.serviceName = metadata.name
                        $0.addressType = family
                        $0.ports = ports
                        $0.endpoints = endpoints
                    })
            }
        }
        return slices
    }
}
