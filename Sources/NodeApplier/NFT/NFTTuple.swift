import Glibc
import ProxyModel

/// A set element's key or a map element's value: a concatenation of typed values
/// (`daddr . l4proto . dport`), or a verdict. A full program holds hundreds of thousands, so
/// concatenations are packed inline, in the bytes nft registers hold them: building, hashing,
/// copying and freeing an element allocate nothing and touch no other memory, and the netlink
/// encoding is a copy.
public struct NFTTuple: Hashable, Sendable, ExpressibleByArrayLiteral, CustomStringConvertible {
    private enum Storage: Hashable, Sendable {
        case packed(PackedValues<Bytes32>)
        case verdict(NFTVerdict)
        /// What does not pack (a verdict within a concatenation, out-of-range numbers, over 32 bytes).
        case boxed([NFTValue])
    }

    /// One representation per sequence of values, so that equal values are equal tuples.
    private var storage: Storage

    /// The empty tuple: a plain set element's value.
    public init() { storage = .packed(PackedValues()) }

    public init(_ values: [NFTValue]) {
        if values.count == 1, case .verdict(let verdict) = values[0] {
            storage = .verdict(verdict)
        } else if let packed = PackedValues<Bytes32>(values) {
            storage = .packed(packed)
        } else {
            storage = .boxed(values)
        }
    }

    public init(arrayLiteral values: NFTValue...) { self.init(values) }

    public static func verdict(_ verdict: NFTVerdict) -> NFTTuple { NFTTuple([.verdict(verdict)]) }

    public var values: [NFTValue] {
        switch storage {
        case .packed(let packed): packed.values
        case .verdict(let verdict): [.verdict(verdict)]
        case .boxed(let values): values
        }
    }

    public var isEmpty: Bool { self == NFTTuple() }

    /// The verdict, when the tuple is one.
    public var verdict: NFTVerdict? {
        if case .verdict(let verdict) = storage { verdict } else { nil }
    }

    public var description: String { NFTRenderer.text(of: self) }

    /// The tuple with `value` appended; allocates only when the result does not pack.
    public func appending(_ value: NFTValue) -> NFTTuple {
        if case .packed(var packed) = storage, packed.append(value) { return NFTTuple(storage: .packed(packed)) }
        return NFTTuple(values + [value])
    }

    private init(storage: Storage) { self.storage = storage }

    /// The tuple in `Storage`'s inline bytes, when it packs there.
    func packed<Storage: KeyBytes>(as _: Storage.Type) -> PackedValues<Storage>? {
        guard case .packed(let packed) = storage else { return nil }
        return PackedValues<Storage>(packed)
    }

    /// The bytes nft registers hold for this concatenation (what a netlink element carries); nil
    /// for verdicts and CIDRs (interval elements are ranges, not register values).
    func withRegisters<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result? {
        guard case .packed(let packed) = storage, packed.isRegisterValue else { return nil }
        return packed.withBytes(body)
    }
}

/// Inline bytes of packed values. The planner's keys use the narrowest width that holds a
/// family's keys: every slot of its largest dictionaries holds one (at 50k services, 16 instead
/// of 32 bytes saved ~10 MB).
protocol KeyBytes: Hashable, Sendable { init() }

struct Bytes16: KeyBytes {
    var low: UInt64 = 0
    var high: UInt64 = 0
}

struct Bytes32: KeyBytes {
    var low = Bytes16()
    var high = Bytes16()
}

/// Up to 8 values in `Storage`, in register layout: each fills whole 4-byte registers; addresses
/// and ports in network byte order, a protocol as its number in the first byte, slot numbers
/// (numgen's output) in host byte order. A CIDR is its network followed by one register holding
/// the prefix length. Each value has a 4-bit type tag, so the encoding is injective.
struct PackedValues<Storage: KeyBytes>: Hashable, Sendable {
    private var bytes = Storage()
    private var tags: UInt32 = 0
    private var used: UInt8 = 0

    private enum Tag: UInt32 {
        case v4 = 1, v6, cidr4, cidr6, proto, port, integer
    }

    init() {}

    init?(_ values: [NFTValue]) {
        for value in values {
            guard append(value) else { return nil }
        }
    }

    /// Narrows or widens packed values of another width; nil when they do not fit.
    init?<Other>(_ other: PackedValues<Other>) {
        guard Int(other.used) <= MemoryLayout<Storage>.size else { return nil }
        other.withBytes { source in withUnsafeMutableBytes(of: &bytes) { $0.copyMemory(from: source) } }
        tags = other.tags
        used = other.used
    }

