import Foundation
import GRDB
import Logging
import ProxyModel
import Synchronization
import Testing

@testable import ControlServer
@testable import StateStore

/// The log records a logger sends here, with their levels.
private final class RecordedLog: Sendable {
    let records = Mutex<[(Logger.Level, String)]>([])

    var logger: Logger {
        var logger = Logger(label: "test") { _ in Handler(log: self) }
        logger.logLevel = .trace
        return logger
    }

    func take() -> [(Logger.Level, String)] { records.withLock { records in defer { records = [] }; return records } }

    private struct Handler: LogHandler {
        let log: RecordedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            log.records.withLock { $0.append((event.level, "\(event.message)")) }
        }
    }
}

@Suite struct NodeStatusTrackerTests {
    /// A store that refuses writes (the disk full, say) is logged once by the store and once by the
    /// tracker, not at every flush; the statuses are kept and written once it takes writes again,
    /// which both log too.
    @Test func aFailingStoreIsLoggedOnceAndTheStatusesWrittenWhenItRecovers() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tracker-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let log = RecordedLog()
        let store = try Store(configuration: StoreConfiguration(path: directory.appendingPathComponent("state.db").path), logger: log.logger)
        let tracker = NodeStatusTracker(store: store, flushInterval: .seconds(1), logger: log.logger)
        let node = Node(metadata: ObjectMeta(namespace: "", name: "node-a"))
        _ = try await store.registerNode(node)
        _ = log.take()

        try await store.pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA query_only = 1") }
        tracker.connected(node, stored: nil)
        tracker.acked("node-a", revision: 7)
        for _ in 0..<3 { await tracker.flush() }
        let failing = log.take()
        #expect(failing.map(\.0) == [.error, .warning, .debug, .debug, .debug, .debug])
        #expect(failing.map { $0.1.prefix(12) } == ["writes faile", "cannot persi", "writes faile", "cannot persi", "writes faile", "cannot persi"])
        #expect(try await store.nodeStatuses(named: "node-a").map(\.appliedRevision) == [0])

        try await store.pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA query_only = 0") }
        await tracker.flush()
        #expect(log.take().map { "\($0.0) \($0.1)" } == ["info writes are stored again", "info node status persisted again"])
        #expect(try await store.nodeStatuses(named: "node-a").map(\.appliedRevision) == [7])
        await tracker.flush()
        #expect(log.take().isEmpty)
    }
}
