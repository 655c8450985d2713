import Testing

@testable import ProxyModel

@Suite struct IPAddressTests {
    @Test(arguments: [
        ("10.96.0.1", "10.96.0.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("255.255.255.255", "255.255.255.255"),
        ("::", "::"),
        ("::1", "::1"),
        ("fd00:10:96::a", "fd00:10:96::a"),
        ("FD00:0010:0096:0:0:0:0:000A", "fd00:10:96::a"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
    ])
    func parsesAndPrintsCanonically(input: String, canonical: String) throws {
        let address = try #require(IPAddress(input))
        #expect(address.description == canonical)
        #expect(IPAddress(canonical) == address)
    }

    @Test(arguments: [
        "", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.-4", " 1.2.3.4", "1.2.3.4/32", "a.b.c.d",
        "1.2.3.4.", ".1.2.3", "1..2.3", "1.2.3.1000", "1.2.3.0255", "00.1.2.3", "1.2.3.4 ", "+1.2.3.4", "1.2.3.٤", "1.2.3.²",
        "4294967295", "1.2.3.999999999999",
        ":::", "1::2::3", "1:2:3:4:5:6:7:8:9", "12345::", "::ffff:1.2.3.4", "fe80::1%eth0", "g::1", "1:2:3:4:5:6:7::8",
    ])
    func rejectsMalformed(input: String) {
        #expect(IPAddress(input) == nil)
    }

    /// Every IPv4 spelling that parses is the canonical one (validation relies on it).
    @Test func everyIPv4ThatParsesIsCanonical() {
        let octets = ["0", "1", "9", "10", "99", "100", "199", "200", "249", "250", "255"]
        for a in octets {
            for b in ["0", "255", "10"] {
                let text = "\(a).\(b).\(a).\(b)"
                #expect(IPAddress(text)?.description == text, "\(text)")
            }
        }
        for text in ["1.2.3.04", "1.2.3.256", "1.2.3.010", "1.02.3.4"] {
            #expect(IPAddress(text) == nil, "\(text)")
        }
    }

    @Test func classifiesSpecialRanges() throws {
        #expect(IPAddress("127.0.0.5")!.isLoopback)
        #expect(IPAddress("::1")!.isLoopback)
        #expect(IPAddress("169.254.1.1")!.isLinkLocal)
        #expect(IPAddress("fe80::1")!.isLinkLocal)
        #expect(IPAddress("224.0.0.1")!.isMulticast)
        #expect(IPAddress("ff02::1")!.isMulticast)
        #expect(IPAddress("0.0.0.0")!.isUnspecified)
        #expect(IPAddress("::")!.isUnspecified)
        let ordinary = [IPAddress("10.0.0.1")!, IPAddress("fd00::1")!]
        for address in ordinary {
            #expect(!address.isLoopback && !address.isLinkLocal && !address.isMulticast && !address.isUnspecified)
        }
    }
}

@Suite struct CIDRTests {
    @Test func containsAddressesOfItsPrefixOnly() throws {
        let v4 = try #require(CIDR("10.96.0.0/12"))
        #expect(v4.contains(IPAddress("10.96.0.1")!))
        #expect(v4.contains(IPAddress("10.111.255.255")!))
        #expect(!v4.contains(IPAddress("10.112.0.0")!))
        #expect(!v4.contains(IPAddress("fd00::1")!))
        #expect(v4.size == 1 << 20)
        let v6 = try #require(CIDR("fd00:10:96::/112"))
        #expect(v6.contains(IPAddress("fd00:10:96::ffff")!))
        #expect(!v6.contains(IPAddress("fd00:10:97::1")!))
        #expect(v6.address(at: 10) == IPAddress("fd00:10:96::a"))
        #expect(CIDR("0.0.0.0/0")!.contains(IPAddress("8.8.8.8")!))
        #expect(CIDR("::/0")!.size == .max)
    }

    @Test(arguments: ["10.96.0.1/12", "10.0.0.0/33", "10.0.0.0", "10.0.0.0/", "10.0.0.0/08", "fd00::1/64", "x/8"])
    func rejectsMalformedOrHostBits(input: String) {
        #expect(CIDR(input) == nil)
    }
}

@Suite struct HostPortTests {
    @Test func parsesIPv4IPv6AndNames() {
        #expect(HostPort("127.0.0.1:7700") == HostPort(host: "127.0.0.1", port: 7700))
        #expect(HostPort("[::1]:7700") == HostPort(host: "::1", port: 7700))
        #expect(HostPort("localhost:0")?.resolvedIP == IPAddress("127.0.0.1"))
        #expect(HostPort("[::1]:7700")?.description == "[::1]:7700")
        for bad in ["::1:7700", "127.0.0.1", "127.0.0.1:70000", "[::1]7700", ":80", "[10.0.0.1]:80"] {
            #expect(HostPort(bad) == nil, "\(bad)")
        }
    }
}
