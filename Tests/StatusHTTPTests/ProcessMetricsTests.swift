import Glibc
import StatusHTTP
import Testing

/// The process metrics as a scraper parses them, checked against what the test itself does to
/// the process and against the kernel's other accounts of it.
@Suite struct ProcessMetricsTests {
    /// Every sample of one scrape, after checking that each has its HELP and TYPE lines.
    private func scrape() throws -> [String: (type: String, value: Double)] {
        var buffer: [UInt8] = []
        ProcessMetrics.append(to: &buffer)
        let lines = String(decoding: buffer, as: UTF8.self).split(separator: "\n").map(String.init)
        var samples: [String: (type: String, value: Double)] = [:]
        var index = 0
        while index < lines.count {
            let help = lines[index].split(separator: " ", maxSplits: 3)
            try #require(index + 2 < lines.count && help.count == 4 && help[0] == "#" && help[1] == "HELP", "\(lines[index...])")
            let name = String(help[2])
            let type = lines[index + 1].split(separator: " ")
            try #require(type.count == 4 && type[1] == "TYPE" && type[2] == name, "\(lines[index + 1])")
            let sample = lines[index + 2].split(separator: " ")
            let value = try #require(sample.count == 2 && sample[0] == name ? Double(sample[1]) : nil, "\(lines[index + 2])")
            samples[name] = (String(type[3]), value)
            index += 3
        }
        return samples
    }

    @Test func scrapeHasPrometheusStandardProcessMetrics() throws {
        let samples = try scrape()
        #expect(samples.keys.sorted() == [
            "process_cpu_seconds_total", "process_max_fds", "process_open_fds", "process_resident_memory_bytes",
            "process_start_time_seconds", "process_virtual_memory_bytes",
        ])
        #expect(samples["process_cpu_seconds_total"]?.type == "counter")
        #expect(samples.filter { $0.key != "process_cpu_seconds_total" }.allSatisfy { $0.value.type == "gauge" })
    }

    @Test func memoryLiesBetweenTheKernelsOtherAccounts() throws {
        let samples = try scrape()
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        let resident = try #require(samples["process_resident_memory_bytes"]?.value)
        // Resident now: more than a megabyte, at most the peak the kernel counted in kilobytes.
        #expect(resident > Double(1 << 20))
        #expect(resident <= Double(usage.ru_maxrss) * 1024)
        #expect(try #require(samples["process_virtual_memory_bytes"]?.value) >= resident)
    }

    @Test func cpuTimeCountsWhatThisThreadSpends() throws {
        func threadCPU() -> Double {
            var now = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
            return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
        }
        let before = try #require(try scrape()["process_cpu_seconds_total"]?.value)
        let start = threadCPU()
        var spin: UInt64 = 0
        while threadCPU() - start < 0.2 { spin &+= 1 }
        let after = try #require(try scrape()["process_cpu_seconds_total"]?.value)
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        let process = [usage.ru_utime, usage.ru_stime].reduce(0) { $0 + Double($1.tv_sec) + Double($1.tv_usec) / 1e6 }
        // Clock ticks are 10 ms; other threads only add.
        #expect(after - before >= 0.18, "spun \(spin) times")
        // The same account as the kernel's other one, within ticks (and what other tests' threads
        // spent between the two readings).
        #expect(abs(after - process) < 0.1)
    }

    @Test func openDescriptorsCountTheOnesThisTestHolds() throws {
        let held = (0..<32).map { _ in open("/dev/null", O_RDONLY) }
        defer { held.forEach { close($0) } }
        #expect(held.allSatisfy { $0 >= 0 })
        let samples = try scrape()
        let count = try #require(samples["process_open_fds"]?.value)
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        // Standard input, output and error as well.
        #expect(count >= 35)
        #expect(try #require(samples["process_max_fds"]?.value) == Double(limit.rlim_cur))
        #expect(count <= Double(limit.rlim_cur))
    }

    @Test func startTimeIsThisProcessesStartNotBootOrTheEpoch() throws {
        let start = try #require(try scrape()["process_start_time_seconds"]?.value)
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var boot = timespec()
        clock_gettime(CLOCK_BOOTTIME, &boot)
        let bootedAt = Double(now.tv_sec) - Double(boot.tv_sec)
        // After boot (this machine has been up for longer than the test has run), before now,
        // and at most an hour before now: the test runner started just now.
        #expect(start <= Double(now.tv_sec) + 1)
        #expect(start >= Double(now.tv_sec) - 3600)
        #expect(start >= bootedAt - 1)
    }
}
