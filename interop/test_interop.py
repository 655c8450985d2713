"""Any-language automation: the Registry and NodeSync driven from Python's grpcio using
only the .proto, and the transport checked with nghttp2's independent HTTP/2 client."""
import shutil
import struct
import subprocess
import threading
import queue
import time

import grpc
import pytest


def web_service(pb2, port=80):
    return pb2.Object(service=pb2.Service(
        metadata=pb2.ObjectMeta(namespace="default", name="web"),
        ports=[pb2.ServicePort(name="http", protocol=pb2.TCP, port=port, target_port_number=8080)]))


def web_slice(pb2, addresses):
    return pb2.Object(endpoint_slice=pb2.EndpointSlice(
        metadata=pb2.ObjectMeta(namespace="default", name="web-1"), service_name="web", address_type="IPv4",
        ports=[pb2.EndpointPort(name="http", protocol=pb2.TCP, port=8080)],
        endpoints=[pb2.Endpoint(addresses=[a], node_name="node-a") for a in addresses]))


def test_apply_get_list_delete_from_python(registry):
    pb2, stub, _ = registry
    applied = stub.Apply(pb2.ApplyRequest(items=[
        pb2.ApplyItem(object=web_service(pb2)), pb2.ApplyItem(object=web_slice(pb2, ["10.244.1.5"]))]))
    assert applied.revision == 1
    assert [r.outcome for r in applied.results] == [pb2.CREATED, pb2.CREATED]
    cluster_ip = applied.results[0].object.service.cluster_ips[0]
    assert cluster_ip.startswith("10.")

    got = stub.Get(pb2.GetRequest(ref=pb2.ObjectRef(kind=pb2.SERVICE, namespace="default", name="web")))
    assert got.object.service.cluster_ips == [cluster_ip]
    assert got.object.service.metadata.revision == 1

    listed = stub.List(pb2.ListRequest(kind=pb2.ENDPOINT_SLICE))
    assert [o.endpoint_slice.metadata.name for o in listed.objects] == ["web-1"]
    # Unset conditions come back with Kubernetes defaults.
    conditions = listed.objects[0].endpoint_slice.endpoints[0].conditions
    assert (conditions.ready, conditions.serving, conditions.terminating) == (True, True, False)

    deleted = stub.Delete(pb2.DeleteRequest(items=[
        pb2.DeleteItem(ref=pb2.ObjectRef(kind=pb2.ENDPOINT_SLICE, namespace="default", name="web-1"))]))
    assert deleted.revision == 2


