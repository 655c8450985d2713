#if canImport(Glibc)
import Glibc
#endif

/// Wall-clock timestamps as carried on the wire (commit times, last-seen times).
public enum WallClock {
    /// Nanoseconds since the Unix epoch.
    public static func nowUnixNanos() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
    }
}
