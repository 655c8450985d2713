import Foundation
import GRPCCore
import Logging
import ProxyAPI
import ProxyGRPC
import ProxyModel
import StateStore

/// The Registry service: admin and automation API. Handlers validate, call the store,
/// convert; status codes are listed in `schema/proto/kubeproxy.proto`.
public struct RegistryService: Kubeproxy_V1_Registry.SimpleServiceProtocol {
    let store: Store
    let tracker: NodeStatusTracker
    let broadcaster: Broadcaster
    let watchHub: WatchHub
    let metrics: ServerMetrics
    let logger: Logger

    static let defaultPageSize = 500
    static let maxPageSize = 5000
    /// The stored bodies of one List page add up to at most this (unless one object alone is
    /// larger), so that a page stays within gRPC's default 4 MiB message limit of clients.
    static let maxPageBytes = 3 << 20
    /// Revisions read from the change log per step while a Watch replays history.
    static let historyBatch = 256

    public init(
        store: Store, tracker: NodeStatusTracker, broadcaster: Broadcaster, watchHub: WatchHub, metrics: ServerMetrics,
        logger: Logger
    ) {
        self.store = store
        self.tracker = tracker
        self.broadcaster = broadcaster
        self.watchHub = watchHub
        self.metrics = metrics
        self.logger = logger
    }

    public func apply(request: Kubeproxy_V1_ApplyRequest, context: ServerContext) async throws -> Kubeproxy_V1_ApplyResponse {
        if request.items.isEmpty { throw RPCError.invalid("items", "required: at least one object") }
        var items: [ApplyItem] = []
        var violations = Violations()
        for (index, item) in request.items.enumerated() {
            do throws(ValidationError) {
                guard item.hasObject else { throw ValidationError(field: "object", message: "required") }
                items.append(
                    ApplyItem(
                        object: try ProxyObject(wire: item.object),
                        expectedRevision: item.hasExpectedRevision ? Revision(item.expectedRevision) : nil))
            } catch {
                violations.merge(error.prefixed("items[\(index)]."))
            }
        }
        try violations.check()
        let started = ContinuousClock.now
        let result = try await store.apply(items, dryRun: request.dryRun)
        if !request.dryRun { metrics.writeDuration.record(ContinuousClock.now - started) }
        return .with {
            $0.revision = result.revision.rawValue
            $0.results = result.objects.map { stored in
                .with {
                    $0.object = stored.object.wire
                    $0.outcome =
                        switch stored.outcome {
                        case .created: .created
                        case .configured: .configured
                        case .unchanged: .unchanged
                        }
                }
            }
        }
    }

    public func get(request: Kubeproxy_V1_GetRequest, context: ServerContext) async throws -> Kubeproxy_V1_GetResponse {
        let key = try ObjectKey(wire: request.ref)
        let (object, head) = try await store.get(key)
        return .with {
            $0.object = object.wire
            $0.revision = head.rawValue
        }
    }

    public func list(request: Kubeproxy_V1_ListRequest, context: ServerContext) async throws -> Kubeproxy_V1_ListResponse {
        guard let kind = ObjectKind(wire: request.kind) else {
            throw RPCError.invalid("kind", "required: one of SERVICE, ENDPOINT_SLICE, NODE")
        }
        let size = request.pageSize == 0 ? Self.defaultPageSize : Int(request.pageSize)
        guard size <= Self.maxPageSize else {
            throw RPCError.invalid("page_size", "must be at most \(Self.maxPageSize), got \(size)")
        }
        let continuation = try request.pageToken.isEmpty ? nil : PageToken.decode(request.pageToken)
        let page = try await store.list(
            kind: kind, namespace: request.namespace.isEmpty ? nil : request.namespace, limit: size, maxBytes: Self.maxPageBytes,
            continuation: continuation)
        return .with {
            $0.objects = page.objects.map(\.wire)
            $0.revision = page.revision.rawValue
            $0.nextPageToken = page.continueToken.map(PageToken.encode) ?? ""
        }
    }

    public func delete(request: Kubeproxy_V1_DeleteRequest, context: ServerContext) async throws -> Kubeproxy_V1_DeleteResponse {
        if request.items.isEmpty { throw RPCError.invalid("items", "required: at least one reference") }
        var items: [DeleteItem] = []
        for (index, item) in request.items.enumerated() {
            do throws(ValidationError) {
                items.append(
                    DeleteItem(
                        key: try ObjectKey(wire: item.ref),
                        expectedRevision: item.hasExpectedRevision ? Revision(item.expectedRevision) : nil))
            } catch {
                throw error.prefixed("items[\(index)].")
            }
        }
        let started = ContinuousClock.now
        let revision = try await store.delete(items, dryRun: request.dryRun)
        if !request.dryRun { metrics.writeDuration.record(ContinuousClock.now - started) }
        return .with { $0.revision = revision.rawValue }
    }

