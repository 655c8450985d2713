import ProxyAPI
import ProxyModel
import StateStore
import Testing

@testable import ControlServer

/// The fan-out protocol, driven synchronously: no sockets, no store.
@Suite struct BroadcastStateTests {
    func message() -> EncodedMessage { EncodedMessage(bytes: [1, 2, 3]) }

    /// A stream that joined at `revision` and has written its initial message.
    func caughtUp(_ state: inout BroadcastState, _ id: ConnectionID, at revision: Revision) {
        state.joined(id, appliedRevision: revision)
        #expect(state.next(id) == .initialSync(from: revision))
        state.prepared(id, from: revision, to: state.head, message: nil)
        #expect(state.next(id) == .idle)
    }

    @Test func freshStreamStartsWithAnInitialSyncFromItsAppliedRevision() {
        var state = BroadcastState(head: 10)
        state.joined(1, appliedRevision: 0)
        #expect(state.next(1) == .initialSync(from: 0))
        #expect(state.next(1) == .idle, "nothing else while preparing")
        let snapshot = message()
        state.prepared(1, from: 0, to: 10, message: snapshot)
        #expect(state.next(1) == .write(snapshot))
        #expect(state.sentRevision(1) == 10)
        #expect(state.next(1) == .idle)
    }

    @Test func caughtUpStreamsShareTheOnceEncodedDelta() {
        var state = BroadcastState(head: 5)
        for id: ConnectionID in 1...3 { caughtUp(&state, id, at: 5) }
        let delta = message()
        let woken = state.published(from: 5, to: 6, message: delta)
        #expect(Set(woken) == [1, 2, 3])
        for id: ConnectionID in 1...3 {
            guard case .write(let written) = state.next(id) else {
                Issue.record("stream \(id) got nothing")
                continue
            }
            #expect(written === delta, "the same bytes, not a copy per node")
            #expect(state.sentRevision(id) == 6)
        }
    }

    @Test func slowStreamHoldsOneMessageAndCatchesUpWithOneMergedDelta() {
        var state = BroadcastState(head: 5)
        caughtUp(&state, 1, at: 5)
        caughtUp(&state, 2, at: 5)
        // Stream 2's writer takes revision 6 and stalls on a slow socket.
        _ = state.published(from: 5, to: 6, message: message())
        #expect(state.next(1) != .idle)
        guard case .write = state.next(2) else {
            Issue.record("expected a write")
            return
        }
        // Revision 7 fills stream 2's slot; 8 and 9 find it full.
        for revision: UInt64 in 7...9 {
            _ = state.published(from: Revision(revision - 1), to: Revision(revision), message: message())
            guard case .write = state.next(1) else {
            Issue.record("fast stream must not wait")
            return
        }
        }
        #expect(state.sentRevision(1) == 9)
        #expect(state.sentRevision(2) == 7, "one undelivered message, no queue")
        // The slow writer finishes: it writes 7, then asks for a catch-up from 7 to the head.
        guard case .write = state.next(2) else {
            Issue.record("expected the slot")
            return
        }
        #expect(state.next(2) == .catchUp(from: 7))
        let merged = message()
        state.prepared(2, from: 7, to: 9, message: merged)
        #expect(state.next(2) == .write(merged))
        #expect(state.sentRevision(2) == 9)
        #expect(state.next(2) == .idle)
    }

    @Test func revisionsOnAStreamNeverRepeatOrSkip() {
        var state = BroadcastState(head: 0)
        state.joined(1, appliedRevision: 0)
        #expect(state.next(1) == .initialSync(from: 0))
        // Revisions are published while the snapshot is being prepared.
        _ = state.published(from: 0, to: 1, message: message())
        _ = state.published(from: 1, to: 2, message: message())
        // The snapshot was read at revision 1: the stream then needs exactly 1 -> 2.
        state.prepared(1, from: 0, to: 1, message: message())
        guard case .write = state.next(1) else {
            Issue.record("expected the snapshot")
            return
        }
        #expect(state.next(1) == .catchUp(from: 1))
        // A stale preparation (from a revision the stream is no longer at) is dropped.
        state.prepared(1, from: 0, to: 2, message: message())
        #expect(state.sentRevision(1) == 1)
    }

    @Test func streamAheadOfTheBroadcasterSkipsWhatItAlreadyHas() {
        var state = BroadcastState(head: 4)
        state.joined(1, appliedRevision: 0)
        _ = state.next(1)
        // The store had already committed revision 6 when the snapshot was read.
        state.prepared(1, from: 0, to: 6, message: message())
        _ = state.next(1)
        _ = state.published(from: 4, to: 5, message: message())
        #expect(state.next(1) == .idle)
        _ = state.published(from: 5, to: 7, message: message())
        #expect(state.next(1) == .catchUp(from: 6))
    }

