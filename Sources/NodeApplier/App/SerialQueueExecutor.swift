import Dispatch

/// Runs an actor's jobs on a serial dispatch queue of its own, off Swift's cooperative thread
/// pool. The applier blocks in libnftables and netlink for up to seconds per full sync; on its
/// cooperative thread that would leave a 2-core node one thread for the NodeSync stream, the
/// status server and everything else.
final class SerialQueueExecutor: SerialExecutor {
    private let queue: DispatchQueue

    init(label: String) { queue = DispatchQueue(label: label) }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedSerialExecutor()) }
    }
}
