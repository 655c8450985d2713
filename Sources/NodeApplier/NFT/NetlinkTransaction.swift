import CNFTables
import Glibc
import ProxyModel

/// A partial sync as one netlink batch (one kernel transaction, all of it or nothing), without
/// libnftables: before it runs a script, libnftables lists every set and chain of the table into
/// its cache. With 200 ClientIP-affinity services (each endpoint with its set and chain) that made
/// every endpoint change take 4–9 ms instead of 0.2, and a change to an affinity service 18–23 ms.
/// Covered: elements whose keys and values have register encodings; the objects the affinity
/// chains of a service are made of (address sets filled by the packet path, regular chains and
/// their rules). Anything else (interval sets, firewall ranges) is left to libnftables, which
/// encodes every rule the renderer writes.
/// libnftables lists every set and chain of the family before it runs a script: with 1,000
/// ClientIP-affinity services (10,000 sets in their tables) that took ~45 ms.
///
/// The expressions are those `nft` compiles the same rules into, so `nft list` prints the
/// renderer's text (the e2e tests read it back).
enum NetlinkTransaction {
    /// Runs `operations` in `table` on `socket`, in their order; false, sending nothing, when one
    /// of them is not covered. Kept open by the caller: closing a netfilter socket after a commit
    /// that deleted something waits until the kernel has freed it (an RCU grace period, ~16 ms here).
    static func apply(_ operations: [NFTOperation], table: String, on socket: NetlinkSocket) throws -> Bool {
        guard let batch = try batch(for: operations, table: table) else { return false }
        if !batch.isEmpty { try batch.commit(on: socket) }
        return true
    }

    /// The batch for `operations` in `table`, not sent; nil when one of them is not covered.
    static func batch(for operations: [NFTOperation], table: String) throws -> NetlinkElements.Batch? {
        let batch = try NetlinkElements.Batch()
        var encoder = Encoder(batch: batch, table: table)
        for operation in operations {
            guard encoder.encode(operation) else { return nil }
        }
        return batch
    }

    /// A rule's anonymous map, which the rule names by its name and id.
    private struct AnonymousMap {
        var name: String
        var id: UInt32
    }

    private struct Encoder {
        let batch: NetlinkElements.Batch
        /// The transaction's table; each object goes to the kernel table that holds it.
        let table: String
        /// Set ids (which the kernel requires of a new set), unique in the batch.
        var nextSetID: UInt32 = 1

        mutating func encode(_ operation: NFTOperation) -> Bool {
            switch operation {
            case .addElements(let family, let set, let elements): return add(elements, to: set, family: family, delete: false)
            case .deleteElements(let family, let set, let elements): return add(elements, to: set, family: family, delete: true)
            case .addSet(let family, let set): return addSet(set, family: family)
            case .deleteSet(let family, let set):
                return batch.message(NFT_MSG_DELSET, table: kernelTable(set), family: family, naming: "deleting \(family.rawValue) set \(set)") {
                    put($0, NFTA_SET_NAME.rawValue, set)
                }
            case .addChain(let family, let chain): return addChain(chain, family: family)
            case .defineChain(let family, let chain):
                guard chain.hook == nil, addChain(chain.name, family: family), flush(chain.name, family: family) else { return false }
                return chain.rules.allSatisfy { addRule($0, to: chain.name, family: family) }
            case .flushChain(let family, let chain): return flush(chain, family: family)
            case .deleteChain(let family, let chain):
                return batch.message(NFT_MSG_DELCHAIN, table: kernelTable(chain), family: family, naming: "deleting \(family.rawValue) chain \(chain)") {
                    put($0, NFTA_CHAIN_NAME.rawValue, chain)
                }
            case .replaceTable, .addTable, .deleteTable: return false
            }
        }

        private func add(_ elements: [NFTElement], to set: String, family: NFTFamily, delete: Bool) -> Bool {
            for start in stride(from: 0, to: elements.count, by: NetlinkElements.elementsPerMessage) {
                batch.beginMessage(table: kernelTable(set), set: set, family: family, delete: delete)
                for element in elements[start..<min(start + NetlinkElements.elementsPerMessage, elements.count)] {
                    guard batch.appendElement(key: element.key, value: delete ? NFTTuple() : element.value) else { return false }
                }
                batch.endMessage()
            }
            return true
        }

