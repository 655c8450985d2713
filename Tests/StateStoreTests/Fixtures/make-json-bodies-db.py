"""Writes json-bodies.db: a database written by a control-server that stored bodies as JSON
(commit efe8a23), for the test of migration 0003_protobuf_bodies. Usage:
    python3 make-json-bodies-db.py OLD_CONTROL_SERVER OUT.db
It applies objects that use every field, updates one and deletes one (so the change log holds
bodies of earlier revisions and a deletion), and copies the database after a clean stop."""
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
binary, out = sys.argv[1], sys.argv[2]
stubs = tempfile.mkdtemp()
well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
proto_dir = os.path.join(ROOT, "schema", "proto")
assert protoc.main(["protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={stubs}",
                    f"--grpc_python_out={stubs}", os.path.join(proto_dir, "kubeproxy.proto")]) == 0
sys.path.insert(0, stubs)
import kubeproxy_pb2 as pb2  # noqa: E402
import kubeproxy_pb2_grpc as pb2_grpc  # noqa: E402

work = tempfile.mkdtemp()
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
server = subprocess.Popen([binary, "--db", os.path.join(work, "state.db"), "--listen", f"127.0.0.1:{port}",
                           "--http-listen", "127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=20)
    registry = pb2_grpc.RegistryStub(channel)

    def meta(name, namespace="shop", **labels):
        return pb2.ObjectMeta(namespace=namespace, name=name, labels=labels)

    def apply(*objects):
        registry.Apply(pb2.ApplyRequest(items=[pb2.ApplyItem(object=o) for o in objects]))

    def slice_(name, service, family, addresses, **extra):
        return pb2.Object(endpoint_slice=pb2.EndpointSlice(
            metadata=meta(name, **{"kubernetes.io/service-name": service}), service_name=service,
            address_type=family, ports=[pb2.EndpointPort(name="http", protocol=pb2.TCP, port=8080),
                                        pb2.EndpointPort(name="dns", protocol=pb2.UDP, port=5353)],
            endpoints=[pb2.Endpoint(addresses=[a], **extra) for a in addresses]))

    apply(
        pb2.Object(service=pb2.Service(
            metadata=meta("web", app="web", tier="front", zeta="last"), type="ClusterIP",
            ip_family_policy="PreferDualStack",
            ports=[pb2.ServicePort(name="http", protocol=pb2.TCP, port=80, target_port_name="http"),
                   pb2.ServicePort(name="dns", protocol=pb2.UDP, port=53, target_port_number=5353),
                   pb2.ServicePort(name="sctp", protocol=pb2.SCTP, port=9000)],
            session_affinity="ClientIP", session_affinity_timeout_seconds=600,
            internal_traffic_policy="Local", traffic_distribution="PreferSameZone")),
        pb2.Object(service=pb2.Service(
            metadata=meta("lb"), type="LoadBalancer", external_traffic_policy="Local",
            ports=[pb2.ServicePort(name="https", protocol=pb2.TCP, port=443, target_port_number=8443)],
            external_ips=["192.0.2.50"], load_balancer_source_ranges=["198.51.100.0/24", "2001:db8:1::/48"],
            load_balancer_ingress_ips=["203.0.113.7", "203.0.113.8"],
            load_balancer_ingress_ip_modes=["VIP", "Proxy"])),
        pb2.Object(service=pb2.Service(
            metadata=meta("np"), type="NodePort", ip_families=["IPv6"],
            ports=[pb2.ServicePort(name="", protocol=pb2.TCP, port=8080, node_port=30080)])),
        pb2.Object(service=pb2.Service(metadata=meta("headless"), cluster_ips=["None"])),
        pb2.Object(service=pb2.Service(metadata=meta("ext"), type="ExternalName", external_name="db.example.com")),
        slice_("web-v4", "web", "IPv4", ["10.244.1.10", "10.244.2.10"], node_name="node-a", zone="zone-a",
               hint_zones=["zone-a"], hint_nodes=["node-a"]),
        slice_("web-v6", "web", "IPv6", ["fd00:10:244:1::10"],
               conditions=pb2.EndpointConditions(ready=False, serving=True, terminating=True)),
        slice_("lb-v4", "lb", "IPv4", ["10.244.1.20"], conditions=pb2.EndpointConditions(ready=True)),
        slice_("gone", "web", "IPv4", ["10.244.3.10"]),
        pb2.Object(node=pb2.Node(metadata=pb2.ObjectMeta(name="node-a"), addresses=["192.168.1.10", "fd00::10"],
                                 zone="zone-a")),
    )
    apply(slice_("web-v4", "web", "IPv4", ["10.244.1.10", "10.244.2.10", "10.244.2.11"], node_name="node-b"))
    registry.Delete(pb2.DeleteRequest(items=[pb2.DeleteItem(
        ref=pb2.ObjectRef(kind=pb2.ENDPOINT_SLICE, namespace="shop", name="gone"))]))
    channel.close()
finally:
    server.terminate()
    server.wait(timeout=10)
database = os.path.join(work, "state.db")
connection = sqlite3.connect(database)
connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
connection.execute("PRAGMA journal_mode=DELETE")
connection.execute("VACUUM")
connection.close()
shutil.copyfile(database, out)
shutil.rmtree(work)
print(f"wrote {out}")
