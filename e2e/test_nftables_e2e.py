"""End to end in the real kernel: a control server, two nodes running node-applier, pods on each
node and outside clients, all in network namespaces joined by veth pairs and a bridge. Real
TCP and UDP traffic through ClusterIPs, NodePorts and LoadBalancer IPs."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from netlab import BUILD, HERE, Lab, eventually

PODS = {"p1a": (1, 10), "p1b": (1, 20), "p2a": (2, 10), "p2b": (2, 20)}


def pod_ip(name, v6=False):
    node, index = PODS[name]
    return f"fd00:244:{node}::{index}" if v6 else f"10.244.{node}.{index}"


def slice_yaml(name, service, pods, ports, v6=False):
    endpoints = "\n".join(
        f"- addresses: [\"{pod_ip(pod, v6)}\"]\n  nodeName: n{PODS[pod][0]}\n  zone: zone-a" for pod in pods)
    port_lines = "\n".join(f"- {{name: {n}, port: 8080, protocol: {p}}}" for n, p in ports)
    return f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}
addressType: {"IPv6" if v6 else "IPv4"}
ports:
{port_lines}
endpoints:{" []" if not pods else ""}
{endpoints}
"""


SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIPs: [10.96.0.10, "fd00:10:96::10"]
  ports: [{name: http, port: 80, targetPort: 8080}, {name: dns, port: 53, protocol: UDP, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec:
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: np, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.12
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: local, namespace: default}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  clusterIP: 10.96.0.13
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30081}]
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: default}
spec:
  clusterIP: 10.96.0.14
  sessionAffinity: ClientIP
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.15
  loadBalancerSourceRanges: [192.168.100.50/32]
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30082}]
status: {loadBalancer: {ingress: [{ip: 172.18.0.10}, {ip: 172.18.0.20, ipMode: Proxy}]}}
---
apiVersion: v1
kind: Service
metadata: {name: lb-local, namespace: default}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  clusterIP: 10.96.0.16
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30083}]
"""

HTTP = [("http", "TCP")]


def dual_stack_service_yaml(name, addresses, affinity=False):
    """A dual-stack HTTP service at `addresses` (IPv4, IPv6), with ClientIP affinity if asked."""
    affinity_line = "  sessionAffinity: ClientIP\n" if affinity else ""
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIPs: [{addresses[0]}, "{addresses[1]}"]
{affinity_line}  ports: [{{name: http, port: 80, targetPort: 8080}}]
"""


def dual_stack_yaml(name, addresses, pods, affinity=False):
    """`dual_stack_service_yaml`'s service and its two slices."""
    return "---\n".join([dual_stack_service_yaml(name, addresses, affinity), slice_yaml(name, name, pods, HTTP),
                         slice_yaml(name + "-v6", name, pods, HTTP, v6=True)])


class Cluster:
    def __init__(self, lab):
        self.lab = lab
        self.cp = lab.lan_host("cp", 1)
        self.nodes = {1: lab.node(1), 2: lab.node(2)}
        lab.route_pods(self.nodes)
        self.client = lab.lan_host("client", 50)
        self.client2 = lab.lan_host("client2", 51)
        for client in (self.client, self.client2):
            lab.run(client, "ip", "route", "add", "172.18.0.10/32", "via", "192.168.100.11")
        for name, (node, index) in PODS.items():
            lab.pod(name, node, index)
        self.db = os.path.join(lab.workdir, "state.db")
        lab.start_control_server(self.cp, self.db)
        for number in self.nodes:
            lab.start_applier(number)
        self.apply(SERVICES)
        self.set_endpoints("web", ["p1a", "p2a"], ports=[("http", "TCP"), ("dns", "UDP")])
        self.apply(slice_yaml("web-v6", "web", ["p1a", "p2a"], [("http", "TCP"), ("dns", "UDP")], v6=True))
        self.set_endpoints("np", ["p2a"])
        self.set_endpoints("local", ["p1a"])
        self.set_endpoints("sticky", ["p1a", "p2a", "p2b"])
        self.set_endpoints("lb", ["p1a", "p2a"])
        self.set_endpoints("lb-local", ["p1a", "p1b"])

    def apply(self, manifest):
        self.lab.proxyctl(self.cp, "apply", "-f", "-", input=manifest)

    def set_endpoints(self, service, pods, ports=HTTP):
        self.apply(slice_yaml(service, service, pods, ports))

    def probe(self, ns, proto, host, port, count=1, timeout=1.0, interval=0.0, source_port=0):
        return self.lab.probe(self.lab.prefix + ns if not ns.startswith(self.lab.prefix) else ns, proto, host, port,
                              count=count, timeout=timeout, interval=interval, source_port=source_port)

    def answering(self, results):
        return {result.split()[0] for result in results}

    def metrics(self, number, ns=None):
        return self.scrape(ns or self.nodes[number], 10256)

    def scrape(self, ns, port):
        """The /metrics text served on 127.0.0.1:<port> in <ns>."""
        code = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/metrics').read().decode())"
        return self.lab.run(ns, sys.executable, "-c", code).stdout

    def applied_revision(self, number, ns=None):
        found = re.search(r"^kubeproxy_node_applier_applied_revision (\S+)$", self.metrics(number, ns), re.M)
        return float(found.group(1)) if found else None

    def wait_caught_up(self, ns):
        """Waits until the extra node-1 applier in `ns` holds node 1's applied revision."""
        self.lab.wait_listening(ns, "127.0.0.1", 10256)
        def synced():
            revision = self.applied_revision(1, ns)
            assert revision and revision == self.applied_revision(1), revision
        eventually(synced, timeout=30)


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    workdir = tempfile.mkdtemp(prefix="kubeproxy-e2e-")
    lab = Lab(workdir)
    try:
        yield Cluster(lab)
    finally:
        lab.close()
        for key, path in lab.logs.items():
            if key.startswith(("applier", "control")):
                with open(path) as log:
                    tail = log.readlines()[-15:]
                sys.stderr.write(f"--- {key} (last lines) ---\n{''.join(tail)}")


def test_cluster_ip_reaches_endpoints_over_tcp_udp_and_ipv6(cluster):
    def check():
        tcp = cluster.probe("p1b", "tcp", "10.96.0.10", 80, count=20)
        assert cluster.answering(tcp) == {"p1a", "p2a"}, tcp
        udp = cluster.probe("p1b", "udp", "10.96.0.10", 53, count=20)
        assert cluster.answering(udp) == {"p1a", "p2a"}, udp
        v6 = cluster.probe("p1b", "tcp", "fd00:10:96::10", 80, count=20)
        assert cluster.answering(v6) == {"p1a", "p2a"}, v6
    eventually(check, timeout=30)
    # Pod to pod through a ClusterIP keeps the pod's address (no masquerade inside the cluster).
    results = cluster.probe("p1b", "tcp", "10.96.0.10", 80, count=10)
    assert {result.split()[1] for result in results} == {pod_ip("p1b")}


def test_spread_across_endpoints(cluster):
    results = cluster.probe("p2b", "tcp", "10.96.0.10", 80, count=200)
    counts = {pod: sum(1 for r in results if r.startswith(pod + " ")) for pod in ("p1a", "p2a")}
    # Random choice over two endpoints: each gets a share (P(<40 of 200) is about 1e-18).
    assert counts["p1a"] >= 40 and counts["p2a"] >= 40, counts


def test_endpoint_removal_and_addition_take_effect(cluster):
    cluster.set_endpoints("web", ["p2b"], ports=[("http", "TCP"), ("dns", "UDP")])
    eventually(lambda: _assert_equal(cluster.answering(cluster.probe("p1b", "tcp", "10.96.0.10", 80, count=20)), {"p2b"}))
    cluster.set_endpoints("web", ["p1a", "p2a", "p2b"], ports=[("http", "TCP"), ("dns", "UDP")])
    eventually(lambda: _assert_equal(
        cluster.answering(cluster.probe("p1b", "tcp", "10.96.0.10", 80, count=60)), {"p1a", "p2a", "p2b"}))


