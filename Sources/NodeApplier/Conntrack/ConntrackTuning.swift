import Foundation
import Glibc
import Logging

/// kube-proxy's conntrack tuning, with its flags' defaults: the size of the kernel's connection
/// table (and of its hash table), and TCP and UDP timeouts. Set once, at start.
public struct ConntrackTuning: Hashable, Sendable {
    /// Connections tracked per CPU (`nf_conntrack_max`); 0 leaves the table's size alone.
    public var maxPerCore = 32768
    /// The table's size at least, whatever the number of CPUs.
    public var min = 131072
    /// Seconds an established TCP connection stays tracked without traffic; 0 leaves the kernel's.
    public var tcpEstablishedTimeout = 86400
    /// Seconds a TCP connection in CLOSE_WAIT stays tracked; 0 leaves the kernel's.
    public var tcpCloseWaitTimeout = 3600
    /// Out-of-window TCP packets are not marked INVALID (`nf_conntrack_tcp_be_liberal`).
    public var tcpBeLiberal = false
    /// Seconds for UDP flows (seen one way, and both ways); 0 leaves the kernel's.
    public var udpTimeout = 0
    public var udpStreamTimeout = 0

    public init() {}

    /// One value written under `/`.
    public struct Setting: Hashable, Sendable, CustomStringConvertible {
        public var path: String
        public var value: Int
        /// Only raised: a larger value in the kernel stays.
        public var atLeast = false

        public var description: String { "/\(path)" }
    }

    static let netfilter = "proc/sys/net/netfilter/"
    static let hashSize = "sys/module/nf_conntrack/parameters/hashsize"

    /// What to write on a node with `cores` CPUs. The table's size and its hash buckets belong to
    /// the whole machine, and the kernel takes them from its initial network namespace only:
    /// from another one (a node in a namespace) they are left out.
    public func settings(cores: Int, initialNetworkNamespace: Bool) -> [Setting] {
        var settings: [Setting] = []
        if maxPerCore > 0 && initialNetworkNamespace {
            let max = Swift.max(maxPerCore * cores, min)
            settings.append(Setting(path: Self.netfilter + "nf_conntrack_max", value: max))
            settings.append(Setting(path: Self.hashSize, value: max / 4, atLeast: true))
        }
        let timeouts = [
            ("nf_conntrack_tcp_timeout_established", tcpEstablishedTimeout), ("nf_conntrack_tcp_timeout_close_wait", tcpCloseWaitTimeout),
            ("nf_conntrack_udp_timeout", udpTimeout), ("nf_conntrack_udp_timeout_stream", udpStreamTimeout),
        ]
        for (name, seconds) in timeouts where seconds > 0 {
            settings.append(Setting(path: Self.netfilter + name, value: seconds))
        }
        if tcpBeLiberal { settings.append(Setting(path: Self.netfilter + "nf_conntrack_tcp_be_liberal", value: 1)) }
        return settings
    }

    /// Writes the settings under `root` (`/` but in tests) that differ from the kernel's values,
    /// and logs each change. A setting that cannot be read or written is logged and returned;
    /// the others are set all the same.
    @discardableResult
    public static func apply(_ settings: [Setting], root: URL = URL(fileURLWithPath: "/"), logger: Logger) -> [Setting] {
        var failed: [Setting] = []
        for setting in settings {
            let file = root.appendingPathComponent(setting.path)
            do {
                let text = try String(contentsOf: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
                guard let current = Int(text) else { throw CocoaError(.fileReadCorruptFile) }
                if current == setting.value || (setting.atLeast && current > setting.value) { continue }
                try write("\(setting.value)\n", to: file.path)
                logger.info("conntrack: set", metadata: ["setting": "\(setting)", "value": "\(setting.value)", "was": "\(current)"])
            } catch {
                logger.warning("conntrack: cannot set", metadata: ["setting": "\(setting)", "value": "\(setting.value)", "error": "\(error)"])
                failed.append(setting)
            }
        }
        return failed
    }

    /// As `echo VALUE > PATH` does (procfs ignores the truncation, a file in tests needs it).
    private static func write(_ text: String, to path: String) throws {
        let descriptor = open(path, O_WRONLY | O_TRUNC)
        guard descriptor >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(descriptor) }
        let bytes = Array(text.utf8)
        guard Glibc.write(descriptor, bytes, bytes.count) == bytes.count else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    }

    /// Whether this process is in the machine's initial network namespace (that of PID 1).
    public static func inInitialNetworkNamespace() -> Bool {
        let manager = FileManager.default
        guard let own = try? manager.destinationOfSymbolicLink(atPath: "/proc/self/ns/net"),
            let initial = try? manager.destinationOfSymbolicLink(atPath: "/proc/1/ns/net")
        else { return false }
        return own == initial
    }
}
