import CNFTables
import Dispatch
import Glibc
import ProxyModel

/// Loads elements into existing sets and maps as netlink batches (libnftnl's batch pages, the
/// messages' attributes written with libmnl): no script text. libnftables parses, evaluates and
/// re-encodes every element of a script; at 50k services that is 4.5–5.2 s and 700 MB for
/// elements the kernel itself takes in about a second (`tools/nftnl-floor`). Element tuples hold
/// their values as nft registers do (`NFTTuple`), so a key or value attribute is a copy.
public enum NetlinkElements {
    /// The elements of one set or map.
    public struct SetElements: Hashable, Sendable {
        public var family: NFTFamily
        public var set: String
        public var elements: [NFTTuple: NFTTuple]
    }

    /// Elements per NEWSETELEM message. A message's element list is one netlink attribute, whose
    /// length has 16 bits: 200 of the largest elements (IPv6 frontend key, verdict with a chain
    /// name) stay below 24 KB.
    static let elementsPerMessage = 200
    /// Elements per batch (kernel transaction). While the kernel takes one batch, the next is
    /// built on this thread: the kernel's share (~1 s at 350k elements) overlaps libnftnl's.
    static let elementsPerBatch = 40_000

    /// Loads `sets` into table `table` (each set into the kernel table that holds it), in batches of
    /// `elementsPerBatch` elements: for sets that nothing looks up yet (a staged program), a failed
    /// batch leaves only a partly filled table behind, which the caller deletes.
    static func load(_ sets: consuming [SetElements], table: String) throws {
        var sending: Sending?
        // Also when building fails: no batch may still be on its way when the caller cleans up.
        defer { _ = try? sending?.finish() }
        var batch = try Batch()
        for index in sets.indices where !sets[index].elements.isEmpty {
            let part = sets[index]
            var inMessage = 0
            for (key, value) in part.elements {
                if inMessage == 0 {
                    batch.beginMessage(table: KernelTables.name(table, holding: part.set), set: part.set, family: part.family, delete: false)
                }
                guard batch.appendElement(key: key, value: value) else {
                    throw NFTError("\(part.family.rawValue) set \(part.set): element \(key) : \(value) has no register encoding")
                }
                inMessage += 1
                guard inMessage == elementsPerMessage else { continue }
                batch.endMessage()
                inMessage = 0
                if batch.elements >= elementsPerBatch {
                    try sending?.finish()
                    sending = Sending(batch)
                    batch = try Batch()
                }
            }
            if inMessage > 0 { batch.endMessage() }
        }
        if batch.elements > 0 {
            try sending?.finish()
            sending = Sending(batch)
        }
        // Freed while the kernel takes the last batch.
        _ = consume sets
        try sending?.finish()
    }

    /// `verdict` as a data attribute nested in `type` (a set element's data, an immediate's).
    static func putVerdict(_ verdict: NFTVerdict, as type: UInt32, into header: UnsafeMutablePointer<nlmsghdr>) {
        let (code, chain): (Int32, String?) =
            switch verdict {
            case .accept: (Int32(NF_ACCEPT), nil)
            case .drop: (Int32(NF_DROP), nil)
            case .jump(let chain): (NFT_JUMP.rawValue, chain)
            case .goto(let chain): (NFT_GOTO.rawValue, chain)
            }
        let data = mnl_attr_nest_start(header, UInt16(type))
        let nest = mnl_attr_nest_start(header, UInt16(NFTA_DATA_VERDICT.rawValue))
        mnl_attr_put_u32(header, UInt16(NFTA_VERDICT_CODE.rawValue), UInt32(bitPattern: code).bigEndian)
        if let chain { mnl_attr_put_strz(header, UInt16(NFTA_VERDICT_CHAIN.rawValue), chain) }
        mnl_attr_nest_end(header, nest)
        mnl_attr_nest_end(header, data)
    }

    /// A netlink batch: BEGIN, the messages (element lists, and `message`'s), END, sent to the
    /// kernel in one `sendmsg`, which runs the whole transaction, commit included, before it
    /// returns. Built on one thread, then committed on another (`Sending`) or on the caller's,
    /// never used by two at once.
    final class Batch: @unchecked Sendable {
        /// Page size of the batch buffer; a page may overrun it by one message.
        static let pageSize: UInt32 = 1 << 20
        static let overrun: UInt32 = 256 << 10

        let pointer: OpaquePointer
        var sequence: UInt32
        private(set) var elements = 0
        /// What each message loads, by sequence number, to name it in an error.
        var contents: [UInt32: String] = [:]
        /// No message yet.
        var isEmpty: Bool { contents.isEmpty }

        init() throws {
            guard let pointer = nftnl_batch_alloc(Self.pageSize, Self.overrun) else { throw NFTError("libnftnl: out of memory") }
            self.pointer = pointer
            // Replies come on the batch's own socket; sequence numbers name its messages in them.
            sequence = 0
            nftnl_batch_begin(buffer, next())
            nftnl_batch_update(pointer)
        }

        deinit { nftnl_batch_free(pointer) }

        private var buffer: UnsafeMutablePointer<CChar> { nftnl_batch_buffer(pointer).assumingMemoryBound(to: CChar.self) }

        private func next() -> UInt32 {
            sequence &+= 1
            return sequence
        }

        /// The NEWSETELEM message being written, and its element list.
        private var message: UnsafeMutablePointer<nlmsghdr>?
        private var list: UnsafeMutablePointer<nlattr>?