def test_endpoint_count_change_keeps_the_verdict_until_rehome(cluster):
    """A new jump verdict makes the kernel validate every verdict-map element, so a count change
    rewrites slots only: the frontend's old pick-N chain misses and falls through to the scan chain,
    which finds the new count's slots. Node 1's applier first runs with a rehome delay that never
    passes (the verdict stays while traffic follows the change over TCP, UDP and IPv6, and while
    the service has no endpoints and connections are refused; a new service's frontends wait in the
    pending set, reached through the scan chain), then with a short one (the verdicts follow once
    syncs are quiet, in one transaction the kernel takes)."""
    lab = cluster.lab
    udp = [("http", "TCP"), ("dns", "UDP")]
    def verdicts():
        found = _web_verdicts(cluster)
        assert len(found) == 3, found
        return found
    fresh, later = ("10.96.0.30", "fd00:10:96::30"), ("10.96.0.31", "fd00:10:96::31")
    def frontends(addresses):
        """Where a new service's frontends are: {"pending"} or their verdicts."""
        places = set()
        for family, address in zip(("ip", "ip6"), addresses):
            listed = lab.run(cluster.nodes[1], "nft", "list", "table", family, "kube-proxy-swift").stdout
            # A staged full program names its objects with a generation suffix (".b").
            pending = re.search(r"set pending-service-ips(?:\.b)? \{[^}]*\}", listed).group(0)
            verdict = re.search(rf"{re.escape(address)} \. tcp \. 80 : goto (pick-[a-z]+-\d+)", listed)
            places |= {"pending"} if f"{address} . tcp . 80" in pending else set()
            places |= {verdict.group(1)} if verdict else set()
        return places
    def reached(pods):
        for proto, host, port in (("tcp", "10.96.0.10", 80), ("udp", "10.96.0.10", 53), ("tcp", "fd00:10:96::10", 80)):
            assert cluster.answering(cluster.probe("p1b", proto, host, port, count=30)) == pods, (proto, host)
    def rehome_metrics():
        text = cluster.metrics(1)
        away = re.search(r"^kubeproxy_node_applier_away_frontends (\S+)$", text, re.M)
        return float(away.group(1)), _rehomes(text)
    _set_web(cluster, ["p1a", "p2a", "p2b"])
    eventually(lambda: reached({"p1a", "p2a", "p2b"}), timeout=30)
    lab.stop("applier-n1")
    lab.start_applier(1, extra=("--rehome-delay", "3600"))
    try:
        eventually(lambda: _assert_equal(set(verdicts().values()), {"pick-tcp-3", "pick-udp-3"}), timeout=30)
        for pods in (["p2b"], ["p1a", "p2b"]):
            _set_web(cluster, pods)
            eventually(lambda: reached(set(pods)), timeout=30)
            assert set(verdicts().values()) == {"pick-tcp-3", "pick-udp-3"}
            assert rehome_metrics() == (4.0, 0.0)  # web's four frontends (two ports, two families)
        # No endpoints: refused at once, still without a new verdict; then back.
        _set_web(cluster, [])
        eventually(lambda: _assert_equal(cluster.probe("p1b", "tcp", "10.96.0.10", 80, timeout=5), ["refused"]), timeout=30)
        assert cluster.probe("p1b", "tcp", "fd00:10:96::10", 80, timeout=5) == ["refused"]
        assert set(verdicts().values()) == {"pick-tcp-3", "pick-udp-3"}
        _set_web(cluster, ["p1a", "p2b"])
        eventually(lambda: reached({"p1a", "p2b"}), timeout=30)
        assert set(verdicts().values()) == {"pick-tcp-3", "pick-udp-3"}
        # A new service: its frontends wait in the pending set, and connections reach its endpoints.
        cluster.apply(dual_stack_yaml("fresh", fresh, ["p1a", "p2b"]))
        for address in fresh:
            eventually(lambda: _assert_equal(cluster.answering(cluster.probe("p1b", "tcp", address, 80, count=30)), {"p1a", "p2b"}),
                       timeout=30)
        assert frontends(fresh) == {"pending"}
        assert rehome_metrics() == (6.0, 0.0)  # and the new service's two
    finally:
        lab.stop("applier-n1")
        lab.start_applier(1)
    eventually(lambda: _assert_equal(set(verdicts().values()), {"pick-tcp-2", "pick-udp-2"}), timeout=30)
    assert frontends(fresh) == {"pick-tcp-2"}  # the restart's full program
    # One revision: web's count changes, another new service; one rehome gives them their verdicts.
    cluster.apply("---\n".join([slice_yaml("web", "web", ["p1a", "p2a", "p2b"], udp),
                                slice_yaml("web-v6", "web", ["p1a", "p2a", "p2b"], udp, v6=True),
                                dual_stack_yaml("later", later, ["p2a"])]))
    eventually(lambda: _assert_equal(set(verdicts().values()), {"pick-tcp-3", "pick-udp-3"}), timeout=30)
    eventually(lambda: _assert_equal(frontends(later), {"pick-tcp-1"}), timeout=30)
    eventually(lambda: _assert_equal(rehome_metrics(), (0.0, 1.0)), timeout=30)
    reached({"p1a", "p2a", "p2b"})
    for addresses, pods in ((fresh, {"p1a", "p2b"}), (later, {"p2a"})):
        for address in addresses:
            assert cluster.answering(cluster.probe("p1b", "tcp", address, 80, count=30)) == pods, address
    lab.proxyctl(cluster.cp, "delete", "svc", "fresh", "later")
    lab.proxyctl(cluster.cp, "delete", "eps", "fresh", "fresh-v6", "later", "later-v6")


def test_new_local_policy_node_port_waits_in_its_pending_sets(cluster):
    """A new NodePort service with externalTrafficPolicy Local. With node 1's rehome held off its
    frontend on node 1 waits in both pending sets; the outside client reaches node 1's endpoints
    only, its address preserved. After a restart (full program) the service is recreated with
    another NodePort, and one rehome gives the new frontend its verdicts."""
    lab = cluster.lab
    def service(node_port):
        return (f"""apiVersion: v1
kind: Service
metadata: {{name: np-fresh, namespace: default}}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  clusterIP: 10.96.0.32
  ports: [{{name: http, port: 80, targetPort: 8080, nodePort: {node_port}}}]
---
""" + slice_yaml("np-fresh", "np-fresh", ["p1a", "p1b", "p2a"], HTTP))
    def places(node_port):
        """The sets and verdict maps of node 1's IPv4 table that hold its frontend for `node_port`."""
        listed = lab.run(cluster.nodes[1], "nft", "list", "table", "ip", "kube-proxy-swift").stdout
        frontend = f"192.168.100.11 . tcp . {node_port}"
        found = set()
        for name, body in re.findall(r"(?:set|map) (\S+?)(?:\.b)? \{(.*?)\n\t\}", listed, re.S):
            verdict = re.search(rf"{re.escape(frontend)} : goto ((?:local-)?pick-tcp-\d+)", body)
            if verdict or (name.startswith("pending-") and frontend in body):
                found.add(f"{name}: {verdict.group(1)}" if verdict else name)
        return found
    def served(node_port):
        answers = cluster.probe("client", "tcp", "192.168.100.11", node_port, count=20)
        assert set(answers) <= {"p1a 192.168.100.50", "p1b 192.168.100.50"} and len(set(answers)) == 2, answers
    lab.stop("applier-n1")
    lab.start_applier(1, extra=("--rehome-delay", "3600"))
    try:
        # The service must come after the start's full program, which would give it its verdicts.
        lab.wait_listening(cluster.nodes[1], "127.0.0.1", 10256)
        eventually(lambda: _assert_equal(cluster.applied_revision(1), cluster.applied_revision(2)), timeout=30)
        cluster.apply(service(30091))
        eventually(lambda: served(30091), timeout=30)
        assert places(30091) == {"pending-service-ips", "pending-local-service-ips"}
    finally:
        lab.stop("applier-n1")
        lab.start_applier(1)
    try:
        eventually(lambda: _assert_equal(places(30091), {"service-ips: pick-tcp-3", "local-service-ips: local-pick-tcp-2"}), timeout=30)
        cluster.apply(service(30093))
        eventually(lambda: _assert_equal(places(30093), {"service-ips: pick-tcp-3", "local-service-ips: local-pick-tcp-2"}), timeout=30)
        eventually(lambda: _assert_equal(_rehomes(cluster.metrics(1)), 1.0), timeout=30)
        served(30093)
    finally:
        lab.proxyctl(cluster.cp, "delete", "svc", "np-fresh")
        lab.proxyctl(cluster.cp, "delete", "eps", "np-fresh")


