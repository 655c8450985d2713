@testable import NodeApplier
import ProxyModel
import Testing

/// Element tuples: one representation per sequence of values, the values read back as written,
/// and register bytes as nft's registers hold them (what the kernel receives over netlink).
@Suite struct NFTTupleTests {
    let samples: [[NFTValue]] = [
        [],
        [.address(ip("10.96.0.10")), .proto(.tcp), .port(8080), .integer(12)],
        [.address(ip("2001:db8::a")), .proto(.sctp), .port(65535), .integer(4_294_967_295)],
        [.address(ip("fd00::1")), .address(ip("fd00::2"))],
        [.cidr(cidr("10.0.0.0/8"))],
        [.cidr(cidr("fd00:10::/64"))],
        [.cidr(cidr("::/0")), .port(0)],
        [.verdict(.goto("pick-udp-3"))],
        [.verdict(.drop)],
        // What does not pack: out-of-range numbers, a verdict in a concatenation, over 32 bytes.
        [.port(70000)],
        [.integer(-1)],
        [.address(ip("10.0.0.1")), .verdict(.accept)],
        [.address(ip("fd00::1")), .address(ip("fd00::2")), .port(1)],
    ]

    @Test func valuesReadBackAsWritten() {
        for values in samples {
            #expect(NFTTuple(values).values == values)
        }
    }

    @Test func appendingGivesTheSameTupleAsTheWholeArray() {
        for values in samples {
            let appended = values.reduce(NFTTuple()) { $0.appending($1) }
            #expect(appended == NFTTuple(values), "\(values)")
            #expect(appended.hashValue == NFTTuple(values).hashValue, "\(values)")
        }
        #expect(Set(samples.map(NFTTuple.init)).count == samples.count)
    }

    @Test func emptinessAndVerdicts() {
        #expect(NFTTuple().isEmpty)
        #expect(!NFTTuple([.port(0)]).isEmpty)
        #expect(NFTTuple([.verdict(.goto("pick-tcp-2"))]).verdict == .goto("pick-tcp-2"))
        #expect(NFTTuple([.verdict(.drop), .verdict(.drop)]).verdict == nil)
        #expect(NFTTuple([.port(80)]).verdict == nil)
    }

    @Test func registersHoldWhatNftRegistersHold() {
        func registers(_ tuple: NFTTuple) -> [UInt8]? { tuple.withRegisters { Array($0) } }
        let slot = withUnsafeBytes(of: UInt32(12)) { Array($0) }  // numgen writes host byte order
        #expect(
            registers([.address(ip("10.96.0.10")), .proto(.tcp), .port(8080), .integer(12)])
                == [10, 96, 0, 10, 6, 0, 0, 0, 0x1f, 0x90, 0, 0] + slot)
        #expect(
            registers([.address(ip("2001:db8::a")), .proto(.sctp), .port(65535)])
                == [0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [0x0a, 132, 0, 0, 0, 255, 255, 0, 0])
        #expect(registers([.address(ip("255.255.255.255")), .port(0)]) == [255, 255, 255, 255, 0, 0, 0, 0])
        #expect(
            registers([.address(ip("0.0.0.1")), .address(ip("::1")), .proto(.udp)])
                == [0, 0, 0, 1] + Array(repeating: 0, count: 15) + [1, 17, 0, 0, 0])
        #expect(registers(NFTTuple()) == [])
        // Interval elements and verdicts are not register values; neither is what does not pack.
        #expect(registers([.cidr(cidr("10.0.0.0/8"))]) == nil)
        #expect(registers([.verdict(.accept)]) == nil)
        #expect(registers([.port(70000)]) == nil)
    }
}
