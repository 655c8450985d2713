import CNFTables
import Glibc

/// A netfilter netlink socket (libmnl): batches to the kernel and dumps from it.
final class NetlinkSocket {
    private let socket: OpaquePointer
    private var fd: Int32 { mnl_socket_get_fd(socket) }
    /// Receive buffer: dump replies come in messages of up to 32 KB (MNL_SOCKET_DUMP_SIZE).
    private var buffer = [UInt8](repeating: 0, count: 1 << 16)

    init() throws {
        guard let socket = mnl_socket_open(NETLINK_NETFILTER) else { throw NFTError("netlink: \(Self.lastError)") }
        self.socket = socket
        guard mnl_socket_bind(socket, 0, pid_t(MNL_SOCKET_AUTOPID)) == 0 else { throw NFTError("netlink: bind: \(Self.lastError)") }
        // Acknowledgements without a copy of the message they answer.
        var capped: Int32 = 1
        setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &capped, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { mnl_socket_close(socket) }

    private static var lastError: String { String(cString: strerror(errno)) }

    /// Sends `iov` in one `sendmsg`: netlink makes one message of it, nfnetlink one batch.
    func send(_ iov: [iovec]) throws {
        let length = iov.reduce(0) { $0 + $1.iov_len }
        // A netlink message must fit the socket's send buffer.
        var size = Int32(clamping: length + (64 << 10))
        setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_nl()
        address.nl_family = sa_family_t(AF_NETLINK)
        var iov = iov
        let sent = withUnsafeMutablePointer(to: &address) { address in
            iov.withUnsafeMutableBufferPointer { vectors in
                var message = msghdr()
                message.msg_name = UnsafeMutableRawPointer(address)
                message.msg_namelen = socklen_t(MemoryLayout<sockaddr_nl>.size)
                message.msg_iov = vectors.baseAddress
                message.msg_iovlen = vectors.count
                return sendmsg(fd, &message, 0)
            }
        }
        guard sent == length else { throw NFTError("netlink: sending \(length) bytes: \(sent < 0 ? Self.lastError : "\(sent) sent")") }
    }

    /// Reads the answers to a batch or to requests that each asked for one, all queued before
    /// `sendmsg` returned: success is the acknowledgement of `sequence` and no error anywhere (a
    /// failed commit is answered last) but `tolerated` (an errno), whose answers are counted.
    /// `naming` says what a message held, for the error text.
    @discardableResult
    func awaitAcknowledgement(of sequence: UInt32, tolerating tolerated: Int32? = nil, naming: (UInt32) -> String?) throws -> Int {
        var acknowledged = false
        var toleratedAnswers = 0
        while true {
            let received = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if received < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                guard acknowledged else { throw NFTError("netlink: the kernel did not answer the request") }
                return toleratedAnswers
            }
            guard received > 0 else { throw NFTError("netlink: reading the kernel's answer: \(Self.lastError)") }
            try forEachMessage(received) { header, offset in
                guard Int32(header.nlmsg_type) == NLMSG_ERROR else { return }
                let answer = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + MemoryLayout<nlmsghdr>.size, as: nlmsgerr.self) }
                if answer.error != 0 && -answer.error == tolerated {
                    toleratedAnswers += 1
                } else if answer.error != 0 {
                    let what = naming(answer.msg.nlmsg_seq).map { " (\($0))" } ?? ""
                    throw NFTError("kernel refused the request\(what): \(String(cString: strerror(-answer.error)))")
                }
                if answer.msg.nlmsg_seq == sequence { acknowledged = true }
            }
        }
    }

    /// Writes a netfilter request's headers (netlink and `nfgenmsg`) at `buffer`: `type` is the
    /// subsystem's message type (`nftables(_:)`, `NetlinkConntrack.message(_:)`), `family` the
    /// nfgenmsg family.
    static func putHeader(
        _ buffer: UnsafeMutableRawPointer, type: UInt16, flags: Int32, family: UInt8, sequence: UInt32
    ) -> UnsafeMutablePointer<nlmsghdr> {
        let header = mnl_nlmsg_put_header(buffer)!
        header.pointee.nlmsg_type = type
        header.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | flags)
        header.pointee.nlmsg_seq = sequence
        let generic = mnl_nlmsg_put_extra_header(header, MemoryLayout<nfgenmsg>.size)!.assumingMemoryBound(to: nfgenmsg.self)
        generic.pointee = nfgenmsg(nfgen_family: family, version: UInt8(NFNETLINK_V0), res_id: 0)
        return header
    }

    /// The netlink message type of an nf_tables message.
    static func nftables(_ type: nf_tables_msg_types) -> UInt16 { UInt16(NFNL_SUBSYS_NFTABLES << 8) | UInt16(type.rawValue) }

    /// Dumps every object of one message type (`NFT_MSG_GETCHAIN`, `NFT_MSG_GETSET`,
    /// `NFT_MSG_GETRULE`, conntrack's `IPCTNL_MSG_CT_GET`) in `family`: `parse` gets each reply
    /// message. No set elements are fetched. `filter` may add attributes to the request (the
    /// kernel then dumps only what matches them).
    func dump(
        _ type: UInt16, family: UInt8, filter: (UnsafeMutablePointer<nlmsghdr>) -> Void = { _ in },
        parse: (UnsafePointer<nlmsghdr>) throws -> Void
    ) throws {
        try request(type, flags: NLM_F_DUMP, family: family, filter: filter, parse: parse)
    }

    /// The ruleset's generation: the kernel counts every transaction it commits, whoever sent it
    /// (`NFT_MSG_GETGEN`).
    func generation() throws -> UInt32 {
        var found: UInt32?
        try request(Self.nftables(NFT_MSG_GETGEN), flags: NLM_F_ACK, family: UInt8(AF_UNSPEC)) { header in
            let generation = nftnl_gen_alloc()!
            defer { nftnl_gen_free(generation) }
            guard nftnl_gen_nlmsg_parse(header, generation) == 0 else { return }
            found = nftnl_gen_get_u32(generation, UInt16(NFTNL_GEN_ID))
        }
        guard let found else { throw NFTError("netlink: the kernel did not tell the ruleset's generation") }
        return found
    }

    /// Sends one request and hands each reply message to `parse`, until the end of a dump or the
    /// acknowledgement (which a request with `NLM_F_ACK` gets after its reply).
    private func request(
        _ type: UInt16, flags: Int32, family: UInt8, filter: (UnsafeMutablePointer<nlmsghdr>) -> Void = { _ in },
        parse: (UnsafePointer<nlmsghdr>) throws -> Void
    ) throws {
        var request = [UInt8](repeating: 0, count: 512)
        let sequence = UInt32(truncatingIfNeeded: time(nil))
        let length = request.withUnsafeMutableBytes { bytes in
            let header = Self.putHeader(bytes.baseAddress!, type: type, flags: flags, family: family, sequence: sequence)
            filter(header)
            return Int(header.pointee.nlmsg_len)
        }
        let sent = request.withUnsafeBytes { mnl_socket_sendto(socket, $0.baseAddress, length) }
        guard sent == length else { throw NFTError("netlink: request: \(Self.lastError)") }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        while true {
            let received = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard received > 0 else { throw NFTError("netlink: reading an answer: \(Self.lastError)") }
            var done = false
            try forEachMessage(received) { header, offset in
                guard header.nlmsg_seq == sequence else { return }
                switch Int32(header.nlmsg_type) {
                case NLMSG_DONE:
                    done = true
                case NLMSG_ERROR:
                    let answer = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + MemoryLayout<nlmsghdr>.size, as: nlmsgerr.self) }
                    if answer.error != 0 { throw NFTError("netlink: \(String(cString: strerror(-answer.error)))") }
                    done = true
                default:
                    try buffer.withUnsafeBytes { try parse(($0.baseAddress! + offset).assumingMemoryBound(to: nlmsghdr.self)) }
                }
            }
            if done { return }
        }
    }

    /// Calls `body` with each message header in the first `count` bytes of the buffer and its offset.
    private func forEachMessage(_ count: Int, _ body: (nlmsghdr, Int) throws -> Void) rethrows {
        var offset = 0
        while offset + MemoryLayout<nlmsghdr>.size <= count {
            let header = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: nlmsghdr.self) }
            guard header.nlmsg_len >= UInt32(MemoryLayout<nlmsghdr>.size) else { return }
            try body(header, offset)
            offset += (Int(header.nlmsg_len) + 3) & ~3
        }
    }
}

