/// An IP prefix such as `10.96.0.0/12` or `fd00:10:96::/112`, always with its host bits zero.
public struct CIDR: Hashable, Sendable, CustomStringConvertible, Codable {
    public let network: IPAddress
    public let prefixLength: Int

    /// Parses `ADDRESS/LENGTH`; `nil` when malformed or when host bits are set
    /// (`10.0.0.1/8` is ambiguous: the writer meant either the host or the network).
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPAddress(String(parts[0])),
            parts[1].allSatisfy({ $0.isASCII && $0.isNumber }), !parts[1].isEmpty,
            parts[1] == "0" || parts[1].first != "0",
            let length = Int(parts[1])
        else { return nil }
        self.init(network: address, prefixLength: length)
    }

    /// `nil` when the length exceeds the address's width or host bits are set.
    public init?(network: IPAddress, prefixLength: Int) {
        guard (0...network.bitWidth).contains(prefixLength),
            network.integerValue & ~Self.mask(prefixLength, width: network.bitWidth) == 0
        else { return nil }
        self.network = network
        self.prefixLength = prefixLength
    }

    public var family: IPFamily { network.family }

    public var description: String { "\(network)/\(prefixLength)" }

    public func contains(_ address: IPAddress) -> Bool {
        guard address.family == family else { return false }
        return address.integerValue & Self.mask(prefixLength, width: network.bitWidth) == network.integerValue
    }

    /// Number of addresses in the prefix, saturating at `UInt128.max`.
    public var size: UInt128 {
        let hostBits = network.bitWidth - prefixLength
        return hostBits >= 128 ? .max : UInt128(1) << hostBits
    }

    /// The address at `offset` from the network address.
    public func address(at offset: UInt128) -> IPAddress {
        IPAddress(family: family, integerValue: network.integerValue + offset)
    }

    private static func mask(_ length: Int, width: Int) -> UInt128 {
        guard length > 0 else { return 0 }
        let ones: UInt128 = width == 128 ? .max : (UInt128(1) << width) - 1
        return ones & ~((UInt128(1) << (width - length)) - 1) & ones
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let cidr = CIDR(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "invalid CIDR \(text)"))
        }
        self = cidr
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
