/// An IPv4 or IPv6 address held as integers, parsed strictly and printed canonically
/// (dotted quad without leading zeros; RFC 5952 for IPv6).
///
/// Stored objects only ever hold canonical text, so two spellings of one address can
/// never collide in a UNIQUE constraint or produce two nft map keys.
public enum IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    case v4(UInt32)
    case v6(UInt128)

    public var family: IPFamily {
        switch self {
        case .v4: .ipv4
        case .v6: .ipv6
        }
    }

    /// Parses an address in any standard spelling; `nil` when malformed.
    /// IPv4-mapped IPv6 (`::ffff:1.2.3.4`) and zone suffixes (`%eth0`) are rejected.
    public init?(_ text: String) {
        if text.contains(":") {
            guard let value = Self.parseV6(Substring(text)) else { return nil }
            self = .v6(value)
        } else {
            guard let value = Self.parseV4(Substring(text)) else { return nil }
            self = .v4(value)
        }
    }

    public var description: String {
        switch self {
        case .v4(let value):
            return "\(value >> 24).\((value >> 16) & 0xff).\((value >> 8) & 0xff).\(value & 0xff)"
        case .v6(let value):
            return Self.formatV6(value)
        }
    }

    public static func < (lhs: IPAddress, rhs: IPAddress) -> Bool {
        switch (lhs, rhs) {
        case (.v4(let a), .v4(let b)): a < b
        case (.v6(let a), .v6(let b)): a < b
        case (.v4, .v6): true
        case (.v6, .v4): false
        }
    }

    /// Address width in bits (32 or 128).
    public var bitWidth: Int { family == .ipv4 ? 32 : 128 }

    /// The address as an unsigned integer, widened to 128 bits.
    public var integerValue: UInt128 {
        switch self {
        case .v4(let value): UInt128(value)
        case .v6(let value): value
        }
    }

    /// Builds an address of `family` from an integer (truncated to the family's width).
    public init(family: IPFamily, integerValue: UInt128) {
        switch family {
        case .ipv4: self = .v4(UInt32(truncatingIfNeeded: integerValue))
        case .ipv6: self = .v6(integerValue)
        }
    }

    public var isLoopback: Bool {
        switch self {
        case .v4(let value): value >> 24 == 127
        case .v6(let value): value == 1
        }
    }

    public var isUnspecified: Bool { integerValue == 0 }

    public var isLinkLocal: Bool {
        switch self {
        case .v4(let value): value >> 16 == 0xA9FE  // 169.254.0.0/16
        case .v6(let value): value >> 118 == 0x3FA  // fe80::/10
        }
    }

    public var isMulticast: Bool {
        switch self {
        case .v4(let value): value >> 28 == 0xE  // 224.0.0.0/4
        case .v6(let value): value >> 120 == 0xFF  // ff00::/8
        }
    }

    // MARK: parsing

    /// Four decimal octets of at most 255 without leading zeros (ambiguous: octal in some
    /// parsers), read in one pass over the bytes: the canonical spelling is the only one accepted.
    private static func parseV4(_ text: Substring) -> UInt32? {
        var value: UInt32 = 0
        var octet: UInt32 = 0
        var digits = 0
        var dots = 0
        for byte in text.utf8 {
            if byte == UInt8(ascii: ".") {
                guard digits > 0, dots < 3 else { return nil }
                value = value << 8 | octet
                (octet, digits, dots) = (0, 0, dots + 1)
            } else if (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) {
                guard digits == 0 || octet != 0 else { return nil }
                octet = octet * 10 + UInt32(byte - UInt8(ascii: "0"))
                digits += 1
                guard octet <= 255 else { return nil }
            } else {
                return nil
            }
        }
        guard dots == 3, digits > 0 else { return nil }
        return value << 8 | octet
    }

    private static func parseV6(_ text: Substring) -> UInt128? {
        guard text.allSatisfy({ $0.isASCII && ($0.isHexDigit || $0 == ":") }) else { return nil }
        let halves = text.split(separator: "::", omittingEmptySubsequences: false).map(String.init)
        guard halves.count <= 2 else { return nil }
        func groups(_ part: String) -> [UInt16]? {
            if part.isEmpty { return [] }
            var result: [UInt16] = []
            for group in part.split(separator: ":", omittingEmptySubsequences: false) {
                guard (1...4).contains(group.count), let number = UInt16(group, radix: 16) else { return nil }
                result.append(number)
            }
            return result
        }
        guard let head = groups(halves[0]) else { return nil }
        var all: [UInt16]
        if halves.count == 2 {
            guard let tail = groups(halves[1]), head.count + tail.count <= 7 else { return nil }
            all = head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        } else {
            guard head.count == 8 else { return nil }
            all = head
        }
        return all.reduce(UInt128(0)) { $0 << 16 | UInt128($1) }
    }

    private static func formatV6(_ value: UInt128) -> String {
        let groups = (0..<8).map { UInt16(truncatingIfNeeded: value >> (112 - 16 * $0)) }
        // RFC 5952: compress the longest run (first on ties) of two or more zero groups.
        var bestStart = -1
        var bestLength = 1
        var index = 0
        while index < 8 {
            if groups[index] == 0 {
                var end = index
                while end < 8, groups[end] == 0 { end += 1 }
                if end - index > bestLength {
                    bestStart = index
                    bestLength = end - index
                }
                index = end
            } else {
                index += 1
            }
        }
        func hex(_ slice: ArraySlice<UInt16>) -> String {
            slice.map { String($0, radix: 16) }.joined(separator: ":")
        }
        if bestStart < 0 { return hex(groups[...]) }
        return hex(groups[..<bestStart]) + "::" + hex(groups[(bestStart + bestLength)...])
    }
}

public enum IPFamily: String, Hashable, Sendable, Codable, CaseIterable {
    case ipv4 = "IPv4"
    case ipv6 = "IPv6"
}

extension IPAddress: Codable {
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let address = IPAddress(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "invalid IP \(text)"))
        }
        self = address
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
