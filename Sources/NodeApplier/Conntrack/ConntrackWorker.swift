import ProxyModel

/// Reads and deletes conntrack flows on a thread of its own: off the applier's executor, so syncs
/// and received changes do not wait for a dump (a quarter of a second at 100k UDP flows), and off
/// the cooperative pool, since netlink blocks.
actor ConntrackWorker {
    private let conntrack: any ConntrackClient
    private let executor = SerialQueueExecutor(label: "node-applier.conntrack")
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    init(_ conntrack: any ConntrackClient) { self.conntrack = conntrack }

    /// The UDP flows of `family` (or only those to `destination`) that are stale as `frontends` say.
    func staleFlows(_ family: IPFamily, to destination: StaleFlows.Frontend?, frontends: StaleFlows.FrontendIndex) throws
        -> [ConntrackFlow]
    {
        try conntrack.udpFlows(family, to: destination) { StaleFlows.isStale($0, in: frontends) }
    }

    func delete(_ flows: [ConntrackFlow]) throws -> Int { try conntrack.delete(flows) }
}