def test_changes_that_never_pause_do_not_hold_the_rehome_off(cluster):
    """Node 1's applier with a quiet delay that never passes and a 2 s maximum: web's endpoint
    count changes (3 -> 2) and its endpoints keep changing, a few times a second. The rehome still
    runs, between two syncs: the verdicts follow the count, and traffic reaches the endpoints."""
    lab = cluster.lab
    def state():
        return set(_web_verdicts(cluster).values()), _rehomes(cluster.metrics(1))
    _set_web(cluster, ["p1a", "p2a", "p2b"])
    eventually(lambda: _assert_equal(state()[0], {"pick-tcp-3", "pick-udp-3"}), timeout=30)
    lab.stop("applier-n1")
    lab.start_applier(1, extra=("--rehome-delay", "3600", "--rehome-max-delay", "2"))
    try:
        eventually(lambda: _assert_equal(state(), ({"pick-tcp-3", "pick-udp-3"}, 0.0)), timeout=30)
        # A change on every round (a proxyctl call, then a listing): never a quiet second.
        deadline, changes, seen = time.time() + 30, 0, state()
        while seen != ({"pick-tcp-2", "pick-udp-2"}, 1.0) and time.time() < deadline:
            _set_web(cluster, [["p2a", "p2b"], ["p1a", "p2b"]][changes % 2])
            changes += 1
            seen = state()
        assert seen == ({"pick-tcp-2", "pick-udp-2"}, 1.0), (seen, changes)
        _set_web(cluster, ["p2a", "p2b"])
        eventually(lambda: _assert_equal(cluster.answering(cluster.probe("p1b", "tcp", "10.96.0.10", 80, count=30)), {"p2a", "p2b"}),
                   timeout=30)
    finally:
        lab.stop("applier-n1")
        lab.start_applier(1)
        _set_web(cluster, ["p1a", "p2a", "p2b"])
    eventually(lambda: _assert_equal(state()[0], {"pick-tcp-3", "pick-udp-3"}), timeout=30)


def test_udp_flow_to_a_removed_endpoint_moves_to_a_serving_one(cluster):
    """Datagrams from one client port are one conntrack flow, DNATed once: without the applier's
    cleanup it would keep reaching the removed endpoint (whose pod still answers) for as long as
    the client keeps sending. IPv4 and IPv6."""
    udp = [("http", "TCP"), ("dns", "UDP")]
    for host, v6, slice_name in (("10.96.0.10", False, "web"), ("fd00:10:96::10", True, "web-v6")):
        cluster.apply(slice_yaml(slice_name, "web", ["p1a", "p2a"], udp, v6=v6))
        eventually(lambda: _assert_equal(cluster.answering(cluster.probe("p1b", "udp", host, 53, count=20)), {"p1a", "p2a"}))
        pinned = cluster.answering(cluster.probe("p1b", "udp", host, 53, count=10, source_port=40053))
        assert len(pinned) == 1, pinned
        [removed] = pinned
        [remaining] = {"p1a", "p2a"} - pinned
        cluster.apply(slice_yaml(slice_name, "web", [remaining], udp, v6=v6))
        eventually(lambda: _assert_equal(
            cluster.answering(cluster.probe("p1b", "udp", host, 53, count=3, source_port=40053)), {remaining}))
        family = "IPv6" if v6 else "IPv4"
        deleted = re.search(rf'^kubeproxy_conntrack_reconciler_deleted_entries_total\{{ip_family="{family}"\}} (\S+)$',
                            cluster.metrics(1), re.M)
        assert deleted and float(deleted.group(1)) >= 1, f"{removed} -> {remaining}: {deleted}"
    cluster.set_endpoints("web", ["p1a", "p2a", "p2b"], ports=udp)
    cluster.apply(slice_yaml("web-v6", "web", ["p1a", "p2a"], udp, v6=True))


def test_no_endpoints_is_refused_at_once(cluster):
    start = time.time()
    assert cluster.probe("p1b", "tcp", "10.96.0.11", 80, timeout=5) == ["refused"]
    assert time.time() - start < 3
    assert cluster.probe("client", "tcp", "192.168.100.11", 30080) == [via(1, "p2a")]  # a served NodePort answers
    # Unknown port on a ClusterIP: refused too; an unallocated service address: dropped.
    assert cluster.probe("p1b", "tcp", "10.96.0.10", 81, timeout=5) == ["refused"]
    assert cluster.probe("p1b", "tcp", "10.96.7.7", 80, timeout=1) == ["timeout"]


def test_node_port_from_outside_client_is_masqueraded(cluster):
    # Node 1 forwards to p2a on node 2: the pod sees node 1's address (masqueraded).
    assert cluster.probe("client", "tcp", "192.168.100.11", 30080, count=5) == [via(1, "p2a")] * 5
    # Node 2 has p2a behind its pod bridge: masqueraded to the bridge address.
    assert cluster.probe("client", "tcp", "192.168.100.12", 30080, count=5) == [via(2, "p2a")] * 5


def test_session_affinity_sticks(cluster):
    """Each client stays with one of the three endpoints (p2b may stay with itself: hairpin)."""
    for client in ("p1b", "p2b"):
        results = cluster.probe(client, "tcp", "10.96.0.14", 80, count=30)
        assert len(cluster.answering(results)) == 1 and cluster.answering(results) <= {"p1a", "p2a", "p2b"}, results


def test_session_affinity_follows_endpoint_changes_in_both_families(cluster):
    """A dual-stack ClientIP service made and changed by partial syncs (its chains and sets go in as
    netlink messages, not through libnftables). A client keeps its endpoint while that endpoint
    stays, over IPv4 and IPv6; when it goes, the client is sent to another and sticks there. Node
    1's listing of the affinity chains reads as the rules the layout renders."""
    addresses = ("10.96.0.41", "fd00:10:96::41")
    def stuck(pods):
        """The one pod p1b reaches over each family, each among `pods`."""
        found = []
        for address in addresses:
            answering = cluster.answering(cluster.probe("p1b", "tcp", address, 80, count=20))
            assert len(answering) == 1 and answering <= set(pods), (address, answering)
            found.append(next(iter(answering)))
        return found
    cluster.apply(dual_stack_yaml("sticky2", addresses, ["p1a", "p2a"], affinity=True))
    try:
        first = eventually(lambda: stuck(["p1a", "p2a"]))
        kept = first[0]
        other = "p2a" if kept == "p1a" else "p1a"
        # The other endpoint replaced by p2b over IPv4: p1b keeps its IPv4 endpoint.
        cluster.apply(slice_yaml("sticky2", "sticky2", [kept, "p2b"], HTTP))
        eventually(lambda: _assert_equal(stuck([kept, "p2b", other])[0], kept))
        listed = cluster.lab.run(cluster.nodes[1], "nft", "list", "ruleset").stdout
        for pattern in (r"ip saddr @(aff-[\w-]+) goto \1\n", r"numgen random mod 2 vmap \{ 0 : goto aff-[\w-]+, 1 : goto aff-[\w-]+ \}",
                        r"update @aff-[\w-]+ \{ ip saddr \}\n\s+meta l4proto tcp dnat to 10\.244\.2\.20:8080\n",
                        r"update @aff-[\w-]+ \{ ip6 saddr \}\n\s+meta l4proto tcp dnat to \[fd00:244:2::10\]:8080\n"):
            assert re.search(pattern, listed), pattern
        # Its endpoint removed over IPv6: p1b goes to the one left there.
        cluster.apply(slice_yaml("sticky2-v6", "sticky2", [kept], HTTP, v6=True))
        eventually(lambda: _assert_equal(stuck([kept, "p2b"]), [kept, kept]))
        cluster.apply(slice_yaml("sticky2-v6", "sticky2", [other], HTTP, v6=True))
        eventually(lambda: _assert_equal(stuck([kept, "p2b", other]), [kept, other]))
    finally:
        cluster.lab.proxyctl(cluster.cp, "delete", "svc", "sticky2")
        cluster.lab.proxyctl(cluster.cp, "delete", "eps", "sticky2", "sticky2-v6")


