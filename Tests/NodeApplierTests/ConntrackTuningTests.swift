import Foundation
import Logging
import Testing

@testable import NodeApplier

@Suite struct ConntrackTuningTests {
    typealias Setting = ConntrackTuning.Setting

    static let netfilter = "proc/sys/net/netfilter/"

    /// kube-proxy's defaults: 32768 per CPU but 131072 at least, buckets a quarter of that, TCP
    /// established 1 day and CLOSE_WAIT 1 hour, UDP and liberal TCP left alone.
    @Test func kubeProxysDefaults() {
        let defaults = ConntrackTuning()
        #expect(
            defaults.settings(cores: 2, initialNetworkNamespace: true) == [
                Setting(path: Self.netfilter + "nf_conntrack_max", value: 131072),
                Setting(path: "sys/module/nf_conntrack/parameters/hashsize", value: 32768, atLeast: true),
                Setting(path: Self.netfilter + "nf_conntrack_tcp_timeout_established", value: 86400),
                Setting(path: Self.netfilter + "nf_conntrack_tcp_timeout_close_wait", value: 3600),
            ])
        #expect(defaults.settings(cores: 16, initialNetworkNamespace: true).prefix(2).map(\.value) == [524288, 131072])
    }

    /// In a network namespace of its own the machine-wide size is not the applier's to set (the
    /// kernel refuses it there), and zeros leave the kernel's values.
    @Test func machineWideSettingsOnlyFromTheInitialNamespaceAndZerosLeaveTheKernels() {
        #expect(ConntrackTuning().settings(cores: 2, initialNetworkNamespace: false).map(\.path) == [
            Self.netfilter + "nf_conntrack_tcp_timeout_established", Self.netfilter + "nf_conntrack_tcp_timeout_close_wait",
        ])
        var tuning = ConntrackTuning()
        tuning.maxPerCore = 0
        tuning.tcpEstablishedTimeout = 0
        tuning.tcpCloseWaitTimeout = 0
        #expect(tuning.settings(cores: 2, initialNetworkNamespace: true).isEmpty)
        tuning.tcpBeLiberal = true
        tuning.udpTimeout = 60
        tuning.udpStreamTimeout = 180
        #expect(
            tuning.settings(cores: 2, initialNetworkNamespace: true) == [
                Setting(path: Self.netfilter + "nf_conntrack_udp_timeout", value: 60),
                Setting(path: Self.netfilter + "nf_conntrack_udp_timeout_stream", value: 180),
                Setting(path: Self.netfilter + "nf_conntrack_tcp_be_liberal", value: 1),
            ])
    }

    /// Under a stand-in root: values that differ are written, a larger hash table stays, and a
    /// setting the kernel does not have is reported while the others are still set.
    @Test func applyWritesWhatDiffersAndReportsWhatItCannot() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("sysctl-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        func file(_ path: String) -> URL { root.appendingPathComponent(path) }
        let current = [
            Self.netfilter + "nf_conntrack_max": "262144\n", "sys/module/nf_conntrack/parameters/hashsize": "262144\n",
            Self.netfilter + "nf_conntrack_tcp_timeout_established": "432000\n", Self.netfilter + "nf_conntrack_tcp_timeout_close_wait": "60\n",
        ]
        for (path, value) in current {
            try FileManager.default.createDirectory(at: file(path).deletingLastPathComponent(), withIntermediateDirectories: true)
            try value.write(to: file(path), atomically: false, encoding: .utf8)
        }
        var tuning = ConntrackTuning()
        tuning.udpTimeout = 60
        let settings = tuning.settings(cores: 2, initialNetworkNamespace: true)
        let failed = ConntrackTuning.apply(settings, root: root, logger: Logger(label: "test"))

        #expect(failed.map(\.path) == [Self.netfilter + "nf_conntrack_udp_timeout"])
        func value(_ path: String) throws -> String { try String(contentsOf: file(path), encoding: .utf8) }
        #expect(try value(Self.netfilter + "nf_conntrack_max") == "131072\n")
        #expect(try value("sys/module/nf_conntrack/parameters/hashsize") == "262144\n")
        #expect(try value(Self.netfilter + "nf_conntrack_tcp_timeout_established") == "86400\n")
        #expect(try value(Self.netfilter + "nf_conntrack_tcp_timeout_close_wait") == "3600\n")
    }
}
