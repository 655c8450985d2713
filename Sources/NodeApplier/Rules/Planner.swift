/// Desired versus applied: turns per-service contributions into nft transactions.
///
/// Every chain, set and element is *claimed* by the services that contribute it; one claim (the
/// holder's) is installed. Shared objects (`pick-N` chains, hairpin pairs) live as long as anyone
/// claims them; a frontend two services claim is installed once. An update touches only what the
/// changed services claim, so its cost does not grow with the number of services.
public struct Planner: Sendable {
    public let tableName: String
    private let base: [NFTFamily: NFTTable]
    private var families: [NFTFamily: FamilyState] = [:]
    /// Services that contribute anything.
    public private(set) var serviceCount = 0

    /// What one service contributed at the last sync and contributes now. The planner keeps no
    /// copy of the contributions (memory): the caller derives the old one from the old objects.
    public struct Change: Sendable {
        public var old: [NFTFamily: Contribution]
        public var new: [NFTFamily: Contribution]

        public init(old: [NFTFamily: Contribution], new: [NFTFamily: Contribution]) {
            self.old = old
            self.new = new
        }
    }

    /// Plans a complete ruleset and the transaction that replaces both tables with it.
    public init(tableName: String, node: NodeConfig, contributions: [ServiceName: [NFTFamily: Contribution]]) {
        self.tableName = tableName
        base = Dictionary(uniqueKeysWithValues: NFTFamily.allCases.map { ($0, Layout.baseTable(family: $0, name: tableName, node: node)) })
        for family in NFTFamily.allCases { families[family] = FamilyState() }
        for (service, contribution) in contributions.sorted(by: { $0.key < $1.key }) {
            for (family, part) in contribution { families[family]!.install(service, part) }
            if contribution.values.contains(where: { !$0.isEmpty }) { serviceCount += 1 }
        }
    }

    /// The transaction that installs the planned ruleset from scratch (replacing whatever is there).
    public func fullTransaction() -> NFTTransaction {
        NFTTransaction(table: tableName, operations: NFTFamily.allCases.map { .replaceTable(table($0)) })
    }

    /// The complete table of `family` as planned.
    public func table(_ family: NFTFamily) -> NFTTable {
        var table = base[family]!
        let state = families[family]!
        for (name, claim) in state.chains { if let chain = claim.installed { table.chains[name] = chain } }
        for (name, claim) in state.sets { if let set = claim.installed { table.sets[name] = set } }
        for (set, elements) in state.elements {
            var installed = table.elements[set] ?? [:]
            installed.reserveCapacity(installed.count + elements.count)
            for (key, claim) in elements { if let value = claim.installed { installed[key] = value } }
            table.elements[set] = installed
        }
        return table
    }

    /// Chains and rule counts the kernel should hold once pending deletions ran.
    public func expectedShape(_ family: NFTFamily) -> NFTTableShape {
        var shape = NFTTableShape(base[family]!)
        let state = families[family]!
        for (name, claim) in state.chains { if let chain = claim.installed { shape.chains[name] = chain.rules.count } }
        for (name, claim) in state.sets where claim.installed != nil { shape.sets.insert(name) }
        return shape
    }

    /// Replaces the contributions of the given services and returns the
    /// transaction that brings the kernel there, or nil when only a full resync can (a dynamic set
    /// whose definition changed). Chains and sets nobody claims any more are left for `cleanup()`.
    /// After nil the planner must be discarded.
    public mutating func update(_ changes: [ServiceName: Change]) -> NFTTransaction? {
        for (service, change) in changes { claim(service, old: change.old, new: change.new) }
        var operations: [NFTOperation] = []
        for family in NFTFamily.allCases {
            guard let familyOperations = families[family]!.reconcile(family) else { return nil }
            operations += familyOperations
        }
        return NFTTransaction(table: tableName, operations: operations)
    }

    /// Deletes chains and sets that nobody claims any more (a separate, later transaction: the
    /// elements that referenced them are gone by then).
    public mutating func cleanup() -> NFTTransaction {
        var operations: [NFTOperation] = []
        for family in NFTFamily.allCases { operations += families[family]!.cleanup(family) }
        return NFTTransaction(table: tableName, operations: operations)
    }

    private mutating func claim(_ service: ServiceName, old: [NFTFamily: Contribution], new: [NFTFamily: Contribution]) {
        for family in Set(old.keys).union(new.keys) {
            families[family]!.claim(service, old: old[family] ?? Contribution(), new: new[family] ?? Contribution())
        }
        let had = old.values.contains { !$0.isEmpty }
        let has = new.values.contains { !$0.isEmpty }
        serviceCount += (has ? 1 : 0) - (had ? 1 : 0)
    }
}

/// Claims of one object by several services, and which value the kernel holds.
struct Claim<Value: Hashable & Sendable>: Sendable {
    private(set) var owners: [ServiceName: Value] = [:]
    private var holder: ServiceName?
    var installed: Value?

    var desired: Value? { holder.flatMap { owners[$0] } }

    mutating func set(_ service: ServiceName, _ value: Value?) {
        owners[service] = value
        if value != nil, holder == nil { holder = service }
        if value == nil, holder == service { holder = owners.keys.min() }
    }
}