def test_session_affinity_turned_on_and_off_for_a_running_service(cluster):
    """A running dual-stack service gets ClientIP affinity, then loses it. Its frontends move
    between our tables' maps (`service-ips`, and `aff-service-ips` in the affinity table) in
    partial syncs: connections spread over both endpoints, then stick to one per family, then
    spread again."""
    addresses = ("10.96.0.43", "fd00:10:96::43")
    def reached(count):
        return [cluster.answering(cluster.probe("p1b", "tcp", address, 80, count=count)) for address in addresses]
    def affinity_verdicts():
        found = []
        for family, address in zip(("ip", "ip6"), addresses):
            listed = cluster.lab.run(cluster.nodes[1], "nft", "list", "table", family, "kube-proxy-swift-affinity").stdout
            found.append(bool(re.search(rf"{re.escape(address)} \. tcp \. 80 : goto aff-", listed)))
        return found
    cluster.apply(dual_stack_yaml("toggle", addresses, ["p1a", "p2a"]))
    try:
        eventually(lambda: _assert_equal(reached(30), [{"p1a", "p2a"}] * 2))
        cluster.apply(dual_stack_service_yaml("toggle", addresses, affinity=True))
        eventually(lambda: _assert_equal(affinity_verdicts(), [True, True]))
        stuck = reached(20)
        assert all(len(pods) == 1 for pods in stuck), stuck
        cluster.apply(dual_stack_service_yaml("toggle", addresses))
        eventually(lambda: _assert_equal(affinity_verdicts(), [False, False]))
        eventually(lambda: _assert_equal(reached(30), [{"p1a", "p2a"}] * 2))
    finally:
        cluster.lab.proxyctl(cluster.cp, "delete", "svc", "toggle")
        cluster.lab.proxyctl(cluster.cp, "delete", "eps", "toggle", "toggle-v6")


def test_service_with_more_endpoints_than_the_scan_tries_reaches_them(cluster):
    """A dual-stack service with 65 endpoints, then 66 (secondary addresses of p1a and p2a): more
    than the scan chains try, so their slots are in the large slot map from 128 on (the power of
    two 128), a change of elements only. Every connection reaches a pod, over both families, and
    once the rehome ran the frontend's verdict is the static `pick-tcp-upto-128` chain."""
    lab = cluster.lab
    # 33 secondary addresses on each pod, taken by turns: the first `count` are the endpoints.
    secondaries = [(pod, host) for host in range(100, 133) for pod in ("p1a", "p2a")]
    def address(pod, host, v6):
        node = PODS[pod][0]
        return f"fd00:244:{node}::{host}" if v6 else f"10.244.{node}.{host}"
    def big_slice(v6, count):
        endpoints = "\n".join(f"- addresses: [\"{address(pod, host, v6)}\"]\n  nodeName: n{PODS[pod][0]}"
                              for pod, host in secondaries[:count])
        return f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: big{"-v6" if v6 else ""}, namespace: default, labels: {{kubernetes.io/service-name: big}}}}
addressType: {"IPv6" if v6 else "IPv4"}
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
{endpoints}
"""
    def addresses(action):
        for pod, host in secondaries:
            lab.run(lab.prefix + pod, "ip", "addr", action, address(pod, host, False) + "/32", "dev", "eth0")
            lab.run(lab.prefix + pod, "ip", "addr", action, address(pod, host, True) + "/128", "dev", "eth0",
                    *(("nodad",) if action == "add" else ()))
    addresses("add")
    try:
        for count in (65, 66):
            cluster.apply("---\n".join([dual_stack_service_yaml("big", ("10.96.0.42", "fd00:10:96::42")),
                                        big_slice(False, count), big_slice(True, count)]))
            for service_address in ("10.96.0.42", "fd00:10:96::42"):
                eventually(lambda: _assert_equal(
                    cluster.answering(cluster.probe("p1b", "tcp", service_address, 80, count=40)), {"p1a", "p2a"}))
            def rehomed():
                for family, service_address in (("ip", "10.96.0.42"), ("ip6", "fd00:10:96::42")):
                    listed = lab.run(cluster.nodes[1], "nft", "list", "table", family, "kube-proxy-swift").stdout
                    assert re.search(rf"{re.escape(service_address)} \. tcp \. 80 : goto pick-tcp-upto-128(\.b)?\b", listed), listed
                    slots = re.findall(rf"{re.escape(service_address)} \. tcp \. 80 \. (\d+) :", listed)
                    assert sorted(map(int, slots)) == list(range(128, 128 + count)), slots
            eventually(rehomed)
            # Through the power's pick chain now: a draw past the count misses and the next one
            # goes on; no connection may fail.
            for service_address in ("10.96.0.42", "fd00:10:96::42"):
                assert cluster.answering(cluster.probe("p1b", "tcp", service_address, 80, count=60)) == {"p1a", "p2a"}
    finally:
        lab.proxyctl(cluster.cp, "delete", "svc", "big")
        lab.proxyctl(cluster.cp, "delete", "eps", "big", "big-v6")
        addresses("del")


def test_pod_reaches_itself_through_its_service_masqueraded(cluster):
    """Hairpin: a pod whose connection is DNATed back to itself must see it come from its node (the
    pod bridge's address), or it would answer itself directly and the client would never hear back."""
    cluster.set_endpoints("np", ["p2b"])
    cluster.apply(slice_yaml("web-v6", "web", ["p2b"], [("http", "TCP"), ("dns", "UDP")], v6=True))
    try:
        for host, bridge in (("10.96.0.12", "10.244.2.1"), ("fd00:10:96::10", "fd00:244:2::1")):
            eventually(lambda: _assert_equal(cluster.probe("p2b", "tcp", host, 80, count=3), [f"p2b {bridge}"] * 3))
    finally:
        cluster.set_endpoints("np", ["p2a"])
        cluster.apply(slice_yaml("web-v6", "web", ["p1a", "p2a"], [("http", "TCP"), ("dns", "UDP")], v6=True))
    eventually(lambda: _assert_equal(cluster.probe("client", "tcp", "192.168.100.11", 30080), [via(1, "p2a")]))


def test_masquerade_all_masquerades_pods_to_cluster_ips(cluster):
    """kube-proxy's `--masquerade-all`: with node 1's applier restarted with it, a pod's connection
    to a ClusterIP reaches its endpoint from the node's address instead of the pod's, in both
    families; restarted without it, the pod's own address again."""
    lab = cluster.lab
    assert cluster.probe("p1b", "tcp", "10.96.0.12", 80) == ["p2a 10.244.1.20"]
    lab.stop("applier-n1")
    lab.start_applier(1, extra=["--masquerade-all"])
    try:
        eventually(lambda: _assert_equal(cluster.probe("p1b", "tcp", "10.96.0.12", 80, count=3), ["p2a 192.168.100.11"] * 3),
                   timeout=30)
        # web's IPv6 endpoints: p1a on this node (seen from its pod bridge), p2a on node 2.
        answers = set(cluster.probe("p1b", "tcp", "fd00:10:96::10", 80, count=20))
        assert answers <= {"p1a fd00:244:1::1", "p2a fd00:100::11"} and answers, answers
    finally:
        lab.stop("applier-n1")
        lab.start_applier(1)
    eventually(lambda: _assert_equal(cluster.probe("p1b", "tcp", "10.96.0.12", 80), ["p2a 10.244.1.20"]), timeout=30)


def test_external_policy_local_preserves_client_and_drops_without_local_endpoints(cluster):
    assert cluster.probe("client", "tcp", "192.168.100.11", 30081, count=3) == ["p1a 192.168.100.50"] * 3
    assert cluster.probe("client", "tcp", "192.168.100.12", 30081, count=2, timeout=1) == ["timeout"] * 2


def test_load_balancer_source_ranges_block_other_clients(cluster):
    allowed = cluster.probe("client", "tcp", "172.18.0.10", 80, count=10)
    assert cluster.answering(allowed) <= {"p1a", "p2a"} and "timeout" not in allowed, allowed
    assert cluster.probe("client2", "tcp", "172.18.0.10", 80, count=2, timeout=1) == ["timeout"] * 2
    # The same service through its NodePort is not behind the LoadBalancer firewall.
    assert cluster.answering(cluster.probe("client2", "tcp", "192.168.100.11", 30082, count=4)) <= {"p1a", "p2a"}


def test_load_balancer_source_range_holding_the_node_lets_the_node_in_from_the_load_balancer_ip(cluster):
    """kube-proxy's exception to the LoadBalancer firewall: a VIP-like load balancer's IP is often
    a local address of the node, so the node's own connections to it come from it; when a source
    range holds the node's address, the LoadBalancer IPs are let through too. Node 1's address is
    in the ranges, node 2's is not: both hold the LoadBalancer IPs on `lo`, over both families."""
    lab = cluster.lab
    vips = ("172.18.0.30", "fd00:18::30")
    service = f"""apiVersion: v1
kind: Service
metadata: {{name: lb-node, namespace: default}}
spec:
  type: LoadBalancer
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIPs: [10.96.0.43, "fd00:10:96::43"]
  loadBalancerSourceRanges: [192.168.100.11/32, "fd00:100::11/128"]
  ports: [{{name: http, port: 80, targetPort: 8080, nodePort: 30084}}]
status: {{loadBalancer: {{ingress: [{{ip: {vips[0]}}}, {{ip: "{vips[1]}"}}]}}}}
"""
    def addresses(action):
        for number in cluster.nodes:
            for vip in vips:
                lab.run(cluster.nodes[number], "ip", "addr", action, vip + ("/128" if ":" in vip else "/32"), "dev", "lo")
    addresses("add")
    try:
        cluster.apply("---\n".join([service, slice_yaml("lb-node", "lb-node", ["p1a", "p2a"], HTTP),
                                    slice_yaml("lb-node-v6", "lb-node", ["p1a", "p2a"], HTTP, v6=True)]))
        for vip in vips:
            eventually(lambda: _assert_equal(cluster.answering(cluster.probe(cluster.nodes[1], "tcp", vip, 80, count=20)),
                                             {"p1a", "p2a"}))
            # Refused before node 2 programs the service (nothing listens there), dropped after.
            eventually(lambda: _assert_equal(cluster.probe(cluster.nodes[2], "tcp", vip, 80, count=2, timeout=1),
                                             ["timeout"] * 2))
    finally:
        lab.proxyctl(cluster.cp, "delete", "svc", "lb-node")
        lab.proxyctl(cluster.cp, "delete", "eps", "lb-node", "lb-node-v6")
        addresses("del")


def test_node_hints_keep_traffic_on_the_node(cluster):
    """Topology from hints, as kube-proxy's: every endpoint hinted for a node (what the
    EndpointSlice controller writes for trafficDistribution PreferSameNode), so each node sends
    the service's traffic to the endpoint hinted for it; without a hint for the node, to all."""
    service = """apiVersion: v1
kind: Service
metadata: {name: near, namespace: default}
spec:
  clusterIP: 10.96.0.46
  trafficDistribution: PreferSameNode
  ports: [{name: http, port: 80, targetPort: 8080}]
"""
    def hinted(hints):
        endpoints = "\n".join(f"- addresses: [\"{pod_ip(pod)}\"]\n  nodeName: n{PODS[pod][0]}\n  hints: {{forNodes: [{{name: {node}}}]}}"
                              for pod, node in hints)
        return f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: near, namespace: default, labels: {{kubernetes.io/service-name: near}}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
{endpoints}
"""
    cluster.apply(service + "---\n" + hinted([("p1a", "n1"), ("p2a", "n2")]))
    try:
        for client, near in (("p1b", "p1a"), ("p2b", "p2a")):
            eventually(lambda: _assert_equal(cluster.answering(cluster.probe(client, "tcp", "10.96.0.46", 80, count=20)), {near}))
        # No endpoint hinted for node 2: it spreads over both.
        cluster.apply(hinted([("p1a", "n1"), ("p2a", "n1")]))
        eventually(lambda: _assert_equal(cluster.answering(cluster.probe("p2b", "tcp", "10.96.0.46", 80, count=30)), {"p1a", "p2a"}))
        assert cluster.answering(cluster.probe("p1b", "tcp", "10.96.0.46", 80, count=30)) == {"p1a", "p2a"}
    finally:
        cluster.lab.proxyctl(cluster.cp, "delete", "svc", "near")
        cluster.lab.proxyctl(cluster.cp, "delete", "eps", "near")


def test_objects_labelled_for_another_proxy_or_headless_are_ignored(cluster):
    """As kube-proxy's informers: a Service labelled service.kubernetes.io/service-proxy-name gets
    no rules (its ClusterIP is then an unallocated service address, dropped), and an EndpointSlice
    labelled service.kubernetes.io/headless adds no endpoints to its service."""
    other = """apiVersion: v1
kind: Service
metadata: {name: other-proxy, namespace: default, labels: {service.kubernetes.io/service-proxy-name: other}}
spec:
  clusterIP: 10.96.0.44
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: half, namespace: default}
spec:
  clusterIP: 10.96.0.45
  ports: [{name: http, port: 80, targetPort: 8080}]
