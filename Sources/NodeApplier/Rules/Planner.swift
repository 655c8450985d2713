import Dispatch
import ProxyModel
import Synchronization

/// Desired versus applied: turns per-service contributions into nft transactions.
///
/// Every chain, set and element is *claimed* by the services that contribute it; one claim (the
/// holder's) is installed. Shared objects (`pick-N` chains, hairpin pairs) live as long as anyone
/// claims them; a frontend two services claim is installed once. An update touches only what the
/// changed services claim, so its cost does not grow with the number of services.
///
/// Memory: the planner holds hundreds of thousands of element claims, so an element claim is a
/// packed key and a service number, and element values are not kept: the installed value of an
/// element is its holder's contribution, which the caller can always derive again.
public struct Planner: Sendable {
    public let tableName: String
    private let base: [NFTFamily: NFTTable]
    private var families: [NFTFamily: any FamilyClaims] = [:]
    private var serviceIDs = ServiceIDs()
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

    /// Plans a complete ruleset; `transaction` replaces both families' tables with it.
    /// `contributions`, and those of every later `update`, are derived for `affinityShards`.
    public static func full(
        tableName: String, node: NodeConfig, affinityShards: Layout.AffinityShards,
        contributions: [ServiceName: [NFTFamily: Contribution]]
    ) -> (planner: Planner, transaction: NFTTransaction) {
        var planner = Planner(tableName: tableName, node: node, affinityShards: affinityShards)
        var tables = planner.base
        // Services in name order; a service's number is its place in that order.
        var elements: [NFTFamily: [String: [ClaimedElements]]] = [:]
        for (service, contribution) in contributions.sorted(by: { $0.key < $1.key }) {
            guard contribution.values.contains(where: { !$0.isEmpty }) else { continue }
            let id = planner.serviceIDs.id(service)
            for (family, part) in contribution {
                planner.families[family]!.installObjects(id, part, planner.serviceIDs, into: &tables[family]!)
                for (set, entries) in part.elements {
                    elements[family, default: [:]][set, default: []].append(ClaimedElements(id: id, entries: entries))
                }
            }
            planner.serviceCount += 1
        }
        for (family, sets) in elements { planner.families[family]!.installElements(sets, into: &tables[family]!) }
        let operations = NFTFamily.allCases.map { NFTOperation.replaceTable(tables[$0]!) }
        return (planner, NFTTransaction(table: tableName, operations: operations))
    }

    private init(tableName: String, node: NodeConfig, affinityShards: Layout.AffinityShards) {
        self.tableName = tableName
        base = Dictionary(
            uniqueKeysWithValues: NFTFamily.allCases.map {
                ($0, Layout.baseTable(family: $0, name: tableName, node: node, affinityShards: affinityShards))
            })
        // An IPv4 table's keys fit 16 bytes; IPv6 addresses alone take 16.
        families = [.ip: FamilyState<Bytes16>(), .ip6: FamilyState<Bytes32>()]
    }

    /// Chains and sets the kernel should hold once pending deletions ran.
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
    ///
    /// `current` derives the contribution of a service that did not change; it is asked only for
    /// the value of an element another, changed service shares with it.
    public mutating func update(
        _ changes: [ServiceName: Change], current: (ServiceName) -> [NFTFamily: Contribution]
    ) -> NFTTransaction? {
        for (service, change) in changes { claim(service, old: change.old, new: change.new) }
        var unchanged: [ServiceName: [NFTFamily: Contribution]] = [:]
        var operations: [NFTOperation] = []
        for family in NFTFamily.allCases {
            guard let familyOperations = families[family]!.reconcile(family) else { return nil }
            operations += familyOperations
            operations += families[family]!.updateElements(changes, family, &serviceIDs) { service, set, key, old in
                if let change = changes[service] { return (old ? change.old : change.new)[family]?.elements[set]?[key] }
                if unchanged[service] == nil { unchanged[service] = current(service) }
                return unchanged[service]![family]?.elements[set]?[key]
            }
        }
        for (service, change) in changes where !change.new.values.contains(where: { !$0.isEmpty }) {
            serviceIDs.release(service)
        }
        return NFTTransaction(table: tableName, operations: operations)
    }

    /// Frontends whose verdict names the `pick-N` chain of an earlier endpoint count, or that wait
    /// in a pending set: their connections find their endpoints through the scan chain (see
    /// `Layout`) until `rehome()`.
    public var awayFrontends: Int { families.values.reduce(0) { $0 + $1.awayCount } }

