/// How large a Registry request may be: the control server accepts requests up to this size, and
/// proxyctl sends none larger (and accepts responses of twice it). gRPC's default, 4 MiB, is less
/// than one `proxyctl apply` of ~10k EndpointSlices of 10 endpoints (one Apply, one transaction),
/// and than its response, which echoes every object as stored.
public enum MessageLimits {
    public static let registryBytes = 64 << 20
}
