"""Upgrade: a real control-server opens a database that the JSON-bodies release (efe8a23) wrote
(Tests/StateStoreTests/Fixtures/json-bodies.db), converts it, and serves every object from it,
to Python clients and to a node's snapshot, as that release stored it."""
import os
import queue
import shutil

import grpc

from conftest import ROOT, Server

FIXTURE = os.path.join(ROOT, "Tests", "StateStoreTests", "Fixtures", "json-bodies.db")


def test_a_database_written_with_json_bodies_is_served_after_the_upgrade(stubs, tmp_path):
    pb2, pb2_grpc = stubs
    shutil.copyfile(FIXTURE, os.path.join(tmp_path, "state.db"))
    server = Server(str(tmp_path))
    try:
        channel = grpc.insecure_channel(server.target)
        registry = pb2_grpc.RegistryStub(channel)
        services = {o.service.metadata.name: o.service for o in registry.List(pb2.ListRequest(kind=pb2.SERVICE)).objects}
        slices = {o.endpoint_slice.metadata.name: o.endpoint_slice
                  for o in registry.List(pb2.ListRequest(kind=pb2.ENDPOINT_SLICE)).objects}
        nodes = registry.List(pb2.ListRequest(kind=pb2.NODE)).objects
        assert sorted(services) == ["ext", "headless", "lb", "np", "web"]
        assert sorted(slices) == ["lb-v4", "web-v4", "web-v6"]
        assert [n.node.metadata.name for n in nodes] == ["node-a"]

        web = services["web"]
        assert dict(web.metadata.labels) == {"app": "web", "tier": "front", "zeta": "last"}
        assert len(web.cluster_ips) == 2 and web.session_affinity == "ClientIP"
        assert web.session_affinity_timeout_seconds == 600 and web.traffic_distribution == "PreferSameZone"
        assert [p.target_port_name for p in web.ports][:1] == ["http"]
        lb = services["lb"]
        assert list(lb.load_balancer_ingress_ip_modes) == ["VIP", "Proxy"] and lb.health_check_node_port != 0
        assert list(lb.load_balancer_source_ranges) == ["198.51.100.0/24", "2001:db8:1::/48"]
        assert services["ext"].external_name == "db.example.com"
        assert list(services["headless"].cluster_ips) == ["None"]
        assert slices["web-v4"].metadata.revision == 2 and len(slices["web-v4"].endpoints) == 3
        v6 = slices["web-v6"].endpoints[0].conditions
        assert (v6.ready, v6.serving, v6.terminating) == (False, True, True)

        # Unchanged objects stay unchanged: what was converted is byte for byte what a write stores.
        head = registry.ServerInfo(pb2.ServerInfoRequest()).head_revision
        again = registry.Apply(pb2.ApplyRequest(items=[
            pb2.ApplyItem(object=pb2.Object(service=services[name])) for name in sorted(services)]))
        assert [r.outcome for r in again.results] == [pb2.UNCHANGED] * 5
        assert registry.ServerInfo(pb2.ServerInfoRequest()).head_revision == head

        # A node that joins gets every Service and EndpointSlice as stored.
        outgoing = queue.Queue()
        outgoing.put(pb2.NodeMessage(hello=pb2.Hello(
            node=pb2.Node(metadata=pb2.ObjectMeta(name="node-a"), addresses=["192.168.1.10"]), last_applied_revision=0)))
        responses = pb2_grpc.NodeSyncStub(channel).Sync(iter(outgoing.get, None), timeout=10)
        snapshot = next(responses).snapshot
        assert {s.metadata.name: s for s in snapshot.services} == services
        assert {s.metadata.name: s for s in snapshot.endpoint_slices} == slices
        outgoing.put(None)
        responses.cancel()
        channel.close()
    finally:
        server.stop()
    with open(os.path.join(tmp_path, "server.log")) as log:
        text = log.read()
    assert "converted stored bodies to protobuf" in text, text