    /// The transaction that sends every away frontend to the `pick-N` chain of its endpoint count,
    /// or deletes it where nothing is desired. The kernel validates the whole table for it (10–20 ms
    /// at 50k services), once for all of them. After a failure the planner must be discarded.
    public mutating func rehome() -> NFTTransaction {
        NFTTransaction(table: tableName, operations: NFTFamily.allCases.flatMap { families[$0]!.rehome($0) })
    }

    /// Deletes chains and sets that nobody claims any more (a separate, later transaction: the
    /// elements that referenced them are gone by then).
    public mutating func cleanup() -> NFTTransaction {
        var operations: [NFTOperation] = []
        for family in NFTFamily.allCases { operations += families[family]!.cleanup(family) }
        return NFTTransaction(table: tableName, operations: operations)
    }

    private mutating func claim(_ service: ServiceName, old: [NFTFamily: Contribution], new: [NFTFamily: Contribution]) {
        let had = old.values.contains { !$0.isEmpty }
        let has = new.values.contains { !$0.isEmpty }
        guard had || has else { return }
        let id = serviceIDs.id(service)
        for family in Set(old.keys).union(new.keys) {
            families[family]!.claim(id, old: old[family] ?? Contribution(), new: new[family] ?? Contribution(), serviceIDs)
        }
        serviceCount += (has ? 1 : 0) - (had ? 1 : 0)
    }
}

/// Claims of one chain or set by several services, and which value the kernel holds. Claimants
/// are grouped by the value they claim: a `pick-N` chain has tens of thousands of claimants and
/// one value, kept once.
struct Claim<Value: Hashable & Sendable>: Sendable {
    private var claimants: [Value: Set<UInt32>] = [:]
    private var holder: UInt32?
    var installed: Value?

    var isEmpty: Bool { claimants.isEmpty }
    var desired: Value? { holder.flatMap(value(of:)) }

    private func value(of id: UInt32) -> Value? { claimants.first { $0.value.contains(id) }?.key }

    /// `id` now claims `value` (nil: nothing). A leaving holder hands over to the claimant with the
    /// smallest name.
    mutating func set(_ id: UInt32, _ value: Value?, _ ids: ServiceIDs) {
        if let previous = self.value(of: id) {
            claimants[previous]!.remove(id)
            if claimants[previous]!.isEmpty { claimants[previous] = nil }
        }
        if let value { claimants[value, default: []].insert(id) }
        if value != nil, holder == nil { holder = id }
        if value == nil, holder == id { holder = claimants.values.joined().min { ids.names[Int($0)] < ids.names[Int($1)] } }
    }
}

/// Small numbers for the services that claim anything (claims store them instead of names).
struct ServiceIDs: Sendable {
    private var ids: [ServiceName: UInt32] = [:]
    private(set) var names: [ServiceName] = []
    private var free: [UInt32] = []

    mutating func id(_ service: ServiceName) -> UInt32 {
        if let id = ids[service] { return id }
        let id: UInt32
        if let reused = free.popLast() {
            id = reused
            names[Int(id)] = service
        } else {
            id = UInt32(names.count)
            names.append(service)
        }
        ids[service] = id
        return id
    }

    mutating func release(_ service: ServiceName) {
        guard let id = ids.removeValue(forKey: service) else { return }
        free.append(id)
    }
}

/// An element key as the planner stores it: packed in the family's key width, so that claiming
/// an element allocates nothing. A key that does not pack keeps its tuple, out of line: the
/// planner's dictionaries hold a key per element, and a tuple is twice the width of a packed
/// IPv4 key.
enum ElementKey<Storage: KeyBytes>: Hashable, Sendable {
    case packed(PackedValues<Storage>)
    indirect case boxed(NFTTuple)

    init(_ tuple: NFTTuple) {
        if let packed = tuple.packed(as: Storage.self) { self = .packed(packed) } else { self = .boxed(tuple) }
    }
}

/// One service's elements of one set, as a full plan claims them.
struct ClaimedElements: Sendable {
    var id: UInt32
    var entries: [NFTTuple: NFTTuple]
}

/// A changed element: its key as the contributions spell it and the service holding it before.
struct TouchedElement {
    var key: NFTTuple
    var holderBefore: UInt32?
}

/// A verdict-map element the kernel holds with another value than its holder's: the `pick-N`
/// chain of an earlier endpoint count, or the scan chain, which stands for the key in the map's
/// pending set (see `Layout`). No desired value: the frontend has no endpoints, or nobody claims
/// it, any more.
struct AwayElement: Sendable {
    var key: NFTTuple
    var installed: NFTTuple
    var desired: NFTTuple?