/// Chains, sets and rule counts of a table as the kernel holds them, read with netlink dumps.
/// libnftables (1.0.6) fetches every set element to list tables, sets or maps: 2.6 s and 130 MB
/// for 200k elements, measured with `nft list sets`; these dumps fetch no elements.
enum NetlinkListing {
    struct Chain: Hashable {
        var name: String
        /// The kernel table that holds it (one of `table`'s, `KernelTables`).
        var table: String
        /// Attached to a netfilter hook (a base chain).
        var hooked: Bool
    }

    /// A named set or map.
    struct Set: Hashable {
        var name: String
        /// The kernel table that holds it.
        var table: String
    }

    /// The kernel tables of `table` (`KernelTables`) in `family`.
    static func tables(family: NFTFamily, table: String, on socket: NetlinkSocket) throws -> [String] {
        var tables: [String] = []
        try socket.dump(NetlinkSocket.nftables(NFT_MSG_GETTABLE), family: family.netlinkFamily) { header in
            var name: String?
            forEachAttribute(of: header) { type, attribute in
                if type == NFTA_TABLE_NAME.rawValue { name = string(attribute) }
            }
            guard let name, KernelTables.isOurs(name, of: table) else { return }
            tables.append(name)
        }
        return tables.sorted()
    }

    /// The chains of `table`'s kernel tables (`KernelTables`) in `family` (none when there is no
    /// such table).
    static func chains(family: NFTFamily, table: String, on socket: NetlinkSocket) throws -> [Chain] {
        var chains: [Chain] = []
        try socket.dump(NetlinkSocket.nftables(NFT_MSG_GETCHAIN), family: family.netlinkFamily) { header in
            var owner: String?
            var name: String?
            var hooked = false
            forEachAttribute(of: header) { type, attribute in
                switch type {
                case NFTA_CHAIN_TABLE.rawValue: owner = string(attribute)
                case NFTA_CHAIN_NAME.rawValue: name = string(attribute)
                case NFTA_CHAIN_HOOK.rawValue: hooked = true
                default: break
                }
            }
            guard let owner, KernelTables.isOurs(owner, of: table), let name else { return }
            chains.append(Chain(name: name, table: owner, hooked: hooked))
        }
        return chains
    }

