import CNFTables
import Glibc
import ProxyModel

/// The kernel's connection tracking table through ctnetlink: dumps of one family's UDP flows, or
/// of those to one frontend (the kernel filters: it walks every flow, but writes out only the
/// matching ones), and deletions by original tuple and id, many per `sendmsg`.
///
/// The kernel's IPv6 address filter is inverted (`ctnetlink_filter_match_tuple` skips flows whose
/// address *equals* the filter's: `!ipv6_addr_cmp`, on this machine's 6.18 kernel too), so for
/// IPv6 the kernel filters on the protocol and port only. Every flow is checked against the
/// frontend here as well.
public struct NetlinkConntrack: ConntrackClient {
    /// Deletions per `sendmsg`: their acknowledgements must fit in the socket's receive queue.
    static let deletionsPerSend = 64
    /// Room for one deletion: headers, the original tuple with IPv6 addresses, the zone.
    static let deletionBytes = 128
    /// `CTA_FILTER_ORIG_FLAGS` bits: which fields of the original tuple a dump matches. Defined
    /// in the kernel's `nf_internals.h`, not in its uapi headers.
    static let filterOnDestinationAddress: UInt32 = 1 << 1
    static let filterOnProtocolNumber: UInt32 = 1 << 3
    static let filterOnDestinationPort: UInt32 = 1 << 5

    public init() {}

    public func udpFlows(_ family: IPFamily, to destination: StaleFlows.Frontend?, where include: (ConntrackFlow) -> Bool) throws
        -> [ConntrackFlow]
    {
        var flows: [ConntrackFlow] = []
        let filterOnAddress = destination?.address.family == .ipv4
        let filter = { (header: UnsafeMutablePointer<nlmsghdr>) in
            let tuple = mnl_attr_nest_start(header, Self.code(CTA_TUPLE_ORIG))
            if let destination, filterOnAddress {
                let addresses = mnl_attr_nest_start(header, Self.code(CTA_TUPLE_IP))
                Self.put(destination.address, v4: CTA_IP_V4_DST, v6: CTA_IP_V6_DST, in: header)
                mnl_attr_nest_end(header, addresses)
            }
            let proto = mnl_attr_nest_start(header, Self.code(CTA_TUPLE_PROTO))
            mnl_attr_put_u8(header, Self.code(CTA_PROTO_NUM), ConntrackTuple.udp)
            if let destination { mnl_attr_put_u16(header, Self.code(CTA_PROTO_DST_PORT), destination.port.bigEndian) }
            mnl_attr_nest_end(header, proto)
            mnl_attr_nest_end(header, tuple)
            let fields =
                Self.filterOnProtocolNumber | (destination == nil ? 0 : Self.filterOnDestinationPort)
                | (filterOnAddress ? Self.filterOnDestinationAddress : 0)
            let filter = mnl_attr_nest_start(header, Self.code(CTA_FILTER))
            mnl_attr_put_u32(header, Self.code(CTA_FILTER_ORIG_FLAGS), fields)
            mnl_attr_nest_end(header, filter)
        }
        try NetlinkSocket().dump(Self.message(IPCTNL_MSG_CT_GET), family: family.conntrackFamily, filter: filter) { header in
            guard let flow = Self.flow(header), flow.original.protocolNumber == ConntrackTuple.udp else { return }
            if let destination,
                destination != StaleFlows.Frontend(address: flow.original.destination, port: Int(flow.original.destinationPort))
            {
                return
            }
            if include(flow) { flows.append(flow) }
        }
        return flows
    }