    /// Where the kernel holds `installed` for a key of `map`: the scan chain is the key's place in
    /// the map's pending set (the map does not have the key).
    static func place(_ key: NFTTuple, _ installed: NFTTuple, in map: String) -> (set: String, element: NFTElement) {
        if let pending = Layout.pendingSet(of: map), let pick = Layout.pick(of: installed), pick.chain == nil {
            return (pending, NFTElement(key: key))
        }
        return (map, NFTElement(key: key, value: installed))
    }
}

/// The claims of one family's table, as the planner drives them (the key width is the family's).
protocol FamilyClaims: Sendable {
    var chains: [String: Claim<NFTChain>] { get }
    var sets: [String: Claim<NFTSetDefinition>] { get }
    mutating func claim(_ id: UInt32, old: Contribution, new: Contribution, _ ids: ServiceIDs)
    mutating func installObjects(_ id: UInt32, _ contribution: Contribution, _ ids: ServiceIDs, into table: inout NFTTable)
    mutating func installElements(_ sets: [String: [ClaimedElements]], into table: inout NFTTable)
    mutating func reconcile(_ family: NFTFamily) -> [NFTOperation]?
    mutating func cleanup(_ family: NFTFamily) -> [NFTOperation]
    var awayCount: Int { get }
    mutating func rehome(_ family: NFTFamily) -> [NFTOperation]
    mutating func updateElements(
        _ changes: [ServiceName: Planner.Change], _ family: NFTFamily, _ ids: inout ServiceIDs,
        value: (ServiceName, String, NFTTuple, Bool) -> NFTTuple?
    ) -> [NFTOperation]
}

struct FamilyState<Storage: KeyBytes>: FamilyClaims {
    typealias Key = ElementKey<Storage>

    var chains: [String: Claim<NFTChain>] = [:]
    var sets: [String: Claim<NFTSetDefinition>] = [:]
    /// One service claiming each element, by set; `coOwners` lists the others of shared elements.
    /// The holder (whose value is installed) is the claimant with the smallest name, as in a full plan.
    private var owners: [String: [Key: UInt32]] = [:]
    private var coOwners: [String: [Key: [UInt32]]] = [:]
    /// Elements installed with another value than their holder's, by set.
    private var away: [String: [Key: AwayElement]] = [:]
    private var touchedChains: Set<String> = []
    private var touchedSets: Set<String> = []
    private var unclaimedChains: Set<String> = []
    private var unclaimedSets: Set<String> = []

    /// Chain and set claims; element claims are `claimElements`.
    mutating func claim(_ id: UInt32, old: Contribution, new: Contribution, _ ids: ServiceIDs) {
        for name in Set(old.chains.keys).union(new.chains.keys) where old.chains[name] != new.chains[name] {
            chains[name, default: Claim()].set(id, new.chains[name], ids)
            touchedChains.insert(name)
        }
        for name in Set(old.sets.keys).union(new.sets.keys) where old.sets[name] != new.sets[name] {
            sets[name, default: Claim()].set(id, new.sets[name], ids)
            touchedSets.insert(name)
        }
    }

    /// The chain and set claims of a full plan, which the kernel will hold as planned: the first
    /// claim of each object is installed (services come in name order).
    mutating func installObjects(_ id: UInt32, _ contribution: Contribution, _ ids: ServiceIDs, into table: inout NFTTable) {
        for (name, chain) in contribution.chains {
            chains[name, default: Claim()].set(id, chain, ids)
            chains[name]!.installed = chains[name]!.desired
            table.chains[name] = chains[name]!.installed
        }
        for (name, set) in contribution.sets {
            sets[name, default: Claim()].set(id, set, ids)
            sets[name]!.installed = sets[name]!.desired
            table.sets[name] = sets[name]!.installed
        }
    }