    @Test func resyncStartsOverAndLeavingForgetsTheStream() {
        var state = BroadcastState(head: 3)
        caughtUp(&state, 1, at: 3)
        state.resync(1, appliedRevision: 0)
        #expect(state.next(1) == .initialSync(from: 0))
        state.left(1)
        #expect(state.next(1) == .idle)
        #expect(state.published(from: 3, to: 4, message: message()).isEmpty)
        #expect(state.streamCount == 0)
    }

    @Test func failedPreparationIsRetried() {
        var state = BroadcastState(head: 3)
        state.joined(1, appliedRevision: 2)
        #expect(state.next(1) == .initialSync(from: 2))
        state.preparationFailed(1)
        #expect(state.next(1) == .initialSync(from: 2))
    }
}

/// The bytes of an object's wire message, as the store hands them out (`ObjectChange.encoded`).
func wireBytes(_ object: ProxyObject) throws -> [UInt8] {
    switch object {
    case .service(let service): try service.wire.serializedBytes()
    case .endpointSlice(let slice): try slice.wire.serializedBytes()
    case .node(let node): try node.wire.serializedBytes()
    }
}

/// Messages copied together from objects encoded one by one decode as the same messages as
/// protobuf encodes whole.
@Suite struct SyncMessageEncodingTests {
    // A slice of 300 endpoints takes lengths of more than one varint byte.
    let objects = [webService(), webSlice("a", endpoints: 300), webService(port: 8443), webSlice("b", endpoints: 0)]

    @Test func copiedTogetherSnapshotDecodesAsTheWholeMessage() throws {
        let encoded = try SyncMessages.snapshot(
            revision: 300, commitTimeUnixNanos: 1_700_000_000_123_456_789, storeID: "store-1",
            services: objects.filter { $0.kind == .service }.map(wireBytes),
            slices: objects.filter { $0.kind == .endpointSlice }.map(wireBytes))
        let whole = Kubeproxy_V1_ServerMessage.with { message in
            message.snapshot = .with {
                $0.revision = 300
                $0.commitTimeUnixNanos = 1_700_000_000_123_456_789
                $0.storeID = "store-1"
                for object in objects {
                    switch object {
                    case .service(let service): $0.services.append(service.wire)
                    case .endpointSlice(let slice): $0.endpointSlices.append(slice.wire)
                    case .node: Issue.record("no nodes here")
                    }
                }
            }
        }
        #expect(try Kubeproxy_V1_ServerMessage(serializedBytes: encoded.bytes) == whole)
        #expect(encoded.bytes.count == (try whole.serializedBytes() as [UInt8]).count)
    }

    /// Upserts and deletes of both kinds, in the changes' order; a Node's change is left out.
    @Test func copiedTogetherDeltaDecodesAsTheWholeMessage() throws {
        var revised = objects
        for index in revised.indices { revised[index].metadata.revision = Revision(UInt64(40 + index)) }
        let node = ProxyObject.node(Node(metadata: ObjectMeta(namespace: "", name: "node-a"), addresses: [IPAddress("10.0.0.1")!]))
        var changes = try revised.map { ObjectChange(key: $0.key, object: $0, encoded: try wireBytes($0)) }
        changes.insert(ObjectChange(key: ObjectKey(kind: .endpointSlice, namespace: "default", name: "gone"), object: nil, encoded: nil), at: 1)
        changes.append(ObjectChange(key: node.key, object: node, encoded: try wireBytes(node)))
        changes.append(ObjectChange(key: ObjectKey(kind: .service, namespace: "other", name: "gone"), object: nil, encoded: nil))
        let encoded = try SyncMessages.delta(from: 39, to: 300, commitTimeUnixNanos: 1_700_000_000_123_456_789, changes: changes)
        let whole = Kubeproxy_V1_ServerMessage.with { message in
            message.delta = .with {
                $0.fromRevision = 39
                $0.toRevision = 300
                $0.commitTimeUnixNanos = 1_700_000_000_123_456_789
                $0.upserts = revised.map(\.wire)
                $0.deletes = [
                    ObjectKey(kind: .endpointSlice, namespace: "default", name: "gone").wire,
                    ObjectKey(kind: .service, namespace: "other", name: "gone").wire,
                ]
            }
        }
        #expect(try Kubeproxy_V1_ServerMessage(serializedBytes: encoded.bytes) == whole)
        #expect(encoded.bytes.count == (try whole.serializedBytes() as [UInt8]).count)
    }
}
