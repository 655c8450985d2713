"""Whole-command tests of proxyctl against a real control-server: command line in, full
output and exit code out."""
import json
import os
import subprocess
import textwrap

import yaml

from conftest import ROOT

PROXYCTL = os.environ.get("PROXYCTL", os.path.join(ROOT, ".build", "debug", "proxyctl"))

# A Service and EndpointSlice as `kubectl get -o yaml` prints them from a real cluster.
CLUSTER_EXPORT = textwrap.dedent("""\
    apiVersion: v1
    kind: Service
    metadata:
      annotations:
        kubectl.kubernetes.io/last-applied-configuration: '{"apiVersion":"v1","kind":"Service"}'
      creationTimestamp: "2025-06-01T12:00:00Z"
      labels: {app: db}
      managedFields:
      - apiVersion: v1
        fieldsType: FieldsV1
        manager: kubectl-client-side-apply
        operation: Update
      name: db
      namespace: default
      resourceVersion: "48213"
      uid: 0b7d6c0e-7c1b-4b9f-9a51-2f0c0e7f3c11
    spec:
      clusterIP: 10.96.0.50
      clusterIPs: [10.96.0.50]
      internalTrafficPolicy: Cluster
      ipFamilies: [IPv4]
      ipFamilyPolicy: SingleStack
      ports:
      - {name: pg, port: 5432, protocol: TCP, targetPort: pg}
      selector: {app: db}
      sessionAffinity: None
      type: ClusterIP
    status:
      loadBalancer: {}
    ---
    addressType: IPv4
    apiVersion: discovery.k8s.io/v1
    endpoints:
    - addresses: [10.244.1.5]
      conditions: {ready: true, serving: true, terminating: false}
      nodeName: node-a
      targetRef: {kind: Pod, name: db-0, namespace: default, uid: 1a2b}
      zone: zone-a
    kind: EndpointSlice
    metadata:
      generateName: db-
      generation: 1
      labels:
        endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
        kubernetes.io/service-name: db
      name: db-x7k2p
      namespace: default
      ownerReferences:
      - {apiVersion: v1, kind: Service, name: db, uid: 0b7d6c0e}
      resourceVersion: "48214"
    ports:
    - {name: pg, port: 5432, protocol: TCP}
    """)


def run(server, *args, stdin=None):
    result = subprocess.run([PROXYCTL, "--server", server.target, *args] if args and args[0] not in ("completion",)
                            else [PROXYCTL, *args], input=stdin, capture_output=True, text=True, timeout=90)
    return result.returncode, result.stdout, result.stderr


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_apply_accepts_real_cluster_exports_and_is_idempotent(server, tmp_path):
    path = write(tmp_path, "db.yaml", CLUSTER_EXPORT)
    assert run(server, "apply", "-f", path) == (
        0, "service/db created\nendpointslice.discovery.k8s.io/db-x7k2p created\n", "")
    assert run(server, "apply", "-f", path) == (
        0, "service/db unchanged\nendpointslice.discovery.k8s.io/db-x7k2p unchanged\n", "")
    code, out, _ = run(server, "get", "svc")
    assert code == 0
    assert out == ("NAME   TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)    REVISION\n"
                   "db     ClusterIP   10.96.0.50   <none>        5432/TCP   1\n")
    code, out, _ = run(server, "get", "eps")
    assert out == ("NAME       ADDRESSTYPE   PORTS   ENDPOINTS    REVISION\n"
                   "db-x7k2p   IPv4          5432    10.244.1.5   1\n")


