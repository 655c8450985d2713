"""A small cluster built from network namespaces: a LAN bridge, a control-plane host, nodes with
pods behind them, and outside clients. Private addresses inside the namespaces only; everything
is removed by close(), also after a failure.

Addresses (IPv4 / IPv6):
  LAN           192.168.100.0/24   fd00:100::/64    (bridge in namespace <prefix>lan)
  control plane 192.168.100.1      fd00:100::1
  node N        192.168.100.1N     fd00:100::1N     pods 10.244.N.0/24, fd00:244:N::/64
  clients       192.168.100.5x     fd00:100::5x
"""
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("KUBEPROXY_BUILD", os.path.join(ROOT, ".build", "debug"))
HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER_CIDRS = ["10.244.0.0/16", "fd00:244::/48"]


def sh(*args, check=True, **kwargs):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, **kwargs)


class Lab:
    def __init__(self, workdir, prefix="kpe-"):
        self.workdir = workdir
        self.prefix = prefix
        self.namespaces = []
        self.processes = {}
        self.logs = {}
        self.remove_leftovers()
        self.lan = self.namespace("lan")
        sh("ip", "-n", self.lan, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.lan, "link", "set", "br0", "up")

    # --- topology -------------------------------------------------------------------------

    def remove_leftovers(self):
        for line in sh("ip", "netns", "list").stdout.splitlines():
            name = line.split()[0] if line.strip() else ""
            if name.startswith(self.prefix):
                self.kill_namespace_processes(name)
                sh("ip", "netns", "del", name, check=False)

    def namespace(self, name):
        full = self.prefix + name
        sh("ip", "netns", "add", full)
        self.namespaces.append(full)
        sh("ip", "-n", full, "link", "set", "lo", "up")
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0"):
            self.run(full, "sysctl", "-qw", key)
        return full

    def lan_host(self, name, index):
        """A host on the LAN bridge with 192.168.100.<index> and fd00:100::<index>."""
        ns = self.namespace(name)
        outside = f"l{index}"
        sh("ip", "link", "add", outside, "netns", self.lan, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", self.lan, "link", "set", outside, "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", f"192.168.100.{index}/24", "dev", "eth0")
        sh("ip", "-n", ns, "addr", "add", f"fd00:100::{index}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        return ns

    def node(self, number):
        """A node: LAN address 192.168.100.1<number>, pods in 10.244.<number>.0/24 on a bridge."""
        ns = self.lan_host(f"n{number}", 10 + number)
        sh("ip", "-n", ns, "link", "add", "pods", "type", "bridge")
        sh("ip", "-n", ns, "addr", "add", f"10.244.{number}.1/24", "dev", "pods")
        sh("ip", "-n", ns, "addr", "add", f"fd00:244:{number}::1/64", "dev", "pods", "nodad")
        sh("ip", "-n", ns, "link", "set", "pods", "up")
        # Like real nodes, a default route (here towards the control-plane host).
        sh("ip", "-n", ns, "route", "add", "default", "via", "192.168.100.1")
        sh("ip", "-n", ns, "-6", "route", "add", "default", "via", "fd00:100::1")
        return ns

    def route_pods(self, nodes):
        """Every node routes the other nodes' pod networks via their LAN addresses."""
        for number, ns in nodes.items():
            for other in nodes:
                if other != number:
                    sh("ip", "-n", ns, "route", "add", f"10.244.{other}.0/24", "via", f"192.168.100.{10 + other}")
                    sh("ip", "-n", ns, "-6", "route", "add", f"fd00:244:{other}::/64", "via", f"fd00:100::{10 + other}")

    def pod(self, name, node_number, index):
        """A pod on node <node_number> with 10.244.<node>.<index>, running the test server."""
        ns = self.namespace(name)
        node_ns = self.prefix + f"n{node_number}"
        host_end = f"v{name}"[:15]
        sh("ip", "link", "add", host_end, "netns", node_ns, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", node_ns, "link", "set", host_end, "master", "pods", "up")
        # As CNI's bridge plugin with hairpinMode (kubelet's default): with br_netfilter, a pod's
        # packets DNATed back to itself are bridged out of the port they came in on.
        sh("ip", "-n", node_ns, "link", "set", host_end, "type", "bridge_slave", "hairpin", "on")
        sh("ip", "-n", ns, "addr", "add", f"10.244.{node_number}.{index}/24", "dev", "eth0")
        sh("ip", "-n", ns, "addr", "add", f"fd00:244:{node_number}::{index}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", f"10.244.{node_number}.1")
        sh("ip", "-n", ns, "-6", "route", "add", "default", "via", f"fd00:244:{node_number}::1")
        self.start(name, ns, [sys.executable, os.path.join(HERE, "podserver.py"), name])
        return ns

    # --- processes ------------------------------------------------------------------------

    def run(self, ns, *args, check=True, timeout=60):
        return sh("ip", "netns", "exec", ns, *args, check=check, timeout=timeout)

    def start(self, key, ns, argv):
        log = open(os.path.join(self.workdir, f"{key}.log"), "a")
        self.logs[key] = log.name
        self.processes[key] = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=log, stderr=subprocess.STDOUT)
        return self.processes[key]

    def stop(self, key, sig=signal.SIGTERM, timeout=15):
        process = self.processes.pop(key, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def wait_listening(self, ns, host, port, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            result = self.run(ns, sys.executable, "-c",
                              f"import socket; socket.create_connection(({host!r}, {port}), timeout=0.5).close()", check=False)
            if result.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"nothing listens on {host}:{port} in {ns}")

    def start_control_server(self, ns, db):
        self.start("control-server", ns, [os.path.join(BUILD, "control-server"), "--db", db,
                                          "--listen", "192.168.100.1:7700", "--http-listen", "127.0.0.1:7701",
                                          "--heartbeat-interval", "1"])
        self.wait_listening(ns, "192.168.100.1", 7700)

    def start_applier(self, number, extra=(), ns=None, key=None):
        """node-applier as node n<number>, in that node's namespace unless <ns> names another."""
        ns = ns or self.prefix + f"n{number}"
        argv = [os.path.join(BUILD, "node-applier"), "--server", "192.168.100.1:7700", "--node", f"n{number}",
                "--node-ip", f"192.168.100.{10 + number}", "--node-ip", f"fd00:100::{10 + number}",
                "--zone", "zone-a", "--heartbeat-interval", "1", "--drift-check-interval", "1",
                "--min-sync-interval", "0.05", *extra]
        for cidr in CLUSTER_CIDRS:
            argv += ["--cluster-cidr", cidr]
        return self.start(key or f"applier-n{number}", ns, argv)

    def proxyctl(self, ns, *args, input=None, check=True):
        result = subprocess.run(["ip", "netns", "exec", ns, os.path.join(BUILD, "proxyctl"), "--server", "192.168.100.1:7700",
                                 *args], input=input, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(f"proxyctl {' '.join(args)} failed: {result.stderr}")
        return result

    def probe(self, ns, proto, host, port, count=1, timeout=1.0, interval=0.0, source_port=0):
        """Connections from <ns>: a list of 'pod client-address' answers or 'refused' / 'timeout'.
        UDP datagrams from one source_port are one conntrack flow."""
        result = self.run(ns, sys.executable, os.path.join(HERE, "probe.py"), proto, host, str(port), str(count),
                          str(timeout), str(interval), str(source_port), timeout=60 + count * (timeout + interval))
        return json.loads(result.stdout)

    # --- cleanup --------------------------------------------------------------------------

    def kill_namespace_processes(self, ns):
        pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def close(self):
        for key in list(self.processes):
            self.stop(key, timeout=5)
        for ns in reversed(self.namespaces):
            self.kill_namespace_processes(ns)
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces = []


def eventually(check, timeout=15.0, interval=0.2):
    """Retries <check> (which asserts) until it passes or <timeout> runs out."""
    deadline = time.time() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.time() > deadline:
                raise
            time.sleep(interval)