        /// An address set, filled by the packet path when it has a timeout; no other kind.
        private mutating func addSet(_ set: NFTSetDefinition, family: NFTFamily) -> Bool {
            guard set.type == .address(interval: false) else { return false }
            let id = nextSetID
            nextSetID += 1
            return batch.message(
                NFT_MSG_NEWSET, flags: NLM_F_CREATE, table: kernelTable(set.name), family: family,
                naming: "adding \(family.rawValue) set \(set.name)"
            ) { header in
                put(header, NFTA_SET_NAME.rawValue, set.name)
                put(header, NFTA_SET_KEY_TYPE.rawValue, family == .ip ? Self.ipv4AddressType : Self.ipv6AddressType)
                put(header, NFTA_SET_KEY_LEN.rawValue, UInt32(family.addressLength))
                put(header, NFTA_SET_ID.rawValue, id)
                if let timeout = set.dynamicTimeoutSeconds {
                    put(header, NFTA_SET_FLAGS.rawValue, UInt32(NFT_SET_TIMEOUT.rawValue | NFT_SET_EVAL.rawValue))
                    mnl_attr_put_u64(header, UInt16(NFTA_SET_TIMEOUT.rawValue), (UInt64(timeout) * 1000).bigEndian)
                } else {
                    put(header, NFTA_SET_FLAGS.rawValue, UInt32(0))
                }
                return true
            }
        }

        private func kernelTable(_ object: String) -> String { KernelTables.name(table, holding: object) }

        private func addChain(_ chain: String, family: NFTFamily) -> Bool {
            batch.message(
                NFT_MSG_NEWCHAIN, flags: NLM_F_CREATE, table: kernelTable(chain), family: family, naming: "adding \(family.rawValue) chain \(chain)"
            ) {
                put($0, NFTA_CHAIN_NAME.rawValue, chain)
            }
        }

        private func flush(_ chain: String, family: NFTFamily) -> Bool {
            batch.message(NFT_MSG_DELRULE, table: kernelTable(chain), family: family, naming: "flushing \(family.rawValue) chain \(chain)") {
                put($0, NFTA_RULE_CHAIN.rawValue, chain)
            }
        }

        /// A rule of an affinity or `pick-N` chain; false for any other.
        private mutating func addRule(_ rule: NFTRule, to chain: String, family: NFTFamily) -> Bool {
            // A `randomGoto`'s anonymous map goes first. Its name is the chain's (one such rule per
            // chain), not nft's `__map%d`: for a name with `%d` the kernel reads the name of every
            // set of the table (2,000 in the bench's affinity table) to find a free number.
            var map: AnonymousMap?
            for case .randomGoto(let chains) in rule.statements {
                guard map == nil else { return false }
                let added = AnonymousMap(name: "__map-" + chain, id: nextSetID)
                nextSetID += 1
                guard addRandomMap(chains, added, family: family, table: kernelTable(chain)) else { return false }
                map = added
            }
            return batch.message(
                NFT_MSG_NEWRULE, flags: NLM_F_CREATE | NLM_F_APPEND, table: kernelTable(chain), family: family,
                naming: "adding a rule to \(family.rawValue) chain \(chain)"
            ) { header in
                put(header, NFTA_RULE_CHAIN.rawValue, chain)
                let list = mnl_attr_nest_start(header, UInt16(NFTA_RULE_EXPRESSIONS.rawValue))
                defer { mnl_attr_nest_end(header, list) }
                let expressions = Expressions(header: header, family: family)
                for match in rule.matches {
                    guard expressions.match(match) else { return false }
                }
                for statement in rule.statements {
                    guard expressions.statement(statement, map: map) else { return false }
                }
                return true
            }
        }

