"""The README's demo: a control server on SQLite, a node-applier in a network namespace with two
pods behind it, a Service and its EndpointSlice applied with proxyctl, and requests through the
ClusterIP showing which pod answered. Everything it creates is removed at the end."""
import json
import os
import sys
import tempfile

from netlab import Lab, eventually

MANIFEST = """apiVersion: v1
kind: Service
metadata: {name: hello, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: hello-1, namespace: default, labels: {kubernetes.io/service-name: hello}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- {addresses: [10.244.1.10], nodeName: n1}
- {addresses: [10.244.1.11], nodeName: n1}
"""


def step(text):
    print(f"\n==> {text}", flush=True)


def main():
    if os.geteuid() != 0:
        sys.exit("the demo creates network namespaces: run it as root")
    workdir = tempfile.mkdtemp(prefix="kubeproxy-demo-")
    lab = Lab(workdir, prefix="kpdemo-")
    try:
        step("network namespaces: control plane (192.168.100.1), node n1 (192.168.100.11), pods hello-a and hello-b, a client pod")
        cp = lab.lan_host("cp", 1)
        lab.node(1)
        lab.pod("hello-a", 1, 10)
        lab.pod("hello-b", 1, 11)
        client = lab.pod("client", 1, 50)
        step(f"control-server on SQLite ({workdir}/state.db) and node-applier on n1")
        lab.start_control_server(cp, os.path.join(workdir, "state.db"))
        lab.start_applier(1)
        step("proxyctl apply -f - (Service hello + EndpointSlice hello-1)")
        print(lab.proxyctl(cp, "apply", "-f", "-", input=MANIFEST).stdout, end="")
        print(lab.proxyctl(cp, "get", "svc", "hello", "-o", "wide").stdout, end="")
        service = json.loads(lab.proxyctl(cp, "get", "svc", "hello", "-o", "json").stdout)
        cluster_ip = service["spec"]["clusterIP"]

        def synced():
            listing = json.loads(lab.proxyctl(cp, "get", "nodes", "-o", "json").stdout)
            nodes = listing.get("items", [listing])
            assert nodes and all(n["appliedRevision"] >= n["publishedRevision"] for n in nodes), nodes
        eventually(synced, timeout=30)
        print(lab.proxyctl(cp, "get", "nodes").stdout, end="")
        step(f"6 requests from the client pod to http://{cluster_ip}:80")
        answers = eventually(lambda: _answered(lab.probe(client, "tcp", cluster_ip, 80, count=6)), timeout=30)
        for answer in answers:
            pod, source = answer.split()
            print(f"  answered by {pod} (it saw the client as {source})")
        # A new service's frontend first waits in a plain set (no table validation); the rehome
        # gives it its verdict once syncs have been quiet for a second.
        step("the node's nftables: service-ips map, once the frontend has its verdict")
        def listed():
            text = lab.run(lab.prefix + "n1", "nft", "list", "map", "ip", "kube-proxy-swift", "service-ips").stdout
            assert cluster_ip in text, text
            return text
        print(eventually(listed, timeout=30), end="")
    finally:
        step("cleaning up")
        lab.close()
    print("done")


def _answered(results):
    assert results and all(r.startswith("hello-") for r in results), results
    return results


if __name__ == "__main__":
    main()
