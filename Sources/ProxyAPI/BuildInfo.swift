/// Version of this build, reported by `control-server --version`, `proxyctl version` and ServerInfo.
public enum BuildInfo {
    public static let version = "0.1.0"
}
