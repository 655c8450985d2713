import ProxyModel

/// Renders typed nft objects as nft script text: the only place rule text is written.
/// Names are produced by the layout (fixed names and hashes), never taken from user input,
/// and values are typed (addresses, ports, protocols), so no user string reaches the text.
public enum NFTRenderer {
    /// The script for one transaction (libnftables runs it as one atomic batch).
    public static func render(_ transaction: NFTTransaction) -> String {
        var out = ScriptWriter()
        for operation in transaction.operations {
            render(operation, table: transaction.table, into: &out)
        }
        return out.text
    }

    /// The complete table as a standalone script, as the golden files hold it (elements sorted):
    /// one `table` block per kernel table.
    public static func render(table: NFTTable) -> String {
        var out = ScriptWriter()
        for part in KernelTables.split(table) { renderBody(part, sorted: true, into: &out) }
        return out.text
    }

    /// `name` is the transaction's table; each object goes to the kernel table that holds it.
    private static func render(_ operation: NFTOperation, table name: String, into out: inout ScriptWriter) {
        func table(holding object: String) -> String { KernelTables.name(name, holding: object) }
        switch operation {
        case .replaceTable(let table):
            for part in KernelTables.split(table) {
                // `add` first so that `delete` cannot fail on a missing table; all of it is one transaction.
                out += "add table \(part.family.rawValue) \(part.name)\n"
                out += "delete table \(part.family.rawValue) \(part.name)\n"
                renderBody(part, sorted: false, into: &out)
            }
        case .addTable(let family, let kernel):
            out += "add table \(family.rawValue) \(kernel)\n"
        case .deleteTable(let family, let kernel):
            out += "delete table \(family.rawValue) \(kernel)\n"
        case .addSet(let family, let set):
            out += "add \(set.isMap ? "map" : "set") \(family.rawValue) \(table(holding: set.name)) \(set.name) { "
            out += declaration(of: set, family: family).joined(separator: "; ")
            out += "; }\n"
        case .deleteSet(let family, let set):
            out += "delete set \(family.rawValue) \(table(holding: set)) \(set)\n"
        case .addChain(let family, let chain):
            out += "add chain \(family.rawValue) \(table(holding: chain)) \(chain)\n"
        case .defineChain(let family, let chain):
            let prefix = "\(family.rawValue) \(table(holding: chain.name)) \(chain.name)"
            out += "add chain \(prefix)"
            if let hook = chain.hook { out += " { \(hookClause(hook)) }" }
            out += "\nflush chain \(prefix)\n"
            for rule in chain.rules {
                out += "add rule \(prefix) \(text(of: rule, family: family))\n"
            }
        case .flushChain(let family, let chain):
            out += "flush chain \(family.rawValue) \(table(holding: chain)) \(chain)\n"
        case .deleteChain(let family, let chain):
            out += "delete chain \(family.rawValue) \(table(holding: chain)) \(chain)\n"
        case .addElements(let family, let set, let elements):
            guard !elements.isEmpty else { return }
            out += "add element \(family.rawValue) \(table(holding: set)) \(set) { "
            for (index, element) in elements.enumerated() {
                if index > 0 { out += ", " }
                out.write(element.key, element.value)
            }
            out += " }\n"
        case .deleteElements(let family, let set, let elements):
            guard !elements.isEmpty else { return }
            out += "delete element \(family.rawValue) \(table(holding: set)) \(set) { "
            for (index, element) in elements.enumerated() {
                if index > 0 { out += ", " }
                out.write(element.key, NFTTuple())
            }
            out += " }\n"
        }
    }

    private static func renderBody(_ table: NFTTable, sorted: Bool, into out: inout ScriptWriter) {
        let family = table.family
        out += "table \(family.rawValue) \(table.name) {\n"
        for set in table.sets.values.sorted(by: { $0.name < $1.name }) {
            out += "\t\(set.isMap ? "map" : "set") \(set.name) {\n"
            for line in declaration(of: set, family: family) { out += "\t\t\(line)\n" }
            if let elements = table.elements[set.name], !elements.isEmpty {
                out += "\t\telements = {\n\t\t\t"
                if sorted {
                    out += elements.map { text(of: $0.key, $0.value) }.sorted().joined(separator: ",\n\t\t\t")
                } else {
                    for (index, element) in elements.enumerated() {
                        if index > 0 { out += ",\n\t\t\t" }
                        out.write(element.key, element.value)
                    }
                }
                out += "\n\t\t}\n"
            }
            out += "\t}\n"
        }
        for chain in table.chains.values.sorted(by: { $0.name < $1.name }) {
            out += "\tchain \(chain.name) {\n"
            if let hook = chain.hook { out += "\t\t\(hookClause(hook))\n" }
            for rule in chain.rules { out += "\t\t\(text(of: rule, family: family))\n" }
            out += "\t}\n"
        }
        out += "}\n"
    }

    private static func hookClause(_ hook: NFTHook) -> String {
        "type \(hook.type.rawValue) hook \(hook.hook.rawValue) priority \(hook.priority); policy accept;"
    }