"""
    labelled = slice_yaml("half-2", "half", ["p2a"], HTTP).replace(
        "labels: {kubernetes.io/service-name: half}", "labels: {kubernetes.io/service-name: half, service.kubernetes.io/headless: ''}")
    cluster.apply("---\n".join([other, slice_yaml("other-proxy", "other-proxy", ["p1a"], HTTP),
                                slice_yaml("half-1", "half", ["p1a"], HTTP), labelled]))
    try:
        eventually(lambda: _assert_equal(cluster.answering(cluster.probe("p1b", "tcp", "10.96.0.45", 80, count=20)), {"p1a"}))
        assert cluster.probe("p1b", "tcp", "10.96.0.44", 80, count=2, timeout=1) == ["timeout"] * 2
        listed = cluster.lab.run(cluster.nodes[1], "nft", "list", "table", "ip", "kube-proxy-swift").stdout
        assert "10.96.0.44" not in listed and "10.96.0.45 . tcp . 80" in listed
    finally:
        cluster.lab.proxyctl(cluster.cp, "delete", "svc", "other-proxy", "half")
        cluster.lab.proxyctl(cluster.cp, "delete", "eps", "other-proxy", "half-1", "half-2")


def test_health_check_node_port_reports_local_endpoints(cluster):
    def check():
        assert _health_check(cluster, 1) == (200, "2", {"localEndpoints": 2, "serviceProxyHealthy": True})
        assert _health_check(cluster, 2) == (503, "0", {"localEndpoints": 0, "serviceProxyHealthy": True})
    eventually(check, timeout=20)


def _health_check(cluster, number):
    """What the outside client gets from lb-local's health check on node <number>: the status, the
    X-Load-Balancing-Endpoint-Weight header, and the JSON body but for the service's name."""
    service = json.loads(cluster.lab.proxyctl(cluster.cp, "get", "svc", "lb-local", "-o", "json").stdout)
    code = ("import sys, urllib.request, urllib.error\n"
            "try: r = urllib.request.urlopen(sys.argv[1], timeout=2)\n"
            "except urllib.error.HTTPError as e: r = e\n"
            "print(r.status); print(r.headers['X-Load-Balancing-Endpoint-Weight']); print(r.read().decode())")
    url = f"http://192.168.100.1{number}:{service['spec']['healthCheckNodePort']}/healthz"
    status, weight, body = cluster.lab.run(cluster.client, sys.executable, "-c", code, url).stdout.split("\n", 2)
    answer = json.loads(body)
    assert answer.pop("service") == {"namespace": "default", "name": "lb-local"}, answer
    return int(status), weight, answer


def test_full_program_is_the_same_staged_or_swapped(cluster):
    """Where none of our chains is hooked a full program is staged (sets, maps and chains; then every
    element in netlink batches; then the base chains); over hooked tables the same is staged under the
    other generation's names (`.b`) and swapped in with the base chains. Two more appliers for node 1,
    one on each path, must leave the same ruleset but for the names, with every feature the cluster
    uses (the replaced tables' hooked leftover chain gone)."""
    lab = cluster.lab
    # Enough services for more than one netlink batch (40k elements each).
    bulk = _bulk_services(1100, endpoints=40)
    before = cluster.applied_revision(1)
    cluster.apply(bulk)
    staged, replacing = lab.lan_host("staged", 31), lab.lan_host("replacing", 32)
    for family in ("ip", "ip6"):
        lab.run(replacing, "nft", f"add table {family} kube-proxy-swift; "
                f"add chain {family} kube-proxy-swift leftover {{ type filter hook input priority 0; }}")
    try:
        for ns in (staged, replacing):
            lab.start_applier(1, ns=ns, key=f"applier-{ns}")
        def synced():
            revisions = [cluster.applied_revision(1, ns) for ns in (None, staged, replacing)]
            assert revisions[0] > before and revisions == [revisions[0]] * 3, revisions
        eventually(synced, timeout=60)
        rulesets = [lab.run(ns, "nft", "list", "ruleset").stdout for ns in (staged, replacing)]
    finally:
        for ns in (staged, replacing):
            lab.stop(f"applier-{ns}")
        with_bulk = max(cluster.applied_revision(number) for number in (1, 2))
        cluster.lab.proxyctl(cluster.cp, "delete", "-f", "-", input=bulk)
        # The next tests start from nodes that hold the cluster without the bulk.
        eventually(lambda: _assert_equal(all(cluster.applied_revision(n) > with_bulk for n in (1, 2)), True), timeout=60)
    missing = [element for element in ("10.96.0.10 . tcp . 80 : goto pick-tcp-", "fd00:10:96::10 . udp . 53 : goto pick-udp-",
                                       "172.18.0.10 . tcp . 80 : goto fw-", "10.244.1.10 . 10.244.1.10")
               if element not in rulesets[0]]
    assert not missing, (missing, rulesets[0])
    # The ingress IP in ipMode Proxy: the load balancer delivers to the NodePort, nothing to program.
    assert "172.18.0.20" not in rulesets[0], rulesets[0]
    # The kernel lists chains in the order they were created: the staged program adds base chains last.
    staged_objects = _objects(rulesets[0])
    assert {("ip kube-proxy-swift", "chain", "nat-prerouting"), ("ip6 kube-proxy-swift", "map", "service-ips")} <= set(staged_objects)
    swapped_objects = _objects(rulesets[1])
    assert all(name.endswith(".b") for _, _, name in swapped_objects), sorted(swapped_objects)
    assert staged_objects == _objects(_generation_a_names(rulesets[1]))


