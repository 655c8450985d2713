/// A `HOST:PORT` endpoint as given on command lines: `127.0.0.1:7000`, `[::1]:7000`,
/// `localhost:7000`. IPv6 hosts are bracketed.
public struct HostPort: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// nil when malformed (missing port, port out of 0–65535, unbracketed IPv6).
    public init?(_ text: String) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
            guard IPAddress(String(host))?.family == .ipv6 else { return nil }
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else { return nil }
        self.host = String(host)
        self.port = port
    }

    /// The host as an IP literal: `localhost` becomes 127.0.0.1.
    public var resolvedIP: IPAddress? {
        host == "localhost" ? IPAddress("127.0.0.1") : IPAddress(host)
    }

    public var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}