    /// How many rules each chain of the kernel tables `tables` in `family` holds, by kernel table
    /// and chain (chains without rules are left out).
    static func ruleCounts(family: NFTFamily, tables: Swift.Set<String>, on socket: NetlinkSocket) throws -> [String: [String: Int]] {
        var counts: [String: [String: Int]] = [:]
        for kernelTable in tables {
            // Only our tables' rules: other tables (a host firewall) may hold many more.
            try socket.dump(NetlinkSocket.nftables(NFT_MSG_GETRULE), family: family.netlinkFamily, filter: only(kernelTable)) { header in
                var owner: String?
                var chain: String?
                forEachAttribute(of: header) { type, attribute in
                    switch type {
                    case NFTA_RULE_TABLE.rawValue: owner = string(attribute)
                    case NFTA_RULE_CHAIN.rawValue: chain = string(attribute)
                    default: break
                    }
                }
                guard owner == kernelTable, let chain else { return }
                counts[kernelTable, default: [:]][chain, default: 0] += 1
            }
        }
        return counts
    }

    /// The named sets and maps of `table`'s kernel tables in `family`.
    static func sets(family: NFTFamily, table: String, on socket: NetlinkSocket) throws -> [Set] {
        var sets: [Set] = []
        try socket.dump(NetlinkSocket.nftables(NFT_MSG_GETSET), family: family.netlinkFamily) { header in
            var owner: String?
            var name: String?
            var flags: UInt32 = 0
            forEachAttribute(of: header) { type, attribute in
                switch type {
                case NFTA_SET_TABLE.rawValue: owner = string(attribute)
                case NFTA_SET_NAME.rawValue: name = string(attribute)
                case NFTA_SET_FLAGS.rawValue: flags = UInt32(bigEndian: mnl_attr_get_u32(attribute))
                default: break
                }
            }
            // Anonymous sets (`{ … }` written inline in rules) belong to their rules.
            guard let owner, KernelTables.isOurs(owner, of: table), flags & UInt32(NFT_SET_ANONYMOUS.rawValue) == 0, let name else { return }
            sets.append(Set(name: name, table: owner))
        }
        return sets
    }

    /// Calls `body` with each top-level attribute of the nf_tables message `header` and its type,
    /// read in place: the listings need a few names and flags, and libnftnl's parse copies every
    /// attribute (a rule's expressions decoded: 7,394 rules took 23 ms with it, 15 without).
    private static func forEachAttribute(of header: UnsafePointer<nlmsghdr>, _ body: (UInt32, UnsafePointer<nlattr>) -> Void) {
        var attribute = UnsafePointer(mnl_nlmsg_get_payload_offset(header, MemoryLayout<nfgenmsg>.size)!.assumingMemoryBound(to: nlattr.self))
        let end = UnsafeRawPointer(header) + Int(header.pointee.nlmsg_len)
        while mnl_attr_ok(attribute, Int32(end - UnsafeRawPointer(attribute))) {
            body(UInt32(mnl_attr_get_type(attribute)), attribute)
            attribute = UnsafePointer(mnl_attr_next(attribute)!)
        }
    }

    /// A dump request's filter: the objects of the kernel table `kernelTable` alone (every
    /// message type's table attribute is its first, NFTA_*_TABLE = 1).
    private static func only(_ kernelTable: String) -> (UnsafeMutablePointer<nlmsghdr>) -> Void {
        { mnl_attr_put_strz($0, 1, kernelTable) }
    }

    /// A string attribute's text.
    private static func string(_ attribute: UnsafePointer<nlattr>) -> String { String(cString: mnl_attr_get_str(attribute)) }
}

extension NFTFamily {
    /// The nfgenmsg family of netlink messages about this family's tables.
    var netlinkFamily: UInt8 { UInt8(self == .ip ? NFPROTO_IPV4 : NFPROTO_IPV6) }
}
