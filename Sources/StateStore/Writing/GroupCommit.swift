import GRDB
import Logging
import ProxyModel
import Synchronization

/// Carries a write's value from the draining task back to its caller.
private final class ResultBox<Value>: @unchecked Sendable {
    var value: Value?
}

/// What one queued write sees: the database inside its own savepoint, and the revision it
/// gets if it changes anything.
struct WriteContext {
    let db: Database
    let revision: Revision
    let commitTimeUnixNanos: Int64
}

/// What a queued write did.
struct WriteOutcome<Value> {
    var value: Value
    /// The changes stored under `WriteContext.revision`; nil when nothing changed.
    var committed: CommittedRevision?
    /// false for dry runs: the savepoint is rolled back even though the work succeeded.
    var keep: Bool = true
}

/// Group commit: concurrent writes queue up; one task runs everything queued in one SQLite
/// transaction (one fsync), each write in its own savepoint so that a failing write leaves
/// the others untouched. Each write that changes something gets its own revision.
final class GroupCommitter: Sendable {
    private final class Job: @unchecked Sendable {
        // Touched only by the draining task, then read once by `finish`.
        let run: (Database, Revision, Int64) throws -> (committed: CommittedRevision?, keep: Bool)
        let finish: (Result<Void, any Error>) -> Void

        init(
            run: @escaping (Database, Revision, Int64) throws -> (committed: CommittedRevision?, keep: Bool),
            finish: @escaping (Result<Void, any Error>) -> Void
        ) {
            self.run = run
            self.finish = finish
        }
    }

    private struct Queue {
        var jobs: [Job] = []
        var draining = false
    }

    private let writer: DatabasePool
    private let retainedRevisions: UInt64
    private let logger: Logger
    private let observers: Mutex<[any CommitObserver]> = Mutex([])
    private let queue = Mutex(Queue())
    /// Writes that failed in storage since the last batch that stored: while storage fails (a full
    /// disk), the first failure is logged as an error and the rest at debug level, until one stores.
    private let failedSinceStored = Mutex(0)

    init(writer: DatabasePool, retainedRevisions: UInt64, logger: Logger) {
        self.writer = writer
        self.retainedRevisions = retainedRevisions
        self.logger = logger
    }

    func addObserver(_ observer: any CommitObserver) {
        observers.withLock { $0.append(observer) }
    }

