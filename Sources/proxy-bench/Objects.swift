import ProxyAPI
import ProxyModel

/// The objects the benchmarks write: slice `index` of a service, with `endpoints` endpoints,
/// where `generation` rotates the address of one endpoint (a one-endpoint change).
func benchSlice(service: Int, endpoints: Int, generation: Int) -> Kubeproxy_V1_Object {
    ProxyObject.endpointSlice(benchSliceModel(service: service, endpoints: endpoints, generation: generation)).wire
}

/// `benchSlice` as the model, its port of `protocol`.
func benchSliceModel(service: Int, endpoints: Int, generation: Int, protocol: L4Protocol = .tcp) -> EndpointSlice {
    let base: UInt32 = 0x0A00_0000 + UInt32(service % 60_000) * 256
    var addresses = (0..<endpoints).map { IPAddress.v4(base + UInt32($0) + 1) }
    if endpoints > 0 { addresses[generation % endpoints] = .v4(base + 200 + UInt32(generation % 50)) }
    return EndpointSlice(
        metadata: ObjectMeta(namespace: "bench", name: "svc-\(service)-1"), serviceName: "svc-\(service)", addressType: .ipv4,
        ports: [EndpointPort(name: "http", protocol: `protocol`, port: 8080)],
        // Endpoints spread over 100 nodes by their index across all slices, so the measured node
        // (`node-0`) hosts 1 % of them, as one node among a hundred does.
        endpoints: addresses.enumerated().map { index, address in
            let global = service * endpoints + index
            return Endpoint(addresses: [address], nodeName: "node-\(global % 100)", zone: "zone-\(global % 3)")
        })
}

func benchService(_ service: Int) -> Kubeproxy_V1_Object {
    ProxyObject.service(
        Service(metadata: ObjectMeta(namespace: "bench", name: "svc-\(service)"), ports: [ServicePort(name: "http", port: 80, targetPort: .number(8080))])
    ).wire
}