    public func delete(_ flows: [ConntrackFlow]) throws -> Int {
        guard !flows.isEmpty else { return 0 }
        let socket = try NetlinkSocket()
        var sequence = UInt32(truncatingIfNeeded: time(nil))
        var deleted = 0
        for start in stride(from: 0, to: flows.count, by: Self.deletionsPerSend) {
            let part = flows[start..<min(flows.count, start + Self.deletionsPerSend)]
            var buffer = [UInt8](repeating: 0, count: part.count * Self.deletionBytes)
            var flowOf: [UInt32: ConntrackFlow] = [:]
            let used = buffer.withUnsafeMutableBytes { bytes in
                var used = 0
                for flow in part {
                    sequence &+= 1
                    flowOf[sequence] = flow
                    let header = NetlinkSocket.putHeader(
                        bytes.baseAddress! + used, type: Self.message(IPCTNL_MSG_CT_DELETE), flags: NLM_F_ACK,
                        family: flow.original.source.family.conntrackFamily, sequence: sequence)
                    Self.put(flow.original, as: CTA_TUPLE_ORIG, in: header)
                    if flow.zone != 0 { mnl_attr_put_u16(header, Self.code(CTA_ZONE), flow.zone.bigEndian) }
                    mnl_attr_put_u32(header, Self.code(CTA_ID), flow.id.bigEndian)
                    used += Int(header.pointee.nlmsg_len)
                }
                return used
            }
            try buffer.withUnsafeMutableBytes { try socket.send([iovec(iov_base: $0.baseAddress, iov_len: used)]) }
            // A flow that expired since the dump is answered "No such file or directory".
            let gone = try socket.awaitAcknowledgement(of: sequence, tolerating: ENOENT) { flowOf[$0].map { "deleting flow \($0)" } }
            deleted += part.count - gone
        }
        return deleted
    }

    static func message(_ type: cntl_msg_types) -> UInt16 { UInt16(NFNL_SUBSYS_CTNETLINK << 8) | UInt16(type.rawValue) }

    private static func code<Attribute: RawRepresentable<UInt32>>(_ attribute: Attribute) -> UInt16 { UInt16(attribute.rawValue) }

    private static func put(_ tuple: ConntrackTuple, as type: ctattr_type, in header: UnsafeMutablePointer<nlmsghdr>) {
        let nest = mnl_attr_nest_start(header, code(type))
        let addresses = mnl_attr_nest_start(header, code(CTA_TUPLE_IP))
        put(tuple.source, v4: CTA_IP_V4_SRC, v6: CTA_IP_V6_SRC, in: header)
        put(tuple.destination, v4: CTA_IP_V4_DST, v6: CTA_IP_V6_DST, in: header)
        mnl_attr_nest_end(header, addresses)
        let proto = mnl_attr_nest_start(header, code(CTA_TUPLE_PROTO))
        mnl_attr_put_u8(header, code(CTA_PROTO_NUM), tuple.protocolNumber)
        mnl_attr_put_u16(header, code(CTA_PROTO_SRC_PORT), tuple.sourcePort.bigEndian)
        mnl_attr_put_u16(header, code(CTA_PROTO_DST_PORT), tuple.destinationPort.bigEndian)
        mnl_attr_nest_end(header, proto)
        mnl_attr_nest_end(header, nest)
    }

    /// `address` as the attribute of its family.
    private static func put(_ address: IPAddress, v4: ctattr_ip, v6: ctattr_ip, in header: UnsafeMutablePointer<nlmsghdr>) {
        switch address {
        case .v4(let value): withUnsafeBytes(of: value.bigEndian) { mnl_attr_put(header, code(v4), 4, $0.baseAddress) }
        case .v6(let value): withUnsafeBytes(of: value.bigEndian) { mnl_attr_put(header, code(v6), 16, $0.baseAddress) }
        }
    }