    /// Queues `work` and returns its value once the batch holding it is durable.
    func submit<Value: Sendable>(_ work: @escaping @Sendable (WriteContext) throws -> WriteOutcome<Value>) async throws -> Value {
        let box = ResultBox<Value>()
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let job = Job(
                run: { db, revision, now in
                    let outcome = try work(WriteContext(db: db, revision: revision, commitTimeUnixNanos: now))
                    box.value = outcome.value
                    return (outcome.committed, outcome.keep)
                },
                finish: { continuation.resume(with: $0) })
            let startDrain = queue.withLock { queue in
                queue.jobs.append(job)
                if queue.draining { return false }
                queue.draining = true
                return true
            }
            if startDrain {
                Task { await self.drain() }
            }
        }
        return box.value!
    }

    private func drain() async {
        while true {
            let jobs = queue.withLock { queue in
                let jobs = queue.jobs
                queue.jobs = []
                if jobs.isEmpty { queue.draining = false }
                return jobs
            }
            if jobs.isEmpty { return }
            await runBatch(jobs)
        }
    }

    private func runBatch(_ jobs: [Job]) async {
        let results: [Result<Void, any Error>]
        let committed: [CommittedRevision]
        do {
            (results, committed) = try await writer.writeWithoutTransaction { db in
                var results = [Result<Void, any Error>](repeating: .success(()), count: jobs.count)
                var committed: [CommittedRevision] = []
                do {
                    try db.inTransaction(.immediate) {
                        try self.run(jobs, in: db, results: &results, committed: &committed)
                        return .commit
                    }
                } catch {
                    // SQLite rolls the whole transaction back on some failures (a full disk): the
                    // first write that failed in storage tells why, the commit only that it was aborted.
                    for case .failure(let failure as StoreError) in results where failure.isStorageFailure { throw failure }
                    throw error
                }
                return (results, committed)
            }
        } catch {
            let failure = Self.storeError(error)
            storageFailed(failure, writes: jobs.count)
            for job in jobs { job.finish(.failure(failure)) }
            return
        }
        if !committed.isEmpty {
            for observer in observers.withLock({ $0 }) { observer.committed(committed) }
        }
        var stored = true
        for case .failure(let error as StoreError) in results where error.isStorageFailure {
            storageFailed(error, writes: 1)
            stored = false
        }
        if stored {
            let failed = failedSinceStored.withLock { failed in
                defer { failed = 0 }
                return failed
            }
            if failed > 0 { logger.info("writes are stored again", metadata: ["failed_writes": "\(failed)"]) }
        }
        for (job, result) in zip(jobs, results) { job.finish(result) }
    }

    /// Runs each job in a savepoint of the batch's transaction, with the next revision if it
    /// changes something; a failing job leaves nothing behind, nor its revision taken.
    private func run(
        _ jobs: [Job], in db: Database, results: inout [Result<Void, any Error>], committed: inout [CommittedRevision]
    ) throws {
        let stored = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'head_revision'") ?? 0
        var head = Revision(UInt64(stored))
        for (index, job) in jobs.enumerated() {
            do {
                var produced: CommittedRevision?
                try db.inSavepoint {
                    let result = try job.run(db, head.next, WallClock.nowUnixNanos())
                    guard result.keep else { return .rollback }
                    if let changed = result.committed {
                        try db.cachedStatement(sql: "INSERT INTO revisions (revision, commit_time_unix_nanos) VALUES (?, ?)")
                            .execute(arguments: [Int64(changed.revision.rawValue), changed.commitTimeUnixNanos])
                        produced = changed
                    }
                    return .commit
                }
                if let produced {
                    head = produced.revision
                    committed.append(produced)
                }
            } catch {
                results[index] = .failure(Self.storeError(error))
            }
        }
        if !committed.isEmpty {
            try db.execute(sql: "UPDATE meta SET value = ? WHERE key = 'head_revision'", arguments: [Int64(head.rawValue)])
            try compact(db, head: head)
        }
    }

    /// Logs and reports writes that failed in SQLite, not for what they asked.
    private func storageFailed(_ error: StoreError, writes: Int) {
        guard error.isStorageFailure else { return }
        let first = failedSinceStored.withLock { failed in
            defer { failed += writes }
            return failed == 0
        }
        logger.log(
            level: first ? .error : .debug,
            "writes failed in storage, nothing of them was stored\(first ? " (until writes are stored again, later failures are logged at debug level)" : "")",
            metadata: ["writes": "\(writes)", "error": "\(error)"])
        for observer in observers.withLock({ $0 }) { observer.failed(error, writes: writes) }
    }

    /// Drops change-log history so that at most `retainedRevisions` revisions remain.
    private func compact(_ db: Database, head: Revision) throws {
        guard head.rawValue > retainedRevisions else { return }
        let floor = Int64(head.rawValue - retainedRevisions)
        let compacted = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'compacted_revision'") ?? 0
        guard floor > compacted else { return }
        try db.execute(sql: "DELETE FROM revisions WHERE revision <= ?", arguments: [floor])
        try db.execute(sql: "UPDATE meta SET value = ? WHERE key = 'compacted_revision'", arguments: [floor])
    }

    static func storeError(_ error: any Error) -> StoreError {
        if let error = error as? StoreError { return error }
        if let error = error as? ValidationError { return .invalid(error) }
        if let error = error as? DatabaseError, error.resultCode == .SQLITE_FULL { return .full(String(describing: error)) }
        return .storage(String(describing: error))
    }
}