def _generation_a_names(ruleset):
    """A ruleset of generation b with the names generation a gives the same objects."""
    return re.sub(r"([a-z][a-z0-9-]*)\.b(?=[\s,;}]|$)", r"\1", ruleset, flags=re.M)


def _bulk_services(count, endpoints):
    """<count> ClusterIP services (10.100.0.0/16) with <endpoints> endpoints each (10.245.0.0/16)."""
    documents = []
    for index in range(count):
        name = f"bulk-{index}"
        addresses = "\n".join(f"- addresses: [\"10.245.{(index * endpoints + e) >> 8 & 255}.{(index * endpoints + e) & 255}\"]"
                              for e in range(endpoints))
        documents.append(f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  clusterIP: 10.100.{index >> 8}.{index & 255}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
{addresses}
""")
    return "---\n".join(documents)


def _objects(ruleset):
    """A listed ruleset as {(table, kind, name): text} for every set, map and chain."""
    objects, table = {}, None
    for block in re.finditer(r"^table ([^\n]+) \{$|^\t(set|map|chain) (\S+) \{\n.*?^\t\}$", ruleset, re.M | re.S):
        if block.group(1):
            table = block.group(1)
        else:
            objects[(table, block.group(2), block.group(3))] = block.group(0)
    return objects


def test_affinity_services_beyond_one_tables_worth_spread_over_more_tables_and_back(cluster):
    """100 dual-stack ClientIP services (beyond `AffinityShards.servicesPerShard`, 64) make node 1
    resync in full with two affinity tables per family; clients stick to one endpoint of services
    in either table, over IPv4 and IPv6. Deleted again, they leave one affinity table per family,
    and the fixture's `sticky` keeps working throughout. The drift test after this one finds
    that every drift check in between matched."""
    lab = cluster.lab
    def address(index, v6):
        return f"fd00:10:96::{0x9700 + index:x}" if v6 else f"10.97.0.{index + 1}"
    names = [f"affine-{index}" for index in range(100)]
    bulk = "---\n".join(dual_stack_yaml(name, (address(index, False), address(index, True)), ["p1a", "p2a"], affinity=True)
                        for index, name in enumerate(names))
    def tables():
        return {line.split()[2] for line in lab.run(cluster.nodes[1], "nft", "list", "tables").stdout.splitlines()
                if "kube-proxy-swift-affinity" in line}
    def shard_addresses(family, table):
        """The bulk services' addresses whose verdicts are in <table>."""
        listed = lab.run(cluster.nodes[1], "nft", "list", "table", family, table).stdout
        return re.findall(r"(10\.97\.[0-9.]+|fd00:10:96::97[0-9a-f]{2}) \. tcp \. 80 : goto aff", listed)
    def affinity_metrics():
        """Node 1's affinity services and tables, as its /metrics says."""
        text = cluster.metrics(1)
        return [float(re.search(rf"^kubeproxy_node_applier_affinity_{name} (\S+)$", text, re.M).group(1))
                for name in ("services", "tables")]
    def sticks(host, pods=("p1a", "p2a")):
        answering = cluster.answering(cluster.probe("p1b", "tcp", host, 80, count=12))
        assert len(answering) == 1 and answering <= set(pods), (host, answering)
    cluster.apply(bulk)
    try:
        eventually(lambda: _assert_equal(tables(), {"kube-proxy-swift-affinity", "kube-proxy-swift-affinity-1"}), timeout=30)
        eventually(lambda: _assert_equal(affinity_metrics(), [101, 2]))  # and the fixture's `sticky`
        for family in ("ip", "ip6"):
            for table in ("kube-proxy-swift-affinity", "kube-proxy-swift-affinity-1"):
                found = shard_addresses(family, table)
                assert found, (family, table)
                eventually(lambda: sticks(found[0]))
    finally:
        lab.proxyctl(cluster.cp, "delete", "-f", "-", input=bulk)
    eventually(lambda: _assert_equal(tables(), {"kube-proxy-swift-affinity"}), timeout=30)
    eventually(lambda: _assert_equal(affinity_metrics(), [1, 1]))
    sticks("10.96.0.14", ("p1a", "p2a", "p2b"))


def test_rule_added_and_table_deleted_by_hand_are_repaired(cluster):
    lab = cluster.lab
    def count(pattern):
        found = re.search(rf"^{pattern} (\d+)$", cluster.metrics(1), re.M)
        return int(found.group(1)) if found else 0
    def checks(result):
        return count(rf'kubeproxy_node_applier_drift_checks_total\{{result="{result}"\}}')
    # The drift check ran every second through the tests before. It listed the tables once after
    # each full program (several commits), and not after the applier's own partial syncs (each the
    # only commit since the last).
    def listed_after_full_programs_only():
        full_programs = count("kubeproxy_sync_full_proxy_rules_duration_seconds_count")
        assert checks("unchanged") > 0 and 0 < checks("matched") <= full_programs, cluster.metrics(1)
    eventually(listed_after_full_programs_only)
    # Listings beside changes: another program commits every ~30 ms while 20 changes are applied,
    # so every check lists, and syncs run during listings. None may report drift: a listing
    # during which a sync changed the plan is not compared, and commits elsewhere leave our
    # tables as they were.
    listings = checks("matched") + checks("interrupted")
    committer = lab.start("elsewhere-commits", cluster.nodes[1], [
        "sh", "-c", "for i in $(seq 150); do nft add table ip elsewhere; nft delete table ip elsewhere; sleep 0.02; done"])
    try:
        for change in range(20):
            cluster.set_endpoints("np", ["p2a", "p2b"] if change % 2 == 0 else ["p2a"])
    finally:
        committer.wait(timeout=60)
    assert committer.returncode == 0
    assert checks("matched") + checks("interrupted") >= listings + 2, cluster.metrics(1)
    assert checks("drifted") == 0, cluster.metrics(1)
    # Another program's commit (a table of its own): the next check lists the tables, which must
    # match the plan after every partial sync of the tests before.
    matched = checks("matched")
    lab.run(cluster.nodes[1], "nft", "add", "table", "ip", "elsewhere")
    lab.run(cluster.nodes[1], "nft", "delete", "table", "ip", "elsewhere")
    def listed():
        assert checks("matched") > matched, cluster.metrics(1)
    eventually(listed)
    assert re.search(r"^kubeproxy_node_applier_drift_repairs_total 0$", cluster.metrics(1), re.M), cluster.metrics(1)
    # A rule added by hand to one of our chains (whichever generation's names are live; the repair
    # swaps in the other).
    def services_chain():
        chains = lab.run(cluster.nodes[1], "nft", "list", "chains", "ip").stdout
        return re.search(r"^\tchain (services(?:\.b)?) \{", chains, re.M).group(1)
    lab.run(cluster.nodes[1], "nft", "insert", "rule", "ip", "kube-proxy-swift", services_chain(), "tcp", "dport", "30080", "drop")
    def rule_removed():
        # While the repair stages, both generations' chains are listed, and the old one may be gone
        # by the time it is asked for.
        listed = lab.run(cluster.nodes[1], "nft", "list", "chain", "ip", "kube-proxy-swift", services_chain(), check=False)
        assert listed.returncode == 0 and "dport 30080 drop" not in listed.stdout, listed
        assert re.search(r"^kubeproxy_node_applier_drift_repairs_total 1$", cluster.metrics(1), re.M)
        assert cluster.probe("client", "tcp", "192.168.100.11", 30080) == ["p2a 192.168.100.11"]
    eventually(rule_removed, timeout=20)
    lab.run(cluster.nodes[1], "nft", "delete", "table", "ip", "kube-proxy-swift")
    def repaired():
        assert lab.run(cluster.nodes[1], "nft", "list", "table", "ip", "kube-proxy-swift", check=False).returncode == 0
        assert cluster.probe("client", "tcp", "192.168.100.11", 30080) == ["p2a 192.168.100.11"]
    eventually(repaired, timeout=20)
    assert re.search(r"^kubeproxy_node_applier_drift_repairs_total 2$", cluster.metrics(1), re.M)
    # The ClientIP-affinity table, alone.
    lab.run(cluster.nodes[1], "nft", "delete", "table", "ip6", "kube-proxy-swift-affinity")
    def affinity_repaired():
        listed = lab.run(cluster.nodes[1], "nft", "list", "table", "ip6", "kube-proxy-swift-affinity", check=False).stdout
        assert re.search(r"chain aff-nat-prerouting(?:\.b)? \{\n\t\ttype nat hook prerouting", listed), listed
        assert re.search(r"^kubeproxy_node_applier_drift_repairs_total 3$", cluster.metrics(1), re.M)
    eventually(affinity_repaired, timeout=20)


CLASH = """
apiVersion: v1
kind: Service
metadata: {name: clash, namespace: default}
spec:
  clusterIP: 10.96.0.40
  ports: [{name: http, port: 80, targetPort: 8080}]
---
""" + slice_yaml("clash", "clash", ["p2b"], HTTP)


def test_transaction_the_kernel_refuses_is_reported_and_repaired_by_a_full_sync(cluster):
    """An element added by hand, with another endpoint, where a new service's frontend goes (the
    single-endpoint map; the drift check does not read elements): the kernel refuses the partial
    sync that brings the service ("File exists"). The
    applier counts and logs the failure, NACKs the revision with the kernel's error, and resyncs in
    full, which stages fresh tables under the other generation's names (the hand-made element goes
    with the old ones) and brings the service in. Node 2 takes the same change at once."""
    lab = cluster.lab
    def counter(text, name):
        found = re.search(rf"^\S*{name} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0
    def failures():
        return counter(cluster.metrics(1), "nftables_sync_failures_total")
    def nacks():
        return counter(cluster.scrape(cluster.cp, 7701), "nodesync_nacks_total")
    before, nacked, generation = failures(), nacks(), _generations(cluster, 1)
    assert len(generation) == 1, generation
    single = "single-backends-tcp" + (".b" if generation == {True} else "")
    lab.run(cluster.nodes[1], "nft", f"add element ip kube-proxy-swift {single} {{ 10.96.0.40 . tcp . 80 : 10.244.9.9 . 9 }}")
    cluster.apply(CLASH)
    try:
        eventually(lambda: _assert_equal(cluster.answering(cluster.probe("p2a", "tcp", "10.96.0.40", 80, count=5)), {"p2b"}))
        def repaired():
            assert _generations(cluster, 1) == {not next(iter(generation))}
            assert cluster.answering(cluster.probe("p1b", "tcp", "10.96.0.40", 80, count=5)) == {"p2b"}
        eventually(repaired, timeout=30)
        assert failures() == before + 1 and nacks() == nacked + 1
        for process in ("applier-n1", "control-server"):
            with open(lab.logs[process]) as log:
                # The error names the set: element changes go to the kernel as one netlink batch.
                assert f"(adding to ip set {single}): File exists" in log.read(), process
        listed = lab.run(cluster.nodes[1], "nft", "list", "ruleset").stdout
        assert "10.96.0.40 . tcp . 80 : 10.244.9.9 . 9" not in listed and "10.96.0.40 . tcp . 80 : goto pick-tcp-1" in listed
    finally:
        lab.proxyctl(cluster.cp, "delete", "-f", "-", input=CLASH)


def test_failing_applier_fails_its_service_health_checks(cluster):
    """As kube-proxy's: while the applier is unhealthy, every service health check on its node
    answers 503, local endpoints or not, so load balancers drain a node whose rules may be stale.
    A chain added by hand under the next generation's names, and jumped to from a live chain, makes
    every resync fail: its first step cannot delete a chain in use. Node 1 turns unhealthy, its
    rules stay as they were, and it recovers once the jump is gone."""
    lab, node = cluster.lab, cluster.nodes[1]
    assert _health_check(cluster, 1) == (200, "2", {"localEndpoints": 2, "serviceProxyHealthy": True})
    live_b = _generations(cluster, 1) == {True}
    stray, live_chain = ("stray", "cluster-ips-check.b") if live_b else ("stray.b", "cluster-ips-check")
    lab.run(node, "nft", "add", "chain", "ip", "kube-proxy-swift", stray)
    lab.run(node, "nft", "add", "rule", "ip", "kube-proxy-swift", live_chain, "jump", stray)
    answered = _probe_answers(cluster, 1)
    try:
        def unhealthy():
            assert _healthz(cluster, 1)[0] == 503
            assert _health_check(cluster, 1) == (503, "2", {"localEndpoints": 2, "serviceProxyHealthy": False})
        eventually(unhealthy, timeout=20)
        assert cluster.probe("client", "tcp", "192.168.100.11", 30080, count=3) == [via(1, "p2a")] * 3
        # A liveness probe keeps the applier: failed syncs are retried, and no change has waited
        # a minute.
        assert _healthz(cluster, 1, "livez") == (200, {"pendingSeconds": 0})
    finally:
        listed = lab.run(node, "nft", "-a", "list", "chain", "ip", "kube-proxy-swift", live_chain).stdout
        handle = re.search(rf"jump {re.escape(stray)} # handle (\d+)", listed).group(1)
        lab.run(node, "nft", "delete", "rule", "ip", "kube-proxy-swift", live_chain, "handle", handle)
    def recovered():
        assert _healthz(cluster, 1)[0] == 200
        assert _health_check(cluster, 1) == (200, "2", {"localEndpoints": 2, "serviceProxyHealthy": True})
        assert stray not in lab.run(node, "nft", "list", "chains", "ip").stdout
    eventually(recovered, timeout=40)
    # Every answer counted by its code, as kube-proxy's `kubeproxy_proxy_healthz_total` and
    # `kubeproxy_proxy_livez_total` count them.
    after = _probe_answers(cluster, 1)
    for key, least in ((("healthz", "503"), 1), (("healthz", "200"), 1), (("livez", "200"), 1)):
        assert after[key] >= answered[key] + least, (key, answered, after)
    assert after[("livez", "503")] == answered[("livez", "503")]


def _set_web(cluster, pods):
    """web's endpoints, HTTP and DNS, in both families' slices: one Apply, so one revision."""
    ports = [("http", "TCP"), ("dns", "UDP")]
    cluster.apply(slice_yaml("web", "web", pods, ports) + "---\n" + slice_yaml("web-v6", "web", pods, ports, v6=True))


def _web_verdicts(cluster):
    """Node 1's verdicts for web's frontends (IPv4 TCP and UDP, IPv6 TCP), by frontend."""
    listed = cluster.lab.run(cluster.nodes[1], "nft", "list", "ruleset").stdout
    pattern = r"(10\.96\.0\.10 \. (?:tcp \. 80|udp \. 53)|fd00:10:96::10 \. tcp \. 80) : goto (pick-[a-z]+-\d+)"
    return dict(re.findall(pattern, listed))


def _rehomes(metrics):
    """How many rehomes an applier's /metrics text reports."""
    found = re.search(r"^kubeproxy_node_applier_rehome_duration_seconds_count (\S+)$", metrics, re.M)
    return float(found.group(1)) if found else 0.0


def _generations(cluster, number):
    """Which generations the names of node <number>'s chains are of: {False} a, {True} b (".b")."""
    chains = cluster.lab.run(cluster.nodes[number], "nft", "list", "chains").stdout
    return {name.endswith(".b") for name in re.findall(r"^\tchain (\S+) \{", chains, re.M)}


def test_applier_restart_does_not_interrupt_traffic(cluster):
    lab = cluster.lab
    before = _generations(cluster, 1)
    assert len(before) == 1, before
    probe = subprocess.Popen(
        ["ip", "netns", "exec", lab.prefix + "client", sys.executable, os.path.join(HERE, "probe.py"), "tcp",
         "192.168.100.11", "30080", "150", "1", "0.02"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    lab.stop("applier-n1")
    time.sleep(0.5)
    lab.start_applier(1)
    output, _ = probe.communicate(timeout=120)
    results = json.loads(output)
    assert results == ["p2a 192.168.100.11"] * 150, [r for r in results if not r.startswith("p2a")]
    # The restarted applier swapped in the other generation of names; nothing of the old one is left.
    eventually(lambda: _assert_equal(_generations(cluster, 1), {not next(iter(before))}), timeout=30)
    # The restarted applier reconciles: a change made now reaches node 1.
    cluster.set_endpoints("np", ["p1a"])
    eventually(lambda: _assert_equal(cluster.probe("client", "tcp", "192.168.100.11", 30080), [via(1, "p1a")]),
               timeout=30)
    cluster.set_endpoints("np", ["p2a"])


def test_cleanup_deletes_our_tables_and_nothing_else(cluster):
    """Stopping an applier leaves its rules in place; `node-applier --cleanup` (kube-proxy's
    `--cleanup`) then deletes its tables, leaves other tables alone, and can run again."""
    lab = cluster.lab
    ns = lab.lan_host("cleanup", 33)
    lab.run(ns, "nft", "add table ip host-firewall; add chain ip host-firewall input { type filter hook input priority 0; }")
    lab.start_applier(1, ns=ns, key="applier-cleanup")
    try:
        cluster.wait_caught_up(ns)
    finally:
        lab.stop("applier-cleanup")
    assert _tables(lab, ns) == {"ip host-firewall", "ip kube-proxy-swift", "ip6 kube-proxy-swift",
                                "ip kube-proxy-swift-affinity", "ip6 kube-proxy-swift-affinity"}
    # An affinity shard's table (past 64 affinity services), and one whose name only looks like it.
    lab.run(ns, "nft", "add table ip6 kube-proxy-swift-affinity-3; add table ip kube-proxy-swift-affinity-x")
    for _ in range(2):
        lab.run(ns, os.path.join(BUILD, "node-applier"), "--cleanup")
        assert _tables(lab, ns) == {"ip host-firewall", "ip kube-proxy-swift-affinity-x"}


def test_both_daemons_report_their_process_in_their_metrics(cluster):
    """Prometheus' standard process metrics (`process_resident_memory_bytes` and the others, as
    kube-proxy's /metrics has them), against what the kernel says of the same processes."""
    lab = cluster.lab
    for key, ns, port in (("applier-n1", cluster.nodes[1], 10256), ("control-server", cluster.cp, 7701)):
        pid = lab.processes[key].pid
        text = cluster.scrape(ns, port)
        with open(f"/proc/{pid}/status") as status:
            resident = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
        held = len(os.listdir(f"/proc/{pid}/fd"))
        samples = {}
        for name, kind in (("process_cpu_seconds_total", "counter"), ("process_resident_memory_bytes", "gauge"),
                           ("process_virtual_memory_bytes", "gauge"), ("process_open_fds", "gauge"),
                           ("process_max_fds", "gauge"), ("process_start_time_seconds", "gauge")):
            assert f"# TYPE {name} {kind}\n" in text, (key, name)
            samples[name] = float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))
        assert abs(samples["process_resident_memory_bytes"] - resident) <= max(4 << 20, resident // 10), (key, samples)
        assert samples["process_virtual_memory_bytes"] >= samples["process_resident_memory_bytes"], (key, samples)
        # The scrape's own connection may come and go.
        assert abs(samples["process_open_fds"] - held) <= 4, (key, samples, held)
        assert held < samples["process_max_fds"], (key, samples)
        assert 0 < samples["process_cpu_seconds_total"], (key, samples)
        assert time.time() - 3600 < samples["process_start_time_seconds"] <= time.time(), (key, samples)


def test_conntrack_timeouts_are_kube_proxys(cluster):
    """kube-proxy's conntrack tuning: in each node's network namespace, idle established TCP flows
    stay tracked 1 day and CLOSE_WAIT ones 1 hour (the kernel's defaults: 5 days and 60 s). The
    table's size is machine-wide, set from the initial namespace only: a node in a namespace
    leaves it alone and says so."""
    lab = cluster.lab

    def sysctl(ns, name):
        return int(lab.run(ns, "cat", f"/proc/sys/net/netfilter/{name}").stdout)

    for number in (1, 2):
        assert sysctl(cluster.nodes[number], "nf_conntrack_tcp_timeout_established") == 86400
        assert sysctl(cluster.nodes[number], "nf_conntrack_tcp_timeout_close_wait") == 3600
    assert sysctl(cluster.cp, "nf_conntrack_tcp_timeout_close_wait") == 60, "a namespace without an applier keeps the kernel's"
    with open(lab.logs["applier-n2"]) as log:
        assert "the table's size (machine-wide) is left alone" in log.read()


def test_affinity_objects_left_in_the_main_table_are_replaced(cluster):
    """A build before the affinity table kept ClientIP affinity's chains and sets in the main
    table, where an object's name no longer says it is: the applier replaces the tables as a whole
    instead of swapping (which removes objects by name), once."""
    lab = cluster.lab
    ns = lab.lan_host("upgrade", 34)
    lab.run(ns, "nft", "add table ip kube-proxy-swift; "
            "add chain ip kube-proxy-swift nat-prerouting { type nat hook prerouting priority -100; }; "
            "add set ip kube-proxy-swift aff-old { type ipv4_addr; flags dynamic,timeout; timeout 600s; }; "
            "add chain ip kube-proxy-swift aff-old; add rule ip kube-proxy-swift aff-old update @aff-old { ip saddr }")
    lab.start_applier(1, ns=ns, key="applier-upgrade")
    try:
        cluster.wait_caught_up(ns)
        listed = lab.run(ns, "nft", "list", "ruleset").stdout
        assert "aff-old" not in listed and "table ip kube-proxy-swift-affinity {" in listed, listed
        assert re.search(r"^kubeproxy_sync_proxy_rules_nftables_sync_failures_total 0$", cluster.metrics(1, ns), re.M)
    finally:
        lab.stop("applier-upgrade")


def _tables(lab, ns):
    return {line.removeprefix("table ") for line in lab.run(ns, "nft", "list", "tables").stdout.splitlines()}


def test_control_server_down_traffic_keeps_flowing_and_nodes_catch_up(cluster):
    lab = cluster.lab
    assert _healthz(cluster, 1) == (200, {"connected": True, "failing": False, "pendingSeconds": 0})
    lab.stop("control-server", sig=signal.SIGKILL)
    time.sleep(2)
    # Fail static: the rules are as the server left them, so the node stays healthy.
    assert _healthz(cluster, 1) == (200, {"connected": False, "failing": False, "pendingSeconds": 0})
    assert _healthz(cluster, 1, "livez") == (200, {"pendingSeconds": 0})
    for number in (1, 2):
        assert cluster.probe("client", "tcp", f"192.168.100.1{number}", 30080, count=5) == [via(number, "p2a")] * 5
    assert cluster.answering(cluster.probe("p1b", "tcp", "10.96.0.10", 80, count=20)) == {"p1a", "p2a", "p2b"}
    lab.start_control_server(cluster.cp, cluster.db)
    cluster.set_endpoints("np", ["p1a"])
    for number in (1, 2):
        eventually(lambda: _assert_equal(cluster.probe("client", "tcp", f"192.168.100.1{number}", 30080), [via(number, "p1a")]),
                   timeout=60)


def _healthz(cluster, number, path="healthz"):
    """The status and body of node <number>'s applier /healthz (or /livez), but for the time of
    its last sync."""
    code = ("import urllib.request, urllib.error\n"
            f"try: response = urllib.request.urlopen('http://127.0.0.1:10256/{path}')\n"
            "except urllib.error.HTTPError as error: response = error\n"
            "print(response.status); print(response.read().decode())")
    status, body = cluster.lab.run(cluster.nodes[number], sys.executable, "-c", code).stdout.split("\n", 1)
    state = json.loads(body)
    assert state.pop("lastUpdated") > 0, state
    return int(status), state


def _probe_answers(cluster, number):
    """Node <number>'s counts of /healthz and /livez answers by status code, from its /metrics."""
    found = re.findall(r'^kubeproxy_proxy_(healthz|livez)_total\{code="(\d+)"\} (\S+)$', cluster.metrics(number), re.M)
    return {(path, code): float(value) for path, code, value in found}


def via(node, pod):
    """What <pod> answers to a masqueraded NodePort connection through <node>: the node's address
    on the way to the pod (its pod bridge when the pod is local, else its LAN address)."""
    source = f"10.244.{node}.1" if PODS[pod][0] == node else f"192.168.100.1{node}"
    return f"{pod} {source}"


def _assert_equal(actual, expected):
    assert actual == expected, actual