        /// Starts a message that loads elements into `set` (or, with `delete`, deletes them: keys
        /// only); `appendElement` adds them, `endMessage` closes it. The attributes are written in
        /// place, as libnftnl encodes them, without libnftnl's object (one or two allocations) per
        /// element. Flags as `nft add element` and `nft delete element` send them.
        func beginMessage(table: String, set: String, family: NFTFamily, delete: Bool) {
            let sequence = next()
            contents[sequence] = "\(delete ? "deleting from" : "adding to") \(family.rawValue) set \(set)"
            let header = NetlinkSocket.putHeader(
                buffer, type: NetlinkSocket.nftables(delete ? NFT_MSG_DELSETELEM : NFT_MSG_NEWSETELEM), flags: delete ? 0 : NLM_F_CREATE,
                family: family.netlinkFamily, sequence: sequence)
            mnl_attr_put_strz(header, UInt16(NFTA_SET_ELEM_LIST_TABLE.rawValue), table)
            mnl_attr_put_strz(header, UInt16(NFTA_SET_ELEM_LIST_SET.rawValue), set)
            list = mnl_attr_nest_start(header, UInt16(NFTA_SET_ELEM_LIST_ELEMENTS.rawValue))
            message = header
        }

        /// Writes one message of `type` for `table` (`body` adds its other attributes); false, leaving
        /// the batch unusable, when `body` returns false. `naming` says what it does, for an error.
        func message(
            _ type: nf_tables_msg_types, flags: Int32 = 0, table: String, family: NFTFamily, naming: String,
            _ body: (UnsafeMutablePointer<nlmsghdr>) -> Bool
        ) -> Bool {
            let sequence = next()
            contents[sequence] = naming
            let header = NetlinkSocket.putHeader(
                buffer, type: NetlinkSocket.nftables(type), flags: flags, family: family.netlinkFamily, sequence: sequence)
            // Every message type's table attribute is its first (NFTA_*_TABLE = 1).
            mnl_attr_put_strz(header, 1, table)
            guard body(header) else { return false }
            nftnl_batch_update(pointer)
            return true
        }

        /// Appends an element; false, leaving the batch unusable, when the key or value has no
        /// register encoding (CIDRs: interval sets are loaded apart).
        func appendElement(key: NFTTuple, value: NFTTuple) -> Bool {
            let header = message!
            let element = mnl_attr_nest_start(header, UInt16(NFTA_LIST_ELEM.rawValue))
            guard put(key, as: UInt16(NFTA_SET_ELEM_KEY.rawValue), into: header) else { return false }
            if let verdict = value.verdict {
                NetlinkElements.putVerdict(verdict, as: NFTA_SET_ELEM_DATA.rawValue, into: header)
            } else if !value.isEmpty {
                guard put(value, as: UInt16(NFTA_SET_ELEM_DATA.rawValue), into: header) else { return false }
            }
            mnl_attr_nest_end(header, element)
            elements += 1
            return true
        }

        /// `tuple`'s registers as a data attribute nested in `type`.
        private func put(_ tuple: NFTTuple, as type: UInt16, into header: UnsafeMutablePointer<nlmsghdr>) -> Bool {
            let written: Void? = tuple.withRegisters { registers in
                let nest = mnl_attr_nest_start(header, type)
                mnl_attr_put(header, UInt16(NFTA_DATA_VALUE.rawValue), registers.count, registers.baseAddress)
                mnl_attr_nest_end(header, nest)
            }
            return written != nil
        }

        func endMessage() {
            mnl_attr_nest_end(message!, list!)
            message = nil
            list = nil
            nftnl_batch_update(pointer)
        }

        /// Sends the batch on `socket` (a socket of its own by default); throws with the kernel's
        /// error for the first message it refused.
        func commit(on socket: NetlinkSocket? = nil) throws {
            let last = sequence
            // The last message asks for an acknowledgement: the kernel answers it after running
            // the batch. Errors are always answered.
            nftnl_batch_end(buffer, next())
            nftnl_batch_update(pointer)
            let socket = try socket ?? NetlinkSocket()
            let pages = Int(nftnl_batch_iovec_len(pointer))
            var iov = [iovec](repeating: iovec(), count: pages)
            nftnl_batch_iovec(pointer, &iov, UInt32(pages))
            markLastForAcknowledgement(iov, sequence: last)
            try socket.send(iov)
            try socket.awaitAcknowledgement(of: last) { self.contents[$0] }
        }

        /// Sets NLM_F_ACK on the message with `sequence` (the last message).
        private func markLastForAcknowledgement(_ iov: [iovec], sequence: UInt32) {
            for page in iov {
                var offset = 0
                while offset + MemoryLayout<nlmsghdr>.size <= page.iov_len {
                    let header = (page.iov_base + offset).assumingMemoryBound(to: nlmsghdr.self)
                    if header.pointee.nlmsg_seq == sequence {
                        header.pointee.nlmsg_flags |= UInt16(NLM_F_ACK)
                        return
                    }
                    offset += Int(header.pointee.nlmsg_len + 3) & ~3
                }
            }
        }
    }

    /// A batch being committed on a thread of its own.
    private final class Sending: @unchecked Sendable {
        private let done = DispatchSemaphore(value: 0)
        private var error: (any Error)?
        private var finished = false

        init(_ batch: Batch) {
            DispatchQueue.global().async {
                do { try batch.commit() } catch { self.error = error }
                self.done.signal()
            }
        }

        /// Waits for the kernel's answer (once); throws its error.
        func finish() throws {
            if !finished { done.wait() }
            finished = true
            if let error { throw error }
        }
    }
}
