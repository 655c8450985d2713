import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import GRPCCore
import GRPCNIOTransportHTTP2
import ProxyModel
import StatusHTTP

/// A `control-server` child process on a fresh database in a temporary directory, so that its
/// memory and CPU are measured apart from the load generator's.
final class ServerProcess: @unchecked Sendable {
    let process = Process()
    let directory: URL
    private(set) var grpc = HostPort(host: "127.0.0.1", port: 0)
    private(set) var http = HostPort(host: "127.0.0.1", port: 0)

    init(binary: String, extraArguments: [String] = []) async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments =
            ["--db", directory.appendingPathComponent("state.db").path, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]
            + extraArguments
        let logPath = directory.appendingPathComponent("server.log").path
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.standardError = log
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // The server logs its bound addresses; port 0 avoids collisions.
        for _ in 0..<400 where grpc.port == 0 || http.port == 0 {
            try await Task.sleep(for: .milliseconds(50))
            let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            for line in text.split(separator: "\n") {
                if line.contains("gRPC server listening"), let address = Self.address(in: String(line)) { grpc = address }
                if line.contains("status HTTP server listening"), let address = Self.address(in: String(line)) { http = address }
            }
        }
        guard grpc.port != 0, http.port != 0 else { throw BenchError("control-server did not start; see \(logPath)") }
    }

    private static func address(in line: String) -> HostPort? {
        guard let range = line.range(of: "127.0.0.1:") else { return nil }
        let digits = line[range.upperBound...].prefix { $0.isNumber }
        return Int(digits).map { HostPort(host: "127.0.0.1", port: $0) }
    }

    /// Resident set size of the server process in bytes.
    func residentBytes() throws -> Int { try memoryBytes(of: process.processIdentifier, "VmRSS") }

    /// The largest resident set size the server process has had so far, in bytes.
    func peakResidentBytes() throws -> Int { try memoryBytes(of: process.processIdentifier, "VmHWM") }

    /// CPU time the server process has used, user and system, in seconds.
    func cpuSeconds() throws -> Double {
        guard let stat = ProcessStat(process: "\(process.processIdentifier)") else {
            throw BenchError("cannot read the CPU time of process \(process.processIdentifier)")
        }
        return stat.cpuSeconds
    }

    /// A Prometheus sample of the server's `/metrics`.
    func metric(_ name: String) async throws -> Double { try await scrapeMetric(port: http.port, name) }

    func stop() {
        process.terminate()
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: directory)
    }
}

/// A Prometheus sample from `/metrics` on 127.0.0.1:`port`.
func scrapeMetric(port: Int, _ name: String) async throws -> Double {
    let url = URL(string: "http://127.0.0.1:\(port)/metrics")!
    let (data, _) = try await URLSession.shared.data(from: url)
    let text = String(decoding: data, as: UTF8.self)
    guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + " ") }),
        let value = Double(line.split(separator: " ")[1])
    else { throw BenchError("metric \(name) not found") }
    return value
}

/// A memory figure of a process from `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes.
func memoryBytes(of pid: Int32, _ field: String) throws -> Int {
    let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
        let kilobytes = Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "")
    else { throw BenchError("cannot read \(field) of process \(pid)") }
    return kilobytes * 1024
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func withClient<T: Sendable>(
    _ address: HostPort, _ body: @Sendable (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> T
) async throws -> T {
    let transport = try HTTP2ClientTransport.Posix(
        target: .ipv4(address: address.host, port: address.port), transportSecurity: .plaintext)
    return try await withGRPCClient(transport: transport) { try await body($0) }
}

/// Percentile of sorted values (nearest rank).
func percentile<Value: AdditiveArithmetic>(_ sorted: [Value], _ p: Double) -> Value {
    guard !sorted.isEmpty else { return .zero }
    let rank = Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1
    return sorted[max(0, min(sorted.count - 1, rank))]
}

extension Duration {
    var milliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }
}
