import ProxyModel
import Synchronization

/// One direction of a tracked flow.
public struct ConntrackTuple: Hashable, Sendable, CustomStringConvertible {
    public var source: IPAddress
    public var destination: IPAddress
    /// The IP protocol number.
    public var protocolNumber: UInt8
    public var sourcePort: UInt16
    public var destinationPort: UInt16

    public init(source: IPAddress, destination: IPAddress, protocolNumber: UInt8, sourcePort: UInt16, destinationPort: UInt16) {
        self.source = source
        self.destination = destination
        self.protocolNumber = protocolNumber
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
    }

    /// UDP's protocol number (`IPPROTO_UDP`).
    public static let udp: UInt8 = 17

    public var description: String {
        "\(EndpointTarget(address: source, port: Int(sourcePort))) > \(EndpointTarget(address: destination, port: Int(destinationPort)))"
    }
}

/// A flow in the kernel's connection tracking table: the tuple its first packet had, and the one
/// its answers have. After DNAT the answers come from the endpoint the flow was sent to.
public struct ConntrackFlow: Hashable, Sendable, CustomStringConvertible {
    public var original: ConntrackTuple
    public var reply: ConntrackTuple
    /// The conntrack zone (0 unless a rule put the flow in another).
    public var zone: UInt16
    /// The kernel's id of this entry. A flow that expires and starts again from the same client
    /// port gets another, so a deletion that names it cannot hit the new flow.
    public var id: UInt32

    public init(original: ConntrackTuple, reply: ConntrackTuple, zone: UInt16 = 0, id: UInt32) {
        self.original = original
        self.reply = reply
        self.zone = zone
        self.id = id
    }

    public var description: String { "\(original) (answered by \(EndpointTarget(address: reply.source, port: Int(reply.sourcePort))))" }
}

/// The kernel's connection tracking table, as the stale-flow cleanup uses it.
/// `NetlinkConntrack` talks to the kernel; `FakeConntrack` keeps flows in memory for unit tests.
public protocol ConntrackClient: Sendable {
    /// The tracked UDP flows of one address family, or only those sent to `destination`, that
    /// `include` picks (the others are not kept: a node may track hundreds of thousands).
    func udpFlows(_ family: IPFamily, to destination: StaleFlows.Frontend?, where include: (ConntrackFlow) -> Bool) throws
        -> [ConntrackFlow]
    /// Deletes `flows` (as `udpFlows` returned them: each entry by its id); returns how many the
    /// kernel deleted (a flow may have expired meanwhile).
    func delete(_ flows: [ConntrackFlow]) throws -> Int
}

/// Flows in memory: what the applier's unit tests clean up.
public final class FakeConntrack: ConntrackClient {
    private let flows: Mutex<Set<ConntrackFlow>>
    private let listed = Mutex<[String]>([])
    private let whileListing: (@Sendable () -> Void)?

    /// `whileListing` runs as each listing starts: a test's way to act between a read and what
    /// follows it.
    public init(_ flows: [ConntrackFlow] = [], whileListing: (@Sendable () -> Void)? = nil) {
        self.flows = Mutex(Set(flows))
        self.whileListing = whileListing
    }

    public var tracked: Set<ConntrackFlow> { flows.withLock { $0 } }
    /// The listings asked for, in order: every flow of a family, or the flows to one frontend.
    public var listings: [String] { listed.withLock { $0 } }

    public func udpFlows(_ family: IPFamily, to destination: StaleFlows.Frontend?, where include: (ConntrackFlow) -> Bool) throws
        -> [ConntrackFlow]
    {
        listed.withLock { $0.append(destination.map { "\(EndpointTarget(address: $0.address, port: Int($0.port)))" } ?? family.rawValue) }
        whileListing?()
        return flows.withLock { flows in
            flows.filter { flow in
                let frontend = StaleFlows.Frontend(address: flow.original.destination, port: Int(flow.original.destinationPort))
                return flow.original.protocolNumber == ConntrackTuple.udp && flow.original.destination.family == family
                    && (destination == nil || destination == frontend) && include(flow)
            }
        }
    }

    /// Deletes the flows that are tracked as they are (with the same id, as the kernel does).
    public func delete(_ flows: [ConntrackFlow]) throws -> Int {
        self.flows.withLock { tracked in flows.reduce(0) { $0 + (tracked.remove($1) == nil ? 0 : 1) } }
    }
}