    /// The element claims of a full plan, by set (each set's claimants in name order; the first
    /// claim of an element is installed). Sets are independent, so they are planned on every core,
    /// the largest first (the endpoint slot maps: one element per endpoint).
    ///
    /// Specialized per key width, as `updateElements` is: called through `any FamilyClaims`, the
    /// generic version drives the element dictionaries through witnesses (planner + table at 50k
    /// services: 1.91 / 2.21 s instead of 1.30 / 1.31 s).
    @specialized(where Storage == Bytes16)
    @specialized(where Storage == Bytes32)
    mutating func installElements(_ sets: [String: [ClaimedElements]], into table: inout NFTTable) {
        let order = sets.map { (set: $0.key, claims: $0.value, count: $0.value.reduce(0) { $0 + $1.entries.count }) }
            .sorted { $0.count > $1.count }
        let planned = Mutex([String: (owners: [Key: UInt32], coOwners: [Key: [UInt32]], installed: [NFTTuple: NFTTuple])]())
        DispatchQueue.concurrentPerform(iterations: order.count) { index in
            // Room for every claim up front: a growing dictionary rehashes every key at each doubling.
            var owners: [Key: UInt32] = Dictionary(minimumCapacity: order[index].count)
            var coOwners: [Key: [UInt32]] = [:]
            var installed: [NFTTuple: NFTTuple] = Dictionary(minimumCapacity: order[index].count)
            for claim in order[index].claims {
                for (key, value) in claim.entries {
                    let packed = Key(key)
                    if owners.insertIfAbsent(claim.id, forKey: packed) {
                        installed[key] = value
                    } else {
                        coOwners[packed, default: []].append(claim.id)
                    }
                }
            }
            planned.withLock { $0[order[index].set] = (owners, coOwners, installed) }
        }
        // Moved out, so that every dictionary stays uniquely referenced for later updates.
        let results = planned.withLock { planned in
            defer { planned = [:] }
            return planned
        }
        for (set, result) in results {
            owners[set] = result.owners
            if !result.coOwners.isEmpty { coOwners[set] = result.coOwners }
            table.elements[set] = result.installed
        }
    }

