import GRPCCore

/// Writes already-serialized `ServerMessage` bytes: the protobuf encoding happened once,
/// before fan-out; per stream only the bytes are copied into the transport's buffer.
struct EncodedMessageSerializer: MessageSerializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: EncodedMessage) throws -> Bytes {
        Bytes(message.bytes)
    }
}
