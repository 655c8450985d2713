/// The two name sets our chains and sets take in the kernel. A full program over tables that
/// are in the packet path is staged under the other generation's names, next to the live ruleset,
/// and swapped in with one transaction (`StagedProgram.swap`). Generation `a` uses the layout's
/// names as they are (what the golden files show); generation `b` appends `.b`, which no layout
/// name contains.
public enum Generation: Hashable, Sendable, CustomStringConvertible {
    case a
    case b

    static let suffix = ".b"

    /// The generation a kernel object's name belongs to.
    public init(of name: String) { self = name.hasSuffix(Self.suffix) ? .b : .a }

    public var other: Generation { self == .a ? .b : .a }

    public var description: String { self == .a ? "a" : "b" }

    /// The kernel name of a layout name.
    public func name(_ name: String) -> String { self == .a ? name : name + Self.suffix }

    /// The layout name of a kernel name of this generation; nil for the other generation's.
    public func layoutName(_ name: String) -> String? {
        guard Generation(of: name) == self else { return nil }
        return self == .a ? name : String(name.dropLast(Self.suffix.count))
    }
}

extension NFTVerdict {
    func named(_ generation: Generation) -> NFTVerdict {
        switch self {
        case .accept, .drop: self
        case .jump(let chain): .jump(generation.name(chain))
        case .goto(let chain): .goto(generation.name(chain))
        }
    }
}

extension NFTTuple {
    /// Only a verdict names anything (a chain).
    func named(_ generation: Generation) -> NFTTuple {
        if let verdict { .verdict(verdict.named(generation)) } else { self }
    }
}

extension NFTMatch {
    func named(_ generation: Generation) -> NFTMatch {
        switch self {
        case .daddrIn(let set): .daddrIn(set: generation.name(set))
        case .saddrIn(let set, let negated): .saddrIn(set: generation.name(set), negated: negated)
        case .frontendIn(let set): .frontendIn(set: generation.name(set))
        case .addressPairIn(let set): .addressPairIn(set: generation.name(set))
        case .ctStateNew, .ctStatusDNAT, .saddrInRanges, .l4proto, .markClear: self
        }
    }
}

extension NFTStatement {
    func named(_ generation: Generation) -> NFTStatement {
        switch self {
        case .verdict(let verdict): .verdict(verdict.named(generation))
        case .frontendVerdictMap(let map): .frontendVerdictMap(generation.name(map))
        case .dnatSlot(let map, let count, let offset): .dnatSlot(map: generation.name(map), count: count, offset: offset)
        case .dnatFrontend(let map): .dnatFrontend(map: generation.name(map))
        case .randomGoto(let chains): .randomGoto(chains.map(generation.name))
        case .updateSaddr(let set): .updateSaddr(set: generation.name(set))
        case .reject, .dnat, .markOr, .markXor, .masquerade, .return: self
        }
    }
}

extension NFTChain {
    func named(_ generation: Generation) -> NFTChain {
        NFTChain(
            name: generation.name(name), hook: hook,
            rules: rules.map { NFTRule($0.matches.map { $0.named(generation) }, $0.statements.map { $0.named(generation) }) })
    }
}

extension NFTSetDefinition {
    func named(_ generation: Generation) -> NFTSetDefinition {
        NFTSetDefinition(name: generation.name(name), type: type, dynamicTimeoutSeconds: dynamicTimeoutSeconds)
    }
}

extension NFTTable {
    /// Only verdict maps' elements are rewritten (their values name chains); every other set's
    /// elements move over as they are.
    public consuming func named(_ generation: Generation) -> NFTTable {
        guard generation != .a else { return self }
        var renamed = NFTTable(family: family, name: name)
        for (name, set) in sets { renamed.sets[generation.name(name)] = set.named(generation) }
        for (name, chain) in chains { renamed.chains[generation.name(name)] = chain.named(generation) }
        for name in Array(elements.keys) {
            var setElements = elements.removeValue(forKey: name)!
            if sets[name]?.type == .frontendVerdictMap { setElements = setElements.mapValues { $0.named(generation) } }
            renamed.elements[generation.name(name)] = setElements
        }
        return renamed
    }
}

extension NFTOperation {
    func named(_ generation: Generation) -> NFTOperation {
        switch self {
        case .replaceTable(let table): .replaceTable(table.named(generation))
        case .addTable, .deleteTable: self
        case .addSet(let family, let set): .addSet(family, set.named(generation))
        case .deleteSet(let family, let set): .deleteSet(family, generation.name(set))
        case .addChain(let family, let chain): .addChain(family, generation.name(chain))
        case .defineChain(let family, let chain): .defineChain(family, chain.named(generation))
        case .flushChain(let family, let chain): .flushChain(family, generation.name(chain))
        case .deleteChain(let family, let chain): .deleteChain(family, generation.name(chain))
        case .addElements(let family, let set, let elements):
            .addElements(
                family, set: generation.name(set), elements.map { NFTElement(key: $0.key, value: $0.value.named(generation)) })
        case .deleteElements(let family, let set, let elements): .deleteElements(family, set: generation.name(set), elements)
        }
    }
}

extension NFTTransaction {
    consuming func named(_ generation: Generation) -> NFTTransaction {
        guard generation != .a else { return self }
        return NFTTransaction(table: table, operations: operations.map { $0.named(generation) })
    }
}