        /// `numgen random mod N vmap { i : goto chains[i] }`'s map: anonymous and constant, bound
        /// to its rule (deleted with it, in its table), keys in host byte order as `numgen` writes them.
        private func addRandomMap(_ chains: [String], _ map: AnonymousMap, family: NFTFamily, table: String) -> Bool {
            let added = batch.message(
                NFT_MSG_NEWSET, flags: NLM_F_CREATE, table: table, family: family, naming: "adding a \(family.rawValue) verdict map"
            ) { header in
                put(header, NFTA_SET_NAME.rawValue, map.name)
                put(header, NFTA_SET_FLAGS.rawValue, UInt32(NFT_SET_ANONYMOUS.rawValue | NFT_SET_CONSTANT.rawValue | NFT_SET_MAP.rawValue))
                put(header, NFTA_SET_KEY_TYPE.rawValue, Self.integerType)
                put(header, NFTA_SET_KEY_LEN.rawValue, UInt32(4))
                put(header, NFTA_SET_DATA_TYPE.rawValue, NFT_DATA_VERDICT.rawValue)
                put(header, NFTA_SET_ID.rawValue, map.id)
                // nft's note that the keys are in host byte order (libnftnl's udata TLV: type
                // NFTNL_UDATA_SET_KEYBYTEORDER, length 4, BYTEORDER_HOST_ENDIAN), which `nft list`
                // reads them by; without it, it prints 1 as 16777216.
                var hostEndian = UInt32(1)
                let note = withUnsafeBytes(of: &hostEndian) { [0, 4] + Array($0) }
                mnl_attr_put(header, UInt16(NFTA_SET_USERDATA.rawValue), note.count, note)
                return true
            }
            guard added else { return false }
            return batch.message(
                NFT_MSG_NEWSETELEM, flags: NLM_F_CREATE, table: table, family: family, naming: "filling a \(family.rawValue) verdict map"
            ) { header in
                put(header, NFTA_SET_ELEM_LIST_SET.rawValue, map.name)
                put(header, NFTA_SET_ELEM_LIST_SET_ID.rawValue, map.id)
                let list = mnl_attr_nest_start(header, UInt16(NFTA_SET_ELEM_LIST_ELEMENTS.rawValue))
                for (index, chain) in chains.enumerated() {
                    let element = mnl_attr_nest_start(header, UInt16(NFTA_LIST_ELEM.rawValue))
                    var key = UInt32(index)
                    let nest = mnl_attr_nest_start(header, UInt16(NFTA_SET_ELEM_KEY.rawValue))
                    mnl_attr_put(header, UInt16(NFTA_DATA_VALUE.rawValue), 4, &key)
                    mnl_attr_nest_end(header, nest)
                    NetlinkElements.putVerdict(.goto(chain), as: NFTA_SET_ELEM_DATA.rawValue, into: header)
                    mnl_attr_nest_end(header, element)
                }
                mnl_attr_nest_end(header, list)
                return true
            }
        }

        // nft's data type ids (its `enum datatypes`), which `nft list` reads a set's keys by.
        static let integerType: UInt32 = 4
        static let ipv4AddressType: UInt32 = 7
        static let ipv6AddressType: UInt32 = 8
    }

    /// The expressions of one rule, as `nft` compiles the matches and statements of affinity and
    /// `pick-N` chains.
    private struct Expressions {
        let header: UnsafeMutablePointer<nlmsghdr>
        let family: NFTFamily

        func match(_ match: NFTMatch) -> Bool {
            switch match {
            case .saddrIn(let set, negated: false):
                loadSaddr()
                expression("lookup") {
                    put(header, NFTA_LOOKUP_SET.rawValue, set)
                    put(header, NFTA_LOOKUP_SREG.rawValue, NFT_REG_1.rawValue)
                }
            case .l4proto(let proto):
                expression("meta") {
                    put(header, NFTA_META_KEY.rawValue, NFT_META_L4PROTO.rawValue)
                    put(header, NFTA_META_DREG.rawValue, NFT_REG_1.rawValue)
                }
                expression("cmp") {
                    put(header, NFTA_CMP_SREG.rawValue, NFT_REG_1.rawValue)
                    put(header, NFTA_CMP_OP.rawValue, NFT_CMP_EQ.rawValue)
                    putValue(NFTA_CMP_DATA.rawValue, registerBytes(.proto(proto), length: 1))
                }
            default: return false
            }
            return true
        }