    private var count: Int { (32 - tags.leadingZeroBitCount + 3) / 4 }

    /// Appends `value`; false (and unchanged) when it does not pack.
    mutating func append(_ value: NFTValue) -> Bool {
        guard count < 8 else { return false }
        let tag: Tag
        switch value {
        case .address(.v4): tag = .v4
        case .address(.v6): tag = .v6
        case .cidr(let cidr): tag = cidr.family == .ipv4 ? .cidr4 : .cidr6
        case .proto: tag = .proto
        case .port(let port):
            guard UInt16(exactly: port) != nil else { return false }
            tag = .port
        case .integer(let integer):
            guard UInt32(exactly: integer) != nil else { return false }
            tag = .integer
        case .verdict:
            return false
        }
        let offset = Int(used)
        let width = Self.width(of: value)
        guard offset + width <= MemoryLayout<Storage>.size else { return false }
        withUnsafeMutableBytes(of: &bytes) { raw in
            func store<T: FixedWidthInteger>(_ integer: T, at position: Int) {
                withUnsafeBytes(of: integer) { UnsafeMutableRawBufferPointer(rebasing: raw[position...]).copyMemory(from: $0) }
            }
            switch value {
            case .address(.v4(let address)): store(address.bigEndian, at: offset)
            case .address(.v6(let address)): store(address.bigEndian, at: offset)
            case .cidr(let cidr):
                switch cidr.network {
                case .v4(let address): store(address.bigEndian, at: offset)
                case .v6(let address): store(address.bigEndian, at: offset)
                }
                raw[offset + width - 4] = UInt8(cidr.prefixLength)
            case .proto(let proto): raw[offset] = Self.protocolNumber(proto)
            case .port(let port): store(UInt16(port).bigEndian, at: offset)
            case .integer(let integer): store(UInt32(integer), at: offset)
            case .verdict: break
            }
        }
        tags |= tag.rawValue << (4 * UInt32(count))
        used += UInt8(width)
        return true
    }

    var isRegisterValue: Bool {
        (0..<count).allSatisfy { index in
            let tag = Tag(rawValue: tags >> (4 * UInt32(index)) & 0xf)
            return tag != .cidr4 && tag != .cidr6
        }
    }

    func withBytes<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        withUnsafeBytes(of: bytes) { body(UnsafeRawBufferPointer(rebasing: $0.prefix(Int(used)))) }
    }

    var values: [NFTValue] {
        withBytes { raw in
            func v4(_ offset: Int) -> IPAddress { .v4(UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self))) }
            func v6(_ offset: Int) -> IPAddress { .v6(UInt128(bigEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt128.self))) }
            func cidr(_ network: IPAddress, lengthAt offset: Int) -> NFTValue {
                .cidr(CIDR(network: network, prefixLength: Int(raw[offset]))!)
            }
            var values: [NFTValue] = []
            var offset = 0
            for index in 0..<count {
                let value: NFTValue
                switch Tag(rawValue: tags >> (4 * UInt32(index)) & 0xf)! {
                case .v4: value = .address(v4(offset))
                case .v6: value = .address(v6(offset))
                case .cidr4: value = cidr(v4(offset), lengthAt: offset + 4)
                case .cidr6: value = cidr(v6(offset), lengthAt: offset + 16)
                case .proto: value = .proto(L4Protocol.allCases.first { Self.protocolNumber($0) == raw[offset] }!)
                case .port: value = .port(Int(UInt16(bigEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt16.self))))
                case .integer: value = .integer(Int(raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
                }
                values.append(value)
                offset += Self.width(of: value)
            }
            return values
        }
    }

    /// Bytes a packable value takes: whole registers.
    private static func width(of value: NFTValue) -> Int {
        switch value {
        case .address(.v6): 16
        case .cidr(let cidr): cidr.family == .ipv4 ? 8 : 20
        case .address(.v4), .proto, .port, .integer: 4
        case .verdict: 0  // never packed
        }
    }

    private static func protocolNumber(_ proto: L4Protocol) -> UInt8 {
        switch proto {
        case .tcp: UInt8(IPPROTO_TCP)
        case .udp: UInt8(IPPROTO_UDP)
        case .sctp: UInt8(IPPROTO_SCTP)
        }
    }
}
