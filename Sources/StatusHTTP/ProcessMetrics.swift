import Glibc

/// Prometheus' standard process metrics, under the names its client libraries export (kube-proxy's
/// `/metrics` has them too): CPU time, resident and virtual memory, open and maximum file
/// descriptors, start time. Read from `/proc` at every scrape; a value that cannot be read is left
/// out.
public enum ProcessMetrics {
    /// The metrics in Prometheus' text exposition format, appended to `buffer`.
    public static func append(to buffer: inout [UInt8]) {
        var text = ""
        func sample(_ name: String, _ type: String, _ help: String, _ value: Double?) {
            guard let value else { return }
            text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(value)\n"
        }
        let stat = ProcessStat()
        sample("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", stat?.cpuSeconds)
        sample("process_open_fds", "gauge", "Number of open file descriptors.", openDescriptors().map { Double($0) })
        sample("process_max_fds", "gauge", "Maximum number of open file descriptors.", maxDescriptors().map { Double($0) })
        sample("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", stat.map { Double($0.virtualBytes) })
        sample("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", stat.map { Double($0.residentBytes) })
        sample(
            "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
            stat.flatMap { stat in bootTime().map { Double($0) + stat.startSecondsAfterBoot } })
        buffer += Array(text.utf8)
    }

    /// Seconds since the epoch at boot: `btime` in `/proc/stat`.
    static func bootTime() -> UInt64? {
        guard let text = read("/proc/stat") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("btime ") {
            return UInt64(line.dropFirst("btime ".count))
        }
        return nil
    }

    /// Entries of `/proc/self/fd`, the directory's own descriptor included (as Prometheus' Go
    /// client counts them).
    static func openDescriptors() -> Int? {
        guard let directory = opendir("/proc/self/fd") else { return nil }
        defer { closedir(directory) }
        var count = 0
        while let entry = readdir(directory) {
            let isDot = withUnsafeBytes(of: entry.pointee.d_name) { name in
                name[0] == UInt8(ascii: ".") && (name[1] == 0 || (name[1] == UInt8(ascii: ".") && name[2] == 0))
            }
            if !isDot { count += 1 }
        }
        return count
    }

    /// The soft limit on open file descriptors.
    static func maxDescriptors() -> UInt64? {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        return UInt64(limit.rlim_cur)
    }

    /// A small `/proc` file's whole text (their sizes read as 0, so this reads until the end).
    static func read(_ path: String) -> String? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 { return nil }
            if count == 0 { break }
            bytes += chunk[..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A process's CPU time, memory and start, from `/proc/<pid>/stat`.
public struct ProcessStat: Sendable {
    /// User and system.
    public var cpuSeconds: Double
    public var startSecondsAfterBoot: Double
    public var virtualBytes: UInt64
    public var residentBytes: UInt64

    /// `process` is a process id or `self`. The fields after the command name, which is in
    /// parentheses and may hold spaces, start with the third (state); utime and stime are the 14th
    /// and 15th, starttime, vsize and rss the 22nd to 24th.
    public init?(process: String = "self") {
        guard let text = ProcessMetrics.read("/proc/\(process)/stat"), let nameEnd = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: nameEnd)...].split(separator: " ")
        func field(_ number: Int) -> UInt64? { fields.count > number - 3 ? UInt64(fields[number - 3]) : nil }
        guard let user = field(14), let system = field(15), let start = field(22), let virtual = field(23),
            let resident = field(24)
        else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        cpuSeconds = Double(user + system) / ticks
        startSecondsAfterBoot = Double(start) / ticks
        virtualBytes = virtual
        residentBytes = resident * UInt64(sysconf(Int32(_SC_PAGESIZE)))
    }
}