        func statement(_ statement: NFTStatement, map: AnonymousMap?) -> Bool {
            switch statement {
            case .verdict(let verdict):
                expression("immediate") {
                    put(header, NFTA_IMMEDIATE_DREG.rawValue, NFT_REG_VERDICT.rawValue)
                    NetlinkElements.putVerdict(verdict, as: NFTA_IMMEDIATE_DATA.rawValue, into: header)
                }
            case .randomGoto(let chains):
                guard let map else { return false }
                expression("numgen") {
                    put(header, NFTA_NG_DREG.rawValue, NFT_REG_1.rawValue)
                    put(header, NFTA_NG_MODULUS.rawValue, UInt32(chains.count))
                    put(header, NFTA_NG_TYPE.rawValue, NFT_NG_RANDOM.rawValue)
                    put(header, NFTA_NG_OFFSET.rawValue, UInt32(0))
                }
                expression("lookup") {
                    put(header, NFTA_LOOKUP_SET.rawValue, map.name)
                    put(header, NFTA_LOOKUP_SET_ID.rawValue, map.id)
                    put(header, NFTA_LOOKUP_SREG.rawValue, NFT_REG_1.rawValue)
                    put(header, NFTA_LOOKUP_DREG.rawValue, NFT_REG_VERDICT.rawValue)
                }
            case .updateSaddr(let set):
                loadSaddr()
                expression("dynset") {
                    put(header, NFTA_DYNSET_SET_NAME.rawValue, set)
                    put(header, NFTA_DYNSET_OP.rawValue, NFT_DYNSET_OP_UPDATE.rawValue)
                    put(header, NFTA_DYNSET_SREG_KEY.rawValue, NFT_REG_1.rawValue)
                }
            case .dnat(let address, let port):
                guard (address.family == .ipv4) == (family == .ip) else { return false }
                expression("immediate") {
                    put(header, NFTA_IMMEDIATE_DREG.rawValue, NFT_REG_1.rawValue)
                    putValue(NFTA_IMMEDIATE_DATA.rawValue, registerBytes(.address(address), length: family.addressLength))
                }
                expression("immediate") {
                    put(header, NFTA_IMMEDIATE_DREG.rawValue, NFT_REG_2.rawValue)
                    putValue(NFTA_IMMEDIATE_DATA.rawValue, registerBytes(.port(port), length: 2))
                }
                nat(address: NFT_REG_1.rawValue, port: NFT_REG_2.rawValue)
            default: return false
            }
            return true
        }

        private func nat(address: UInt32, port: UInt32) {
            expression("nat") {
                put(header, NFTA_NAT_TYPE.rawValue, NFT_NAT_DNAT.rawValue)
                put(header, NFTA_NAT_FAMILY.rawValue, UInt32(family == .ip ? NFPROTO_IPV4 : NFPROTO_IPV6))
                put(header, NFTA_NAT_REG_ADDR_MIN.rawValue, address)
                put(header, NFTA_NAT_REG_PROTO_MIN.rawValue, port)
            }
        }

        private func load(_ base: nft_payload_bases, offset: Int, length: Int, into register: UInt32) {
            expression("payload") {
                put(header, NFTA_PAYLOAD_DREG.rawValue, register)
                put(header, NFTA_PAYLOAD_BASE.rawValue, base.rawValue)
                put(header, NFTA_PAYLOAD_OFFSET.rawValue, UInt32(offset))
                put(header, NFTA_PAYLOAD_LEN.rawValue, UInt32(length))
            }
        }

        /// `ip saddr` / `ip6 saddr` into register 1.
        private func loadSaddr() {
            load(NFT_PAYLOAD_NETWORK_HEADER, offset: family == .ip ? 12 : 8, length: family.addressLength, into: NFT_REG_1.rawValue)
        }

        private func expression(_ name: String, _ data: () -> Void) {
            let element = mnl_attr_nest_start(header, UInt16(NFTA_LIST_ELEM.rawValue))
            put(header, NFTA_EXPR_NAME.rawValue, name)
            let nest = mnl_attr_nest_start(header, UInt16(NFTA_EXPR_DATA.rawValue))
            data()
            mnl_attr_nest_end(header, nest)
            mnl_attr_nest_end(header, element)
        }

        private func putValue(_ type: UInt32, _ bytes: [UInt8]) {
            let nest = mnl_attr_nest_start(header, UInt16(type))
            mnl_attr_put(header, UInt16(NFTA_DATA_VALUE.rawValue), bytes.count, bytes)
            mnl_attr_nest_end(header, nest)
        }
    }
}

/// A string attribute.
@discardableResult
private func put(_ header: UnsafeMutablePointer<nlmsghdr>, _ type: UInt32, _ value: String) -> Bool {
    mnl_attr_put_strz(header, UInt16(type), value)
    return true
}

/// A 32-bit attribute, in network byte order as netlink's NLA_U32/NLA_BE32 attributes of nf_tables are.
@discardableResult
private func put(_ header: UnsafeMutablePointer<nlmsghdr>, _ type: UInt32, _ value: UInt32) -> Bool {
    mnl_attr_put_u32(header, UInt16(type), value.bigEndian)
    return true
}

/// A value's bytes as an nft register holds them (`NFTTuple`), its first `length`.
private func registerBytes(_ value: NFTValue, length: Int) -> [UInt8] {
    NFTTuple().appending(value).withRegisters { Array($0.prefix(length)) } ?? []
}

extension NFTFamily {
    var addressLength: Int { self == .ip ? 4 : 16 }
}
