import Synchronization

/// An in-memory `NFTablesClient` with the kernel's transaction rules that matter to the planner:
/// all-or-nothing, no duplicate or missing elements, no missing sets or chains, no deleting a set or
/// chain that something still references. Unit tests and the packet tracer read its tables.
public final class FakeNFTables: NFTablesClient {
    private struct State {
        var tables: [NFTFamily: NFTTable] = [:]
        var failure: (message: String, after: Int)?
        var transactions = 0
        var last: NFTTransaction?
        var generation = RulesetGeneration(id: 1)
        var shapeReads = 0
        var listingHook: (@Sendable () -> Void)?
    }

    private let state = Mutex(State())

    public init() {}

    /// The next transaction after `committed` more fails with `message` (and changes nothing).
    public func failNextTransaction(_ message: String, after committed: Int = 0) {
        state.withLock { $0.failure = (message, committed) }
    }

    /// Deletes a table behind the applier's back (drift).
    public func removeTable(_ family: NFTFamily) {
        state.withLock {
            $0.tables.removeValue(forKey: family)
            $0.generation = $0.generation.next
        }
    }

    /// Appends a rule to a chain behind the applier's back (drift).
    public func appendRule(_ family: NFTFamily, chain: String, _ rule: NFTRule) {
        state.withLock {
            $0.tables[family]?.chains[chain]?.rules.append(rule)
            $0.generation = $0.generation.next
        }
    }

    /// A transaction of another program (in another table): the generation moves, our tables stay.
    public func commitElsewhere() { state.withLock { $0.generation = $0.generation.next } }

    /// Runs `hook` once, in the middle of the next shape read (after the table was read).
    public func duringNextShapeRead(_ hook: @escaping @Sendable () -> Void) { state.withLock { $0.listingHook = hook } }

    /// How many times a table's shape was read.
    public var shapeReads: Int { state.withLock { $0.shapeReads } }

    public func table(_ family: NFTFamily) -> NFTTable? { state.withLock { $0.tables[family] } }

    /// Transactions committed so far.
    public var transactions: Int { state.withLock { $0.transactions } }

    /// The last transaction committed.
    public var lastTransaction: NFTTransaction? { state.withLock { $0.last } }

    public func shape(family: NFTFamily, table: String) throws -> NFTTableShape? {
        let (table, hook) = state.withLock { state in
            state.shapeReads += 1
            defer { state.listingHook = nil }
            return (state.tables[family], state.listingHook)
        }
        hook?()
        return table.map(NFTTableShape.init)
    }

    public func generation() throws -> RulesetGeneration { state.withLock { $0.generation } }

    public func kernelTables(family: NFTFamily, table: String) throws -> [String] {
        state.withLock { $0.tables[family] }.map { KernelTables.names(of: $0) } ?? []
    }

    public func apply(_ transaction: consuming NFTTransaction) throws {
        try state.withLock { state in
            if let failure = state.failure {
                guard failure.after > 0 else {
                    state.failure = nil
                    throw NFTError(failure.message)
                }
                state.failure?.after -= 1
            }
            var tables = state.tables
            for operation in transaction.operations { try Self.apply(operation, name: transaction.table, to: &tables) }
            for table in tables.values { try Self.checkReferences(table) }
            state.tables = tables
            state.transactions += 1
            if !transaction.isEmpty { state.generation = state.generation.next }
            state.last = transaction
        }
    }