    private static func declaration(of set: NFTSetDefinition, family: NFTFamily) -> [String] {
        let address = family.addressType
        let ip = family.addressKeyword
        var lines: [String]
        switch set.type {
        case .frontend: lines = ["type \(address) . inet_proto . inet_service"]
        case .frontendVerdictMap: lines = ["type \(address) . inet_proto . inet_service : verdict"]
        // The data names the protocol's port (not `th dport`): nft 1.0.6 cannot evaluate a new rule
        // against a `th` map read back from the kernel ("conflicting protocols"), and a protocol
        // port makes the lookup rule match that protocol only, hence one map per protocol.
        case .slotMap(let proto):
            lines = ["typeof \(ip) daddr . meta l4proto . th dport . numgen random mod 1 : \(ip) daddr . \(text(of: .proto(proto))) dport"]
        case .frontendMap(let proto):
            lines = ["typeof \(ip) daddr . meta l4proto . th dport : \(ip) daddr . \(text(of: .proto(proto))) dport"]
        case .address(let interval):
            lines = ["type \(address)"]
            if interval { lines.append("flags interval") }
        case .addressPair: lines = ["type \(address) . \(address)"]
        }
        if let timeout = set.dynamicTimeoutSeconds {
            lines.append("flags dynamic,timeout")
            lines.append("timeout \(timeout)s")
        }
        return lines
    }

    static func text(of rule: NFTRule, family: NFTFamily) -> String {
        let ip = family.addressKeyword
        let frontend = "\(ip) daddr . meta l4proto . th dport"
        var parts: [String] = []
        for match in rule.matches {
            switch match {
            case .ctStateNew: parts.append("ct state new")
            case .ctStatusDNAT: parts.append("ct status dnat")
            case .daddrIn(let set): parts.append("\(ip) daddr @\(set)")
            case .saddrIn(let set, let negated): parts.append("\(ip) saddr \(negated ? "!= " : "")@\(set)")
            case .frontendIn(let set): parts.append("\(frontend) @\(set)")
            case .addressPairIn(let set): parts.append("\(ip) saddr . \(ip) daddr @\(set)")
            case .saddrInRanges(let ranges, let negated):
                parts.append("\(ip) saddr \(negated ? "!= " : ""){ \(ranges.map(\.description).joined(separator: ", ")) }")
            case .l4proto(let proto): parts.append("meta l4proto \(text(of: .proto(proto)))")
            case .markClear(let mask): parts.append("meta mark & \(hex(mask)) == 0")
            }
        }
        for statement in rule.statements {
            switch statement {
            case .verdict(let verdict): parts.append(text(of: .verdict(verdict)))
            case .reject: parts.append("reject")
            case .frontendVerdictMap(let map): parts.append("\(frontend) vmap @\(map)")
            case .dnatSlot(let map, let count, let offset):
                parts.append("dnat \(ip) to \(frontend) . numgen random mod \(count) offset \(offset) map @\(map)")
            case .dnatFrontend(let map): parts.append("dnat \(ip) to \(frontend) map @\(map)")
            case .dnat(let address, let port):
                parts.append(address.family == .ipv4 ? "dnat to \(address):\(port)" : "dnat to [\(address)]:\(port)")
            case .randomGoto(let chains):
                let entries = chains.enumerated().map { "\($0.offset) : goto \($0.element)" }
                parts.append("numgen random mod \(chains.count) vmap { \(entries.joined(separator: ", ")) }")
            case .markOr(let mask): parts.append("meta mark set meta mark | \(hex(mask))")
            case .markXor(let mask): parts.append("meta mark set meta mark ^ \(hex(mask))")
            case .masquerade: parts.append("masquerade fully-random")
            case .updateSaddr(let set): parts.append("update @\(set) { \(ip) saddr }")
            case .return: parts.append("return")
            }
        }
        return parts.joined(separator: " ")
    }

    static func text(of key: NFTTuple, _ value: NFTTuple = NFTTuple()) -> String {
        var out = ScriptWriter()
        out.write(key, value)
        return out.text
    }

    static func text(of value: NFTValue) -> String {
        switch value {
        case .address(let address): address.description
        case .cidr(let cidr): cidr.description
        case .proto(let proto): proto.keyword
        case .port(let port): String(port)
        case .integer(let integer): String(integer)
        case .verdict(.accept): "accept"
        case .verdict(.drop): "drop"
        case .verdict(.jump(let chain)): "jump \(chain)"
        case .verdict(.goto(let chain)): "goto \(chain)"
        }
    }

    private static func hex(_ value: UInt32) -> String { "0x" + String(value, radix: 16) }
}

/// Script text built as UTF-8 bytes. Elements, which are nearly all of a full program's text
/// (6 MB for 10k services), are written digit by digit instead of through interpolated strings.
struct ScriptWriter {
    private var bytes: [UInt8] = []

    var text: String { String(decoding: bytes, as: UTF8.self) }

    static func += (writer: inout ScriptWriter, text: String) {
        writer.bytes.append(contentsOf: text.utf8)
    }

    /// One element: `key` (and `value`, for maps), concatenations joined with ` . `.
    mutating func write(_ key: NFTTuple, _ value: NFTTuple) {
        write(key.values)
        if !value.isEmpty {
            bytes.append(contentsOf: " : ".utf8)
            write(value.values)
        }
    }

    private mutating func write(_ values: [NFTValue]) {
        for (index, value) in values.enumerated() {
            if index > 0 { bytes.append(contentsOf: " . ".utf8) }
            switch value {
            case .address(.v4(let address)):
                write(decimal: UInt(address >> 24))
                for shift: UInt32 in stride(from: 16, through: 0, by: -8) {
                    bytes.append(UInt8(ascii: "."))
                    write(decimal: UInt(address >> shift & 0xff))
                }
            case .port(let number) where number >= 0, .integer(let number) where number >= 0:
                write(decimal: UInt(number))
            case .proto(let proto):
                bytes.append(contentsOf: proto.keyword.utf8)
            default:
                bytes.append(contentsOf: NFTRenderer.text(of: value).utf8)
            }
        }
    }

    private mutating func write(decimal: UInt) {
        if decimal >= 10 { write(decimal: decimal / 10) }
        bytes.append(UInt8(ascii: "0") + UInt8(decimal % 10))
    }
}