/// Element claims are nearly always single-owner: an array keeps them small.
struct ElementClaim: Sendable {
    private(set) var owners: [(service: ServiceName, value: [NFTValue])] = []
    var installed: [NFTValue]?

    var desired: [NFTValue]? { owners.first?.value }

    mutating func set(_ service: ServiceName, _ value: [NFTValue]?) {
        let index = owners.firstIndex { $0.service == service }
        switch (index, value) {
        case (let index?, let value?): owners[index].value = value
        case (let index?, nil): owners.remove(at: index)
        case (nil, let value?): owners.append((service, value))
        case (nil, nil): break
        }
    }
}

struct FamilyState: Sendable {
    var chains: [String: Claim<NFTChain>] = [:]
    var sets: [String: Claim<NFTSetDefinition>] = [:]
    var elements: [String: [[NFTValue]: ElementClaim]] = [:]
    private var touchedChains: Set<String> = []
    private var touchedSets: Set<String> = []
    private var touchedElements: [String: Set<[NFTValue]>] = [:]
    private var unclaimedChains: Set<String> = []
    private var unclaimedSets: Set<String> = []

    mutating func claim(_ service: ServiceName, old: Contribution, new: Contribution) {
        for name in Set(old.chains.keys).union(new.chains.keys) where old.chains[name] != new.chains[name] {
            chains[name, default: Claim()].set(service, new.chains[name])
            touchedChains.insert(name)
        }
        for name in Set(old.sets.keys).union(new.sets.keys) where old.sets[name] != new.sets[name] {
            sets[name, default: Claim()].set(service, new.sets[name])
            touchedSets.insert(name)
        }
        for set in Set(old.elements.keys).union(new.elements.keys) {
            let before = old.elements[set] ?? [:]
            let after = new.elements[set] ?? [:]
            for key in Set(before.keys).union(after.keys) where before[key] != after[key] {
                elements[set, default: [:]][key, default: ElementClaim()].set(service, after[key])
                touchedElements[set, default: []].insert(key)
            }
        }
    }

    /// A claim of a full plan, which the kernel will hold as planned: the first claim of each
    /// object is installed.
    mutating func install(_ service: ServiceName, _ contribution: Contribution) {
        for (name, chain) in contribution.chains {
            chains[name, default: Claim()].set(service, chain)
            chains[name]!.installed = chains[name]!.desired
        }
        for (name, set) in contribution.sets {
            sets[name, default: Claim()].set(service, set)
            sets[name]!.installed = sets[name]!.desired
        }
        for (set, entries) in contribution.elements {
            var claims = elements[set] ?? [:]
            elements[set] = nil  // keep the dictionary uniquely referenced while it grows
            for (key, value) in entries {
                claims[key, default: ElementClaim()].set(service, value)
                claims[key]!.installed = claims[key]!.desired
            }
            elements[set] = claims
        }
    }

    /// The operations for everything touched since the last call, in an order the kernel accepts.
    mutating func reconcile(_ family: NFTFamily) -> [NFTOperation]? {
        var operations: [NFTOperation] = []
        for name in touchedSets.sorted() {
            let claim = sets[name]!
            switch (claim.installed, claim.desired) {
            case (let installed?, let desired?) where installed != desired: return nil
            case (nil, let desired?):
                operations.append(.addSet(family, desired))
                unclaimedSets.remove(name)
            case (_?, nil): unclaimedSets.insert(name)
            default: break
            }
            sets[name]!.installed = claim.desired
            if claim.owners.isEmpty { sets[name] = nil }
        }
        let newChains = touchedChains.sorted().filter { chains[$0]!.installed == nil && chains[$0]!.desired != nil }
        operations += newChains.map { .addChain(family, $0) }
        for name in touchedChains.sorted() {
            let claim = chains[name]!
            if let desired = claim.desired {
                if desired != claim.installed { operations.append(.defineChain(family, desired)) }
                unclaimedChains.remove(name)
            } else if claim.installed != nil {
                unclaimedChains.insert(name)
            }
            chains[name]!.installed = claim.desired
            if claim.owners.isEmpty { chains[name] = nil }
        }
        var deletions: [NFTOperation] = []
        var additions: [NFTOperation] = []
        for (set, keys) in touchedElements.sorted(by: { $0.key < $1.key }) {
            var deleted: [NFTElement] = []
            var added: [NFTElement] = []
            for key in keys {
                let claim = elements[set]![key]!
                let desired = claim.desired
                if let installed = claim.installed, installed != desired { deleted.append(NFTElement(key: key, value: installed)) }
                if let desired, desired != claim.installed { added.append(NFTElement(key: key, value: desired)) }
                if claim.owners.isEmpty {
                    elements[set]![key] = nil
                } else {
                    elements[set]![key]!.installed = desired
                }
            }
            if !deleted.isEmpty { deletions.append(.deleteElements(family, set: set, deleted)) }
            if !added.isEmpty { additions.append(.addElements(family, set: set, added)) }
        }
        touchedChains = []
        touchedSets = []
        touchedElements = [:]
        return operations + deletions + additions
    }

    mutating func cleanup(_ family: NFTFamily) -> [NFTOperation] {
        defer {
            unclaimedChains = []
            unclaimedSets = []
        }
        return unclaimedChains.sorted().map { .deleteChain(family, $0) } + unclaimedSets.sorted().map { .deleteSet(family, $0) }
    }
}