    private static func apply(_ operation: NFTOperation, name: String, to tables: inout [NFTFamily: NFTTable]) throws {
        func existing(_ family: NFTFamily) throws -> NFTTable {
            guard let table = tables[family] else { throw NFTError("No such file or directory: table \(family.rawValue) \(name)") }
            return table
        }
        switch operation {
        case .replaceTable(let table):
            tables[table.family] = table
        case .addTable(let family, _):
            if tables[family] == nil { tables[family] = NFTTable(family: family, name: name) }
        case .deleteTable(let family, let kernel):
            // The family's kernel tables are one table here: the deleted one's objects go.
            var table = try existing(family)
            guard KernelTables.names(of: table).contains(kernel) else { throw NFTError("No such file or directory: table \(kernel)") }
            let holds = { (object: String) in KernelTables.name(name, holding: object) == kernel }
            table.sets = table.sets.filter { !holds($0.key) }
            table.elements = table.elements.filter { !holds($0.key) }
            table.chains = table.chains.filter { !holds($0.key) }
            tables[family] = table.sets.isEmpty && table.chains.isEmpty ? nil : table
        case .addSet(let family, let set):
            var table = try existing(family)
            if let old = table.sets[set.name], old != set { throw NFTError("File exists: set \(set.name) with another type") }
            table.sets[set.name] = set
            if table.elements[set.name] == nil { table.elements[set.name] = [:] }
            tables[family] = table
        case .deleteSet(let family, let set):
            var table = try existing(family)
            guard table.sets[set] != nil else { throw NFTError("No such file or directory: set \(set)") }
            if references(in: table).sets.contains(set) { throw NFTError("Device or resource busy: set \(set) in use") }
            table.sets[set] = nil
            table.elements[set] = nil
            tables[family] = table
        case .addChain(let family, let chain):
            var table = try existing(family)
            if table.chains[chain] == nil { table.chains[chain] = NFTChain(name: chain, rules: []) }
            tables[family] = table
        case .defineChain(let family, let chain):
            var table = try existing(family)
            if let old = table.chains[chain.name], old.hook != chain.hook { throw NFTError("File exists: chain \(chain.name)") }
            table.chains[chain.name] = chain
            // The kernel resolves jumps when a rule is added: the targets must exist by then.
            var alone = NFTTable(family: family, name: name)
            alone.chains = [chain.name: chain]
            let targets = references(in: alone).chains
            if let missing = targets.subtracting(table.chains.keys).sorted().first {
                throw NFTError("No such file or directory: chain \(missing) (jumped to from \(chain.name))")
            }
            tables[family] = table
        case .flushChain(let family, let chain):
            var table = try existing(family)
            guard table.chains[chain] != nil else { throw NFTError("No such file or directory: chain \(chain)") }
            table.chains[chain]?.rules = []
            tables[family] = table
        case .deleteChain(let family, let chain):
            var table = try existing(family)
            guard table.chains[chain] != nil else { throw NFTError("No such file or directory: chain \(chain)") }
            table.chains[chain] = nil
            if references(in: table).chains.contains(chain) { throw NFTError("Device or resource busy: chain \(chain) in use") }
            tables[family] = table
        case .addElements(let family, let set, let elements):
            var table = try existing(family)
            guard table.sets[set] != nil else { throw NFTError("No such file or directory: set \(set)") }
            for element in elements {
                if table.elements[set]?[element.key] != nil {
                    throw NFTError("File exists: element \(NFTRenderer.text(of: element.key)) in \(set)")
                }
                table.elements[set, default: [:]][element.key] = element.value
            }
            tables[family] = table
        case .deleteElements(let family, let set, let elements):
            var table = try existing(family)
            for element in elements {
                guard table.elements[set]?.removeValue(forKey: element.key) != nil else {
                    throw NFTError("No such file or directory: element \(NFTRenderer.text(of: element.key)) in \(set)")
                }
            }
            tables[family] = table
        }
    }

    /// In each kernel table (`KernelTables`): an object can reference only those of its own.
    private static func checkReferences(_ table: NFTTable) throws {
        for part in KernelTables.split(table) {
            let used = references(in: part)
            if let missing = used.sets.subtracting(part.sets.keys).sorted().first {
                throw NFTError("No such file or directory: set \(missing) (table \(part.family.rawValue) \(part.name))")
            }
            if let missing = used.chains.subtracting(part.chains.keys).sorted().first {
                throw NFTError("No such file or directory: chain \(missing) (table \(part.family.rawValue) \(part.name))")
            }
        }
    }

    private static func references(in table: NFTTable) -> (sets: Set<String>, chains: Set<String>) {
        var sets: Set<String> = []
        var chains: Set<String> = []
        func add(_ verdict: NFTVerdict) {
            switch verdict {
            case .jump(let chain), .goto(let chain): chains.insert(chain)
            case .accept, .drop: break
            }
        }
        for chain in table.chains.values {
            for rule in chain.rules {
                for match in rule.matches {
                    switch match {
                    case .daddrIn(let set), .saddrIn(let set, _), .frontendIn(let set), .addressPairIn(let set): sets.insert(set)
                    case .ctStateNew, .ctStatusDNAT, .saddrInRanges, .l4proto, .markClear: break
                    }
                }
                for statement in rule.statements {
                    switch statement {
                    case .verdict(let verdict): add(verdict)
                    case .frontendVerdictMap(let set), .dnatSlot(let set, _, _), .dnatFrontend(let set), .updateSaddr(let set):
                        sets.insert(set)
                    case .randomGoto(let targets): chains.formUnion(targets)
                    case .reject, .dnat, .markOr, .markXor, .masquerade, .return: break
                    }
                }
            }
        }
        for elements in table.elements.values {
            for value in elements.values {
                for case .verdict(let verdict) in value.values { add(verdict) }
            }
        }
        return (sets, chains)
    }
}
