import ProxyAPI
import ProxyModel

/// The objects the benchmarks write: slice `index` of a service, with `endpoints` endpoints,
/// where `generation` rotates the address of one endpoint (a one-endpoint change).
func benchSlice(service: Int, endpoints: Int, generation: Int) -> Kubeproxy_V1_Object {
    ProxyObject.endpointSlice(benchSliceModel(service: service, endpoints: endpoints, generation: generation)).wire
}

/// `benchSlice` as the model, its port of `protocol`; of `family` (an IPv6 slice is the IPv4 one's
/// twin in fd00:10:244::/64, named `svc-N-ipv6`).
func benchSliceModel(service: Int, endpoints: Int, generation: Int, protocol: L4Protocol = .tcp, family: IPFamily = .ipv4) -> EndpointSlice {
    let base: UInt32 = 0x0A00_0000 + UInt32(service % 60_000) * 256
    var offsets = (0..<endpoints).map { UInt32($0) + 1 }
    if endpoints > 0 { offsets[generation % endpoints] = 200 + UInt32(generation % 50) }
    let addresses = offsets.map { offset in
        family == .ipv4 ? IPAddress.v4(base + offset) : .v6(UInt128(0xfd00_0010_0244_0000) << 64 | UInt128(base + offset))
    }
    return EndpointSlice(
        metadata: ObjectMeta(namespace: "bench", name: "svc-\(service)-\(family == .ipv4 ? "1" : "ipv6")"), serviceName: "svc-\(service)",
        addressType: family,
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