    /// The flow one dump message describes.
    static func flow(_ header: UnsafePointer<nlmsghdr>) -> ConntrackFlow? {
        let message = UnsafeRawBufferPointer(start: header, count: Int(header.pointee.nlmsg_len))
        let attributes = MemoryLayout<nlmsghdr>.size + MemoryLayout<nfgenmsg>.size
        guard message.count >= attributes else { return nil }
        var original: ConntrackTuple?
        var reply: ConntrackTuple?
        var zone: UInt16 = 0
        var id: UInt32?
        forEachAttribute(UnsafeRawBufferPointer(rebasing: message[attributes...])) { type, payload in
            switch type {
            case Int(CTA_TUPLE_ORIG.rawValue): original = tuple(payload)
            case Int(CTA_TUPLE_REPLY.rawValue): reply = tuple(payload)
            case Int(CTA_ZONE.rawValue) where payload.count >= 2: zone = UInt16(bigEndian: payload.loadUnaligned(as: UInt16.self))
            case Int(CTA_ID.rawValue) where payload.count >= 4: id = UInt32(bigEndian: payload.loadUnaligned(as: UInt32.self))
            default: break
            }
        }
        guard let original, let reply, let id else { return nil }
        return ConntrackFlow(original: original, reply: reply, zone: zone, id: id)
    }

    private static func tuple(_ nest: UnsafeRawBufferPointer) -> ConntrackTuple? {
        var source: IPAddress?
        var destination: IPAddress?
        var protocolNumber: UInt8?
        var ports: (source: UInt16, destination: UInt16) = (0, 0)
        forEachAttribute(nest) { type, payload in
            switch type {
            case Int(CTA_TUPLE_IP.rawValue):
                forEachAttribute(payload) { type, value in
                    let address: IPAddress? =
                        switch value.count {
                        case 4: .v4(UInt32(bigEndian: value.loadUnaligned(as: UInt32.self)))
                        case 16: .v6(UInt128(bigEndian: value.loadUnaligned(as: UInt128.self)))
                        default: nil
                        }
                    switch type {
                    case Int(CTA_IP_V4_SRC.rawValue), Int(CTA_IP_V6_SRC.rawValue): source = address
                    case Int(CTA_IP_V4_DST.rawValue), Int(CTA_IP_V6_DST.rawValue): destination = address
                    default: break
                    }
                }
            case Int(CTA_TUPLE_PROTO.rawValue):
                forEachAttribute(payload) { type, value in
                    switch type {
                    case Int(CTA_PROTO_NUM.rawValue) where value.count >= 1: protocolNumber = value[0]
                    case Int(CTA_PROTO_SRC_PORT.rawValue) where value.count >= 2:
                        ports.source = UInt16(bigEndian: value.loadUnaligned(as: UInt16.self))
                    case Int(CTA_PROTO_DST_PORT.rawValue) where value.count >= 2:
                        ports.destination = UInt16(bigEndian: value.loadUnaligned(as: UInt16.self))
                    default: break
                    }
                }
            default: break
            }
        }
        guard let source, let destination, let protocolNumber else { return nil }
        return ConntrackTuple(
            source: source, destination: destination, protocolNumber: protocolNumber, sourcePort: ports.source,
            destinationPort: ports.destination)
    }

    /// Calls `body` with the type (its nested and byte-order flags, the top two bits, masked off)
    /// and the payload of each netlink attribute in `attributes`.
    private static func forEachAttribute(_ attributes: UnsafeRawBufferPointer, _ body: (Int, UnsafeRawBufferPointer) -> Void) {
        var offset = 0
        while offset + MemoryLayout<nlattr>.size <= attributes.count {
            let length = Int(attributes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
            let type = Int(attributes.loadUnaligned(fromByteOffset: offset + 2, as: UInt16.self)) & 0x3FFF
            guard length >= MemoryLayout<nlattr>.size, offset + length <= attributes.count else { return }
            body(type, UnsafeRawBufferPointer(rebasing: attributes[(offset + MemoryLayout<nlattr>.size)..<(offset + length)]))
            offset += (length + 3) & ~3
        }
    }
}

extension IPFamily {
    /// The nfgenmsg family of conntrack messages about this family's flows.
    var conntrackFamily: UInt8 { UInt8(self == .ipv4 ? AF_INET : AF_INET6) }
}