def test_every_output_format(server, tmp_path):
    run(server, "apply", "-f", write(tmp_path, "db.yaml", CLUSTER_EXPORT))
    assert run(server, "get", "svc", "-o", "name") == (0, "service/db\n", "")
    assert run(server, "get", "eps", "-o", "name") == (0, "endpointslice.discovery.k8s.io/db-x7k2p\n", "")
    code, out, _ = run(server, "get", "svc", "db", "-o", "json")
    service = json.loads(out)
    assert code == 0 and service["kind"] == "Service" and service["spec"]["clusterIP"] == "10.96.0.50"
    assert service["metadata"]["resourceVersion"] == "1"
    code, out, _ = run(server, "get", "eps", "-o", "yaml")
    document = yaml.safe_load(out)
    assert document["kind"] == "EndpointSlice"
    assert document["endpoints"][0]["addresses"] == ["10.244.1.5"]
    code, out, _ = run(server, "get", "svc", "-o", "wide")
    assert out.splitlines()[0].split() == [
        "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "IP-FAMILIES", "AFFINITY", "POLICY", "REVISION"]
    code, out, _ = run(server, "get", "svc", "-A")
    assert out.splitlines()[1].split()[:2] == ["default", "db"]
    # What `get -o yaml` prints applies back unchanged.
    code, out, _ = run(server, "get", "svc", "db", "-o", "yaml")
    assert run(server, "apply", "-f", "-", stdin=out) == (0, "service/db unchanged\n", "")


def test_multi_document_list_directory_and_legacy_endpoints(server, tmp_path):
    directory = tmp_path / "manifests"
    directory.mkdir()
    (directory / "a.yaml").write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: List
        items:
        - {apiVersion: v1, kind: Service, metadata: {name: web}, spec: {type: NodePort, ports: [{port: 80}]}}
        - {apiVersion: v1, kind: Service, metadata: {name: api}, spec: {ports: [{port: 8080}]}}
        """))
    (directory / "b.json").write_text(json.dumps({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
        "subsets": [{"addresses": [{"ip": "10.244.0.7"}], "ports": [{"port": 80}]}]}))
    (directory / "notes.txt").write_text("ignored")
    code, out, err = run(server, "apply", "-f", str(directory))
    assert (code, err) == (0, "")
    assert out == ("service/web created\nservice/api created\n"
                   "endpointslice.discovery.k8s.io/web-legacy-0-v4 created\n")
    code, out, _ = run(server, "get", "svc", "web")
    assert "NodePort" in out and ":3" in out  # an allocated NodePort is shown as 80:3xxxx/TCP


def test_dry_run_stores_nothing(server, tmp_path):
    path = write(tmp_path, "db.yaml", CLUSTER_EXPORT)
    assert run(server, "apply", "-f", path, "--dry-run=server") == (
        0, "service/db created (server dry run)\nendpointslice.discovery.k8s.io/db-x7k2p created (server dry run)\n", "")
    assert run(server, "get", "svc") == (0, "", "No resources found in default namespace.\n")


def test_errors_name_file_document_object_and_field_and_store_nothing(server, tmp_path):
    bad_port = CLUSTER_EXPORT.replace("port: 5432, protocol: TCP, targetPort: pg", "port: 70000, protocol: TCP, targetPort: pg")
    path = write(tmp_path, "db.yaml", bad_port)
    assert run(server, "apply", "-f", path) == (
        1, "", f"error: {path}: document 1 (Service default/db): spec.ports[0].port: must be between 1 and 65535, got 70000\n")
    # Valid locally, refused by the server: the message still points into the file.
    outside = CLUSTER_EXPORT.replace("clusterIP: 10.96.0.50\n  clusterIPs: [10.96.0.50]", "clusterIP: 192.168.0.1")
    path = write(tmp_path, "outside.yaml", outside)
    assert run(server, "apply", "-f", path) == (
        1, "", f"error: invalid: {path}: document 1 (Service default/db): spec.clusterIPs[0]: "
               "192.168.0.1 is not in the service CIDR 10.96.0.0/12\n")
    typo = CLUSTER_EXPORT.replace("  selector:", "  selectr:")
    path = write(tmp_path, "typo.yaml", typo)
    assert run(server, "apply", "-f", path)[2] == (
        f"error: {path}: document 1 (Service default/db): spec.selectr: unknown or unsupported field\n")
    path = write(tmp_path, "pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
    code, _, err = run(server, "apply", "-f", path)
    assert code == 1 and "document 1: unsupported kind v1 Pod" in err
    # Nothing of the failed applies was stored.
    assert run(server, "get", "svc")[1] == ""
    assert run(server, "get", "svc", "nope") == (1, "", "error: not found: Service default/nope not found\n")


def test_delete_by_name_and_by_file(server, tmp_path):
    path = write(tmp_path, "db.yaml", CLUSTER_EXPORT)
    run(server, "apply", "-f", path)
    assert run(server, "delete", "eps", "db-x7k2p") == (0, "endpointslice.discovery.k8s.io/db-x7k2p deleted\n", "")
    assert run(server, "delete", "-f", path) == (1, "", "error: not found: EndpointSlice default/db-x7k2p not found\n")
    assert run(server, "delete", "svc", "db") == (0, "service/db deleted\n", "")


def test_usage_errors_exit_2_and_unreachable_server_exits_1(server):
    code, _, err = run(server, "get", "pods")
    assert code == 2 and 'unknown type "pods"' in err
    code, _, err = run(server, "apply")
    assert code == 2 and "-f/--filename: required" in err
    result = subprocess.run([PROXYCTL, "--server", "127.0.0.1:1", "--timeout", "2", "get", "svc"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "cannot reach the control server at 127.0.0.1:1" in result.stderr


def test_version_and_nodes(server, stubs):
    code, out, _ = run(server, "version")
    assert code == 0 and out.startswith("Client Version: 0.1.0\nServer Version: 0.1.0\n")
    assert run(server, "get", "nodes") == (0, "NAME   CONNECTED   APPLIED   HEAD   LAG   LAST-SEEN   ERROR\n", "")


def test_completion_scripts(server):
    for shell, marker in [("bash", "proxyctl"), ("zsh", "#compdef proxyctl"), ("fish", "proxyctl")]:
        code, out, _ = run(server, "completion", shell)
        assert code == 0 and marker in out and "apply" in out


def test_create_service_and_set_endpoints(server):
    assert run(server, "create", "service", "nodeport", "web", "--tcp", "80:8080", "--tcp", "443") == (
        0, "service/web created\n", "")
    assert run(server, "create", "service", "nodeport", "web", "--tcp", "80") == (
        1, "", 'error: service "web" already exists in namespace default\n')
    code, _, err = run(server, "create", "service", "clusterip", "x", "--tcp", "0")
    assert code == 2 and 'port "0"' in err
    assert run(server, "set", "endpoints", "web", "10.244.1.5", "10.244.1.6:9090", "fd00::7") == (0, (
        "endpointslice.discovery.k8s.io/web-manual-v4-8080 created\n"
        "endpointslice.discovery.k8s.io/web-manual-v4-9090 created\n"
        "endpointslice.discovery.k8s.io/web-manual-v6-8080 created\n"), "")
    assert run(server, "set", "endpoints", "web", "10.244.1.5") == (0, (
        "endpointslice.discovery.k8s.io/web-manual-v4-8080 unchanged\n"
        "endpointslice.discovery.k8s.io/web-manual-v4-9090 deleted\n"
        "endpointslice.discovery.k8s.io/web-manual-v6-8080 deleted\n"), "")
    code, out, _ = run(server, "describe", "svc", "web")
    assert code == 0
    assert "Type:                    NodePort\n" in out
    assert "TargetPort:              8080/TCP\n" in out
    assert "10.244.1.5   8080/TCP   ready=true serving=true terminating=false   <none>   <none>   web-manual-v4-8080" in out
    assert "Nodes in sync:           0/0" in out
    assert run(server, "describe", "node", "ghost")[0] == 1


def test_watch_replays_and_stops_after_count(server, tmp_path):
    run(server, "create", "service", "clusterip", "a", "--tcp", "80")
    run(server, "set", "endpoints", "a", "10.244.0.9")
    assert run(server, "watch", "--from", "0", "--count", "2") == (
        0, "1\tPUT\tService\tdefault/a\n2\tPUT\tEndpointSlice\tdefault/a-manual-v4-80\n", "")
    assert run(server, "watch", "--from", "0", "--count", "1", "--kinds", "eps") == (
        0, "2\tPUT\tEndpointSlice\tdefault/a-manual-v4-80\n", "")


def test_nodes_view_shows_sync_state_and_nacks(server, stubs):
    import queue
    import time

    import grpc

    pb2, pb2_grpc = stubs
    run(server, "create", "service", "clusterip", "web", "--tcp", "80")
    channel = grpc.insecure_channel(server.target)
    outgoing = queue.Queue()
    outgoing.put(pb2.NodeMessage(hello=pb2.Hello(
        node=pb2.Node(metadata=pb2.ObjectMeta(name="node-a"), addresses=["10.0.0.1", "fd00::1"], zone="z1"))))

    def requests():
        while (message := outgoing.get()) is not None:
            yield message

    responses = pb2_grpc.NodeSyncStub(channel).Sync(requests(), timeout=30)
    snapshot = next(responses).snapshot
    outgoing.put(pb2.NodeMessage(ack=pb2.Ack(revision=snapshot.revision)))

    def nodes_table():
        for _ in range(100):
            code, out, _ = run(server, "get", "nodes")
            row = out.splitlines()[1].split() if len(out.splitlines()) > 1 else []
            if row and row[2] != "0":
                return code, row
            time.sleep(0.05)
        raise AssertionError("the ACK never showed")

    code, row = nodes_table()
    assert code == 0
    # HEAD is the newest revision that changed what nodes hold (the Service, revision 1); the
    # snapshot also covers revision 2, the node's own registration.
    assert row[:5] == ["node-a", "yes", str(snapshot.revision), "1", "0"]
    assert row[-1] == "<none>"
    code, out, _ = run(server, "describe", "svc", "web")
    assert "Nodes in sync:           1/1" in out

    # The node rejects the next revision: the NACK text shows in get nodes and describe node.
    run(server, "set", "endpoints", "web", "10.244.0.5")
    delta = next(responses).delta
    outgoing.put(pb2.NodeMessage(nack=pb2.Nack(revision=delta.to_revision, error="nft: syntax error")))
    for _ in range(100):
        code, out, _ = run(server, "get", "nodes", "-o", "wide")
        if "nft: syntax error" in out:
            break
        time.sleep(0.05)
    assert f"rev {delta.to_revision}: nft: syntax error" in out
    assert "10.0.0.1,fd00::1" in out and "z1" in out
    code, out, _ = run(server, "describe", "node", "node-a")
    assert code == 0
    assert f"Last Error:         revision {delta.to_revision}: nft: syntax error\n" in out
    assert "In Sync:            no, 1 behind\n" in out
    code, out, _ = run(server, "get", "nodes", "-o", "json")
    assert json.loads(out)["lastError"] == "nft: syntax error"
    outgoing.put(None)
    responses.cancel()
    channel.close()


def test_apply_larger_than_grpcs_default_message_limit(server, stubs, tmp_path):
    """One apply is one Apply request and one transaction: a manifest whose request is above
    gRPC's default 4 MiB message limit (and so is the response, which echoes every object) is
    stored whole, not refused as an unreachable server. With too short a timeout the error says
    that no answer came in time, since the write may have been applied all the same."""
    pb2, _ = stubs
    slices = [{
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"big-{i}", "namespace": "big", "labels": {"kubernetes.io/service-name": f"big-{i}"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [f"10.{i}.{e // 250}.{e % 250 + 1}"], "nodeName": f"node-{e % 20}", "zone": "zone-a"}
                      for e in range(1000)],
    } for i in range(150)]
    request = pb2.ApplyRequest(items=[pb2.ApplyItem(object=pb2.Object(endpoint_slice=pb2.EndpointSlice(
        metadata=pb2.ObjectMeta(namespace="big", name=s["metadata"]["name"]), service_name=s["metadata"]["name"],
        address_type="IPv4", ports=[pb2.EndpointPort(name="http", protocol=pb2.TCP, port=8080)],
        endpoints=[pb2.Endpoint(addresses=e["addresses"], node_name=e["nodeName"], zone=e["zone"]) for e in s["endpoints"]])))
        for s in slices])
    assert request.ByteSize() > 4 << 20, f"the request is only {request.ByteSize()} bytes"
    path = write(tmp_path, "big.json", json.dumps({"apiVersion": "v1", "kind": "List", "items": slices}))
    # Too short a timeout for that much: the answer does not say the server is unreachable.
    code, _, err = run(server, "--timeout", "0.2", "apply", "-f", path)
    assert code == 1 and "no answer from the control server" in err and "within --timeout" in err, err
    code, out, err = run(server, "--timeout", "60", "apply", "-f", path)
    assert (code, err) == (0, "")
    # All created, or all unchanged if the timed-out apply went through after all.
    outcomes = {line.rsplit(" ", 1)[1] for line in out.splitlines()}
    assert len(outcomes) == 1 and outcomes <= {"created", "unchanged"}, out
    assert [line.rsplit(" ", 1)[0] for line in out.splitlines()] == [
        f"endpointslice.discovery.k8s.io/big-{i}" for i in range(150)]
    code, out, _ = run(server, "get", "eps", "-n", "big", "-o", "name")
    assert out.splitlines() == sorted(f"endpointslice.discovery.k8s.io/big-{i}" for i in range(150))