def test_status_codes_reach_python_with_field_names(registry):
    pb2, stub, _ = registry
    bad = web_service(pb2, port=0)
    with pytest.raises(grpc.RpcError) as raised:
        stub.Apply(pb2.ApplyRequest(items=[pb2.ApplyItem(object=bad)]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "items[0].spec.ports[0].port" in raised.value.details()

    with pytest.raises(grpc.RpcError) as raised:
        stub.Get(pb2.GetRequest(ref=pb2.ObjectRef(kind=pb2.SERVICE, namespace="default", name="missing")))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND

    stub.Apply(pb2.ApplyRequest(items=[pb2.ApplyItem(object=web_service(pb2))]))
    with pytest.raises(grpc.RpcError) as raised:
        stub.Apply(pb2.ApplyRequest(items=[pb2.ApplyItem(object=web_service(pb2, port=81), expected_revision=0)]))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_dry_run_stores_nothing(registry):
    pb2, stub, _ = registry
    result = stub.Apply(pb2.ApplyRequest(items=[pb2.ApplyItem(object=web_service(pb2))], dry_run=True))
    assert result.results[0].object.service.cluster_ips
    assert stub.ServerInfo(pb2.ServerInfoRequest()).head_revision == 0


def test_watch_stream_from_python(registry):
    pb2, stub, _ = registry
    stub.Apply(pb2.ApplyRequest(items=[pb2.ApplyItem(object=web_service(pb2))]))
    stream = stub.Watch(pb2.WatchRequest(), timeout=10)  # no from_revision: only new changes
    writer = threading.Timer(0.3, lambda: stub.Apply(pb2.ApplyRequest(items=[
        pb2.ApplyItem(object=web_slice(pb2, ["10.244.1.9"]))])))
    writer.start()
    event = next(stream)
    writer.join()  # the Apply finishes before the channel closes
    assert event.revision == 2
    assert event.changes[0].type == pb2.Change.PUT
    assert event.changes[0].object.endpoint_slice.endpoints[0].addresses == ["10.244.1.9"]
    stream.cancel()


def test_node_sync_from_python(registry, stubs):
    pb2, stub, channel = registry
    _, pb2_grpc = stubs
    service = web_service(pb2)
    service.service.metadata.labels.update({"app": "web", "tier": "front"})
    stub.Apply(pb2.ApplyRequest(items=[pb2.ApplyItem(object=service)]))
    sync = pb2_grpc.NodeSyncStub(channel)
    outgoing = queue.Queue()
    outgoing.put(pb2.NodeMessage(hello=pb2.Hello(
        node=pb2.Node(metadata=pb2.ObjectMeta(name="py-node"), addresses=["fd00::5"], zone="z1"),
        last_applied_revision=0)))

    def requests():
        while True:
            message = outgoing.get()
            if message is None:
                return
            yield message

    responses = sync.Sync(requests(), timeout=10)
    first = next(responses)
    assert first.WhichOneof("message") == "snapshot"
    # Revision 2 registered the node itself; the snapshot reflects it.
    assert first.snapshot.revision >= 1
    # Snapshot objects are stored bytes with their revision appended, merged by any parser.
    stored = stub.Get(pb2.GetRequest(ref=pb2.ObjectRef(kind=pb2.SERVICE, namespace="default", name="web")))
    assert stored.object.service.metadata.revision == 1 and len(stored.object.service.metadata.labels) == 2
    assert list(first.snapshot.services) == [stored.object.service]
    outgoing.put(pb2.NodeMessage(ack=pb2.Ack(revision=first.snapshot.revision)))
    node = None
    for _ in range(200):
        node = stub.GetNode(pb2.GetNodeRequest(name="py-node")).node
        if node.applied_revision == first.snapshot.revision:
            break
        time.sleep(0.05)
    assert node.applied_revision == first.snapshot.revision, "the ACK sent from Python shows in GetNode"
    assert node.connected and list(node.addresses) == ["fd00::5"]

    applied = stub.Apply(pb2.ApplyRequest(items=[pb2.ApplyItem(object=web_slice(pb2, ["10.244.1.7"]))]))
    delta = next(responses)
    assert delta.WhichOneof("message") == "delta"
    assert delta.delta.from_revision == first.snapshot.revision
    assert delta.delta.to_revision == applied.revision
    assert [o.endpoint_slice.metadata.name for o in delta.delta.upserts] == ["web-1"]
    outgoing.put(None)
    responses.cancel()


def test_list_pages_fit_grpcs_default_message_limit(registry):
    """A client with gRPC's default 4 MiB receive limit lists 4.7 MB of EndpointSlices: pages end
    by size, not only by count, and together hold every object once."""
    pb2, stub, _ = registry

    def big_slice(index):
        return pb2.Object(endpoint_slice=pb2.EndpointSlice(
            metadata=pb2.ObjectMeta(namespace="big", name=f"big-{index:03}"), service_name=f"big-{index:03}",
            address_type="IPv4", ports=[pb2.EndpointPort(name="http", protocol=pb2.TCP, port=8080)],
            endpoints=[pb2.Endpoint(addresses=[f"10.{index}.{e // 250}.{e % 250 + 1}"], node_name=f"node-{e % 20}")
                       for e in range(1000)]))

    # Applied in parts: an Apply's response echoes its objects, and this client takes 4 MiB.
    for start in range(0, 150, 50):
        stub.Apply(pb2.ApplyRequest(items=[pb2.ApplyItem(object=big_slice(i)) for i in range(start, start + 50)]))
    names, sizes, token = [], [], ""
    while True:
        page = stub.List(pb2.ListRequest(kind=pb2.ENDPOINT_SLICE, namespace="big", page_token=token))
        names += [o.endpoint_slice.metadata.name for o in page.objects]
        sizes.append(page.ByteSize())
        token = page.next_page_token
        if not token:
            break
    assert names == [f"big-{i:03}" for i in range(150)]
    assert len(sizes) > 1 and sum(sizes) > 4 << 20 and max(sizes) <= 4 << 20, sizes


@pytest.mark.skipif(shutil.which("nghttp") is None, reason="nghttp2-client is not installed")
def test_nghttp_speaks_http2_to_the_grpc_port(server, stubs):
    pb2, _ = stubs
    body = pb2.ServerInfoRequest().SerializeToString()
    frame = struct.pack(">BI", 0, len(body)) + body
    path = f"{server.log.name}.request"
    with open(path, "wb") as out:
        out.write(frame)
    result = subprocess.run(
        ["nghttp", "-v", "-n", "-H", ":method: POST", "-H", "content-type: application/grpc", "-H", "te: trailers",
         "-d", path, f"http://{server.target}/kubeproxy.v1.Registry/ServerInfo"],
        capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    log = result.stdout
    assert "recv SETTINGS frame" in log
    assert ":status: 200" in log
    assert "content-type: application/grpc" in log
    assert "grpc-status: 0" in log
    # An unknown method is answered with gRPC's UNIMPLEMENTED (12) in trailers.
    result = subprocess.run(
        ["nghttp", "-v", "-n", "-H", ":method: POST", "-H", "content-type: application/grpc", "-H", "te: trailers",
         "-d", path, f"http://{server.target}/kubeproxy.v1.Registry/Nope"],
        capture_output=True, text=True, timeout=20)
    assert "grpc-status: 12" in result.stdout