    /// The set and chain operations for everything touched since the last call, in an order the
    /// kernel accepts; nil when a set's definition changed.
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
            if claim.isEmpty { sets[name] = nil }
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
            if claim.isEmpty { chains[name] = nil }
        }
        touchedChains = []
        touchedSets = []
        return operations
    }

    mutating func cleanup(_ family: NFTFamily) -> [NFTOperation] {
        defer {
            unclaimedChains = []
            unclaimedSets = []
        }
        return unclaimedChains.sorted().map { .deleteChain(family, $0) } + unclaimedSets.sorted().map { .deleteSet(family, $0) }
    }

    var awayCount: Int { away.values.reduce(0) { $0 + $1.count } }

    /// One operation per set of `elements`, in the sets' order.
    private func operations(_ elements: [String: [NFTElement]], _ make: (String, [NFTElement]) -> NFTOperation) -> [NFTOperation] {
        elements.sorted { $0.key < $1.key }.map { make($0.key, $0.value) }
    }

    mutating func rehome(_ family: NFTFamily) -> [NFTOperation] {
        defer { away = [:] }
        let sets = away.sorted { $0.key < $1.key }
        var deleted: [String: [NFTElement]] = [:]
        for (set, elements) in sets {
            for element in elements.values {
                let place = AwayElement.place(element.key, element.installed, in: set)
                deleted[place.set, default: []].append(place.element)
            }
        }
        return operations(deleted) { .deleteElements(family, set: $0, $1) }
            + sets.compactMap { set, elements in
                let added = elements.values.compactMap { element in element.desired.map { NFTElement(key: element.key, value: $0) } }
                return added.isEmpty ? nil : .addElements(family, set: set, added)
            }
    }

    /// Records the element claims the changes add and remove, and returns the deletions and
    /// additions that bring touched elements from their installed value to their holder's new
    /// one. `value(service, set, key, old)` is a claimant's old or new value.
    ///
    /// A verdict that only moves a frontend to the `pick-N` chain of its new endpoint count, or that
    /// goes because the frontend has no endpoints left, is left as it is (see `Layout`): the element
    /// is away until `rehome`, or until its count is the installed one's again. A new `pick-N`
    /// verdict goes into the map's pending set instead, away too.
    @specialized(where Storage == Bytes16)
    @specialized(where Storage == Bytes32)
    mutating func updateElements(
        _ changes: [ServiceName: Planner.Change], _ family: NFTFamily, _ ids: inout ServiceIDs,
        value: (ServiceName, String, NFTTuple, Bool) -> NFTTuple?
    ) -> [NFTOperation] {
        let touched = claimElements(changes, family, &ids)
        return elementOperations(touched, family, ids, value: value)
    }

    /// Records the element claims the changes add and remove; returns the elements touched, by set.
    private mutating func claimElements(
        _ changes: [ServiceName: Planner.Change], _ family: NFTFamily, _ ids: inout ServiceIDs
    ) -> [String: [Key: TouchedElement]] {
        var touched: [String: [Key: TouchedElement]] = [:]
        for (service, change) in changes {
            let old = change.old[family]?.elements ?? [:]
            let new = change.new[family]?.elements ?? [:]
            for set in Set(old.keys).union(new.keys) {
                let before = old[set] ?? [:]
                let after = new[set] ?? [:]
                for key in Set(before.keys).union(after.keys) where before[key] != after[key] {
                    let packed = Key(key)
                    if touched[set]?[packed] == nil {
                        touched[set, default: [:]][packed] = TouchedElement(key: key, holderBefore: holder(set, packed, ids))
                    }
                    if before[key] == nil {
                        addOwner(ids.id(service), set, packed)
                    } else if after[key] == nil {
                        removeOwner(ids.id(service), set, packed)
                    }
                }
            }
        }
        return touched
    }

    private mutating func elementOperations(
        _ touched: [String: [Key: TouchedElement]], _ family: NFTFamily, _ ids: ServiceIDs,
        value: (ServiceName, String, NFTTuple, Bool) -> NFTTuple?
    ) -> [NFTOperation] {
        var deletions: [NFTOperation] = []
        var additions: [NFTOperation] = []
        for (set, elements) in touched.sorted(by: { $0.key < $1.key }) {
            let pending = Layout.pendingSet(of: set)
            var deleted: [String: [NFTElement]] = [:]
            var added: [String: [NFTElement]] = [:]
            for (packed, element) in elements {
                let installed =
                    away[set]?[packed]?.installed ?? element.holderBefore.flatMap { value(ids.names[Int($0)], set, element.key, true) }
                let desired = holder(set, packed, ids).flatMap { value(ids.names[Int($0)], set, element.key, false) }
                if let installed, installed != desired, let scan = Layout.pick(of: installed)?.scan,
                    desired.map({ Layout.pick(of: $0)?.scan == scan }) ?? true
                {
                    away[set, default: [:]][packed] = AwayElement(key: element.key, installed: installed, desired: desired)
                    continue
                }
                if away[set]?.removeValue(forKey: packed) != nil, away[set]!.isEmpty { away[set] = nil }
                if let installed, installed != desired {
                    let place = AwayElement.place(element.key, installed, in: set)
                    deleted[place.set, default: []].append(place.element)
                }
                guard let desired, desired != installed else { continue }
                if let pick = Layout.pick(of: desired), let pending {
                    // The verdict waits for the rehome: the scan chain finds the slots meanwhile.
                    away[set, default: [:]][packed] = AwayElement(
                        key: element.key, installed: NFTTuple().appending(.verdict(.goto(pick.scan))), desired: desired)
                    added[pending, default: []].append(NFTElement(key: element.key))
                } else {
                    added[set, default: []].append(NFTElement(key: element.key, value: desired))
                }
            }
            deletions += operations(deleted) { .deleteElements(family, set: $0, $1) }
            additions += operations(added) { .addElements(family, set: $0, $1) }
        }
        return deletions + additions
    }

    private func holder(_ set: String, _ key: Key, _ ids: ServiceIDs) -> UInt32? {
        guard let first = owners[set]?[key] else { return nil }
        guard let others = coOwners[set]?[key] else { return first }
        return ([first] + others).min { ids.names[Int($0)] < ids.names[Int($1)] }
    }

    private mutating func addOwner(_ id: UInt32, _ set: String, _ key: Key) {
        if owners[set]?[key] == nil {
            owners[set, default: [:]][key] = id
        } else {
            coOwners[set, default: [:]][key, default: []].append(id)
        }
    }

    private mutating func removeOwner(_ id: UInt32, _ set: String, _ key: Key) {
        var others = coOwners[set]?[key] ?? []
        if let index = others.firstIndex(of: id) {
            others.remove(at: index)
        } else if owners[set]?[key] == id {
            owners[set]![key] = others.popLast()
        }
        coOwners[set]?[key] = others.isEmpty ? nil : others
        if coOwners[set]?.isEmpty == true { coOwners[set] = nil }
    }
}

extension Dictionary {
    /// Stores `value` unless `key` is present, with one lookup (a check, then a store, hash the
    /// key twice); returns whether it stored.
    mutating func insertIfAbsent(_ value: Value, forKey key: Key) -> Bool {
        var inserted = false
        Self.access(&self[key, default: { inserted = true; return value }()])
        return inserted
    }

    private static func access(_: inout Value) {}
}