    public func watch(
        request: Kubeproxy_V1_WatchRequest, response: RPCWriter<Kubeproxy_V1_WatchEvent>, context: ServerContext
    ) async throws {
        var kinds = Set<ObjectKind>()
        for (index, wire) in request.kinds.enumerated() {
            guard let kind = ObjectKind(wire: wire) else { throw RPCError.invalid("kinds[\(index)]", "unknown kind") }
            kinds.insert(kind)
        }
        let filter = WatchFilter(kinds: kinds.isEmpty ? Set(ObjectKind.allCases) : kinds, namespace: request.namespace)
        let subscription = watchHub.subscribe()
        let start = request.hasFromRevision ? Revision(request.fromRevision) : try await store.headRevision()
        let stream = WatchStream(response: response, filter: filter)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                // A server-streaming handler is not cancelled when its client goes away.
                try await context.cancellation.cancelled
            }
            group.addTask {
                var last = start
                while true {
                    let batch = try await store.history(after: last, limit: Self.historyBatch)
                    guard let newest = batch.last?.revision else { break }
                    for revision in batch { try await stream.send(revision) }
                    last = newest
                }
                for await revision in subscription.events where revision.revision > last {
                    try await stream.send(revision)
                    last = revision.revision
                }
                if watchHub.unsubscribe(subscription.id) {
                    throw RPCError(
                        code: .resourceExhausted, message: "the watch fell behind at revision \(last); watch again from it")
                }
                throw RPCError(code: .unavailable, message: "the control server is shutting down")
            }
            defer { watchHub.unsubscribe(subscription.id) }
            _ = try await group.next()
            group.cancelAll()
        }
    }

    public func listNodes(request: Kubeproxy_V1_ListNodesRequest, context: ServerContext) async throws -> Kubeproxy_V1_ListNodesResponse {
        let (statuses, head) = try await nodeStatuses(named: nil)
        return .with {
            $0.nodes = statuses.map(\.wire)
            $0.headRevision = head.rawValue
            $0.publishedRevision = broadcaster.head.rawValue
        }
    }

    public func getNode(request: Kubeproxy_V1_GetNodeRequest, context: ServerContext) async throws -> Kubeproxy_V1_GetNodeResponse {
        if request.name.isEmpty { throw RPCError.invalid("name", "required") }
        let (statuses, head) = try await nodeStatuses(named: request.name)
        guard let status = statuses.first else {
            throw StoreError.notFound(ObjectKey(kind: .node, namespace: "", name: request.name))
        }
        return .with {
            $0.node = status.wire
            $0.headRevision = head.rawValue
            $0.publishedRevision = broadcaster.head.rawValue
        }
    }

    public func serverInfo(request: Kubeproxy_V1_ServerInfoRequest, context: ServerContext) async throws -> Kubeproxy_V1_ServerInfoResponse {
        let context = store.configuration.validation
        let head = try await store.headRevision()
        let compacted = try await store.compactedRevision()
        return .with {
            $0.version = BuildInfo.version
            $0.storeID = store.identity
            $0.headRevision = head.rawValue
            $0.oldestRetainedRevision = compacted.rawValue
            $0.serviceCidrs = context.serviceCIDRs.map(\.description)
            $0.nodePortMin = UInt32(context.nodePortRange.lowerBound)
            $0.nodePortMax = UInt32(context.nodePortRange.upperBound)
        }
    }

    /// Persisted statuses overlaid with what this server sees live.
    private func nodeStatuses(named name: String?) async throws -> ([NodeStatus], Revision) {
        let stored = try await store.nodeStatuses(named: name)
        let head = try await store.headRevision()
        let live = tracker.live()
        return (stored.map { live[$0.name] ?? $0 }, head)
    }
}

/// Which changes a watcher asked for.
struct WatchFilter: Sendable {
    var kinds: Set<ObjectKind>
    var namespace: String

    func matches(_ key: ObjectKey) -> Bool {
        kinds.contains(key.kind) && (namespace.isEmpty || key.namespace == namespace)
    }
}

/// Writes the matching part of each revision to one Watch stream.
struct WatchStream: Sendable {
    let response: RPCWriter<Kubeproxy_V1_WatchEvent>
    let filter: WatchFilter

    func send(_ revision: CommittedRevision) async throws {
        let changes = revision.changes.filter { filter.matches($0.key) }
        guard !changes.isEmpty else { return }
        try await response.write(
            .with {
                $0.revision = revision.revision.rawValue
                $0.commitTimeUnixNanos = revision.commitTimeUnixNanos
                $0.changes = changes.map { change in
                    .with {
                        $0.ref = change.key.wire
                        if let object = change.object {
                            $0.type = .put
                            $0.object = object.wire
                        } else {
                            $0.type = .delete
                        }
                    }
                }
            })
    }
}

/// Opaque List continuation tokens: base64 of `revision/namespace/name`.
enum PageToken {
    static func encode(_ continuation: ListContinuation) -> String {
        Data("\(continuation.revision)/\(continuation.afterNamespace)/\(continuation.afterName)".utf8).base64EncodedString()
    }

    static func decode(_ token: String) throws -> ListContinuation {
        guard let data = Data(base64Encoded: token), let text = String(data: data, encoding: .utf8) else {
            throw RPCError.invalid("page_token", "malformed")
        }
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, let revision = UInt64(parts[0]) else { throw RPCError.invalid("page_token", "malformed") }
        return ListContinuation(revision: Revision(revision), afterNamespace: String(parts[1]), afterName: String(parts[2]))
    }
}
