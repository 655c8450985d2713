import ProxyModel

/// Protobuf fields put together by hand, for messages made of parts already encoded: a part is
/// copied in, not decoded and encoded again.
public enum WireFields {
    /// The key and length of a length-delimited field (wire type 2) of number `field` (1–15).
    public static func appendHeader(field: UInt8, length: Int, to bytes: inout [UInt8]) {
        bytes.append(field << 3 | 2)
        appendVarint(UInt64(length), to: &bytes)
    }

    /// The size of a length-delimited field holding `length` bytes.
    public static func fieldSize(length: Int) -> Int { 1 + varintSize(UInt64(length)) + length }

    /// Appends `metadata { revision }` to the bytes of a Service, EndpointSlice or Node message.
    /// Parsers merge a message field that occurs twice, so the result is the object with that
    /// revision. All three have `metadata` as field 1, and ObjectMeta has `revision` as field 4.
    public static func appendRevision(_ revision: Revision, to bytes: inout [UInt8]) {
        appendHeader(field: 1, length: 1 + varintSize(revision.rawValue), to: &bytes)
        bytes.append(4 << 3)
        appendVarint(revision.rawValue, to: &bytes)
    }

    private static func appendVarint(_ value: UInt64, to bytes: inout [UInt8]) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    private static func varintSize(_ value: UInt64) -> Int { max(1, (64 - value.leadingZeroBitCount + 6) / 7) }
}
