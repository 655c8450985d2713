import Dispatch

/// Frees a value on another thread (a large one takes a while: a full program's contributions,
/// libnftables' cache); `wait()` returns once it is freed.
final class BackgroundRelease: @unchecked Sendable {
    private var value: Any?
    private let done = DispatchSemaphore(value: 0)

    init(_ value: consuming some Any) {
        self.value = value
        DispatchQueue.global().async {
            self.value = nil
            self.done.signal()
        }
    }

    func wait() { done.wait() }
}
