"""Durability: every write the server acknowledged survives kill -9 of the server process, a
power cut and a full disk, and the database passes SQLite's integrity check afterwards; and every
write is synced to disk before it is acknowledged."""
import fcntl
import os
import re
import sqlite3
import struct
import subprocess
import threading
import time
import urllib.request

import grpc

from conftest import Server


def slice_object(pb2, name, address):
    return pb2.Object(endpoint_slice=pb2.EndpointSlice(
        metadata=pb2.ObjectMeta(namespace="default", name=name), service_name="web", address_type="IPv4",
        ports=[pb2.EndpointPort(name="http", protocol=pb2.TCP, port=8080)],
        endpoints=[pb2.Endpoint(addresses=[address])]))


class Writers:
    """Eight clients writing EndpointSlices (50 names each) as fast as the server answers, until
    `stop` or their first failed call. `acknowledged` maps a name to the address and revision of
    its last acknowledged write."""

    def __init__(self, stubs, target):
        self.pb2, self.pb2_grpc = stubs
        self.target = target
        self.acknowledged = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.write, args=(worker,)) for worker in range(8)]
        for thread in self.threads:
            thread.start()

    def write(self, worker):
        pb2 = self.pb2
        channel = grpc.insecure_channel(self.target)
        stub = self.pb2_grpc.RegistryStub(channel)
        sequence = 0
        while not self.stopping.is_set():
            sequence += 1
            name = f"w{worker}-{sequence % 50}"
            address = f"10.{worker + 1}.{sequence // 250 % 250}.{sequence % 250 + 1}"
            try:
                response = stub.Apply(pb2.ApplyRequest(items=[pb2.ApplyItem(object=slice_object(pb2, name, address))]),
                                      timeout=5)
            except grpc.RpcError:
                break  # the server died or failed mid-call: this write was never acknowledged
            with self.lock:
                self.acknowledged[name] = (address, response.revision)
        channel.close()

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join()
        assert len(self.acknowledged) > 50, "the writers made progress before the crash"


def assert_integrity(database):
    connection = sqlite3.connect(database)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    connection.close()


def assert_acknowledged_writes_stored(stubs, server, acknowledged):
    pb2, pb2_grpc = stubs
    channel = grpc.insecure_channel(server.target)
    stub = pb2_grpc.RegistryStub(channel)
    for name, (address, revision) in acknowledged.items():
        try:
            got = stub.Get(pb2.GetRequest(ref=pb2.ObjectRef(kind=pb2.ENDPOINT_SLICE, namespace="default", name=name)))
        except grpc.RpcError as error:
            raise AssertionError(f"{name}, acknowledged at revision {revision}: {error.code()}") from None
        stored = got.object.endpoint_slice
        # A later write may have landed after its ack was lost in the crash, never an earlier one.
        assert stored.metadata.revision >= revision, \
            f"{name}: acknowledged at revision {revision}, stored at {stored.metadata.revision}"
        if stored.metadata.revision == revision:
            assert list(stored.endpoints[0].addresses) == [address], name
    info = stub.ServerInfo(pb2.ServerInfoRequest())
    assert info.head_revision >= max(revision for _, revision in acknowledged.values())
    channel.close()


def kill(server):
    if server.process.poll() is None:
        server.process.kill()
    server.process.wait()
    server.log.close()


def test_acknowledged_writes_survive_kill_9(tmp_path, stubs):
    workdir = str(tmp_path)
    server = Server(workdir)
    writers = Writers(stubs, server.target)
    time.sleep(2.0)
    kill(server)
    writers.stop()

    database = os.path.join(workdir, "state.db")
    assert_integrity(database)
    restarted = Server(workdir)
    try:
        assert_acknowledged_writes_stored(stubs, restarted, writers.acknowledged)
    finally:
        restarted.stop()
    assert_integrity(database)


class LoopFileSystem:
    """An ext4 file system of its own in `directory`, on a loop device (root only), unmounted on
    exit."""

    # FS_IOC_SHUTDOWN (_IOR('X', 125, __u32)) with FS_SHUTDOWN_FLAGS_NOLOGFLUSH: the file system
    # stops at once, writing neither its dirty pages nor its journal.
    FS_IOC_SHUTDOWN = 0x8004587D
    FS_SHUTDOWN_FLAGS_NOLOGFLUSH = 2

    def __init__(self, directory, size=64 << 20):
        self.image, self.path = directory / "disk.img", directory / "disk"
        self.path.mkdir()
        with open(self.image, "wb") as file:
            file.truncate(size)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], check=True)
        self.mount()

    def mount(self):
        subprocess.run(["mount", "-o", "loop", str(self.image), str(self.path)], check=True)

    def unmount(self):
        subprocess.run(["umount", str(self.path)], check=True)

    def cut_power(self):
        """What xfstests does to simulate a power failure: what the page cache held and nobody
        synced is lost; every later write fails."""
        mount_point = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.ioctl(mount_point, self.FS_IOC_SHUTDOWN, struct.pack("I", self.FS_SHUTDOWN_FLAGS_NOLOGFLUSH))
        finally:
            os.close(mount_point)

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        if os.path.ismount(self.path):
            self.unmount()


def test_acknowledged_writes_survive_a_power_cut(tmp_path, stubs):
    """The database on a file system of its own, whose power is cut mid-write (`cut_power`). It
    is mounted again (journal recovery) and a new server started on the database: every write
    the first one acknowledged must be there. With `synchronous=NORMAL` they are not: SQLite
    would sync the WAL only at checkpoints."""
    with LoopFileSystem(tmp_path) as disk:
        database = str(disk.path / "state.db")
        server = Server(str(tmp_path), database)
        try:
            writers = Writers(stubs, server.target)
            time.sleep(1.5)
            disk.cut_power()
            writers.stop()
        finally:
            kill(server)
        disk.unmount()
        disk.mount()

        assert_integrity(database)
        server = Server(str(tmp_path), database)
        try:
            assert_acknowledged_writes_stored(stubs, server, writers.acknowledged)
        finally:
            server.stop()
        assert_integrity(database)


def test_a_full_disk_fails_writes_clearly_and_loses_nothing(tmp_path, stubs):
    """The database's file system fills up: writes fail with RESOURCE_EXHAUSTED saying so, the
    server logs and counts them, reads go on, a node that connects (whose registration is a write)
    gets its snapshot, and once there is room again writes succeed without a restart. Nothing
    acknowledged is lost; the database passes SQLite's integrity check."""
    pb2, pb2_grpc = stubs
    with LoopFileSystem(tmp_path, size=16 << 20) as disk:
        database = str(disk.path / "state.db")
        filler = disk.path / "filler"
        stat = os.statvfs(disk.path)
        with open(filler, "wb") as file:
            file.write(b"\0" * (stat.f_bavail * stat.f_frsize - (2 << 20)))
        server = Server(str(tmp_path), database)
        try:
            channel = grpc.insecure_channel(server.target)
            stub = pb2_grpc.RegistryStub(channel)

            def apply(name):
                large = slice_object(pb2, name, "10.0.0.1")
                large.endpoint_slice.endpoints.extend(
                    pb2.Endpoint(addresses=[f"10.1.{n // 250}.{n % 250 + 1}"]) for n in range(999))
                return stub.Apply(pb2.ApplyRequest(items=[pb2.ApplyItem(object=large)]), timeout=10).revision

            acknowledged = {}
            for sequence in range(200):
                name = f"large-{sequence}"
                try:
                    acknowledged[name] = ("10.0.0.1", apply(name))
                except grpc.RpcError as error:
                    refused = error
                    break
            else:
                raise AssertionError("200 writes of 1,000 endpoints fit in 2 MiB")
            assert len(acknowledged) > 5, "the disk filled before the writes had begun"
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused
            assert "storage full, nothing was written" in refused.details(), refused.details()

            listed = stub.List(pb2.ListRequest(kind=pb2.ENDPOINT_SLICE))
            assert sorted(item.endpoint_slice.metadata.name for item in listed.objects) == sorted(acknowledged)
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics", timeout=5).read().decode()
            assert re.search(r'^kubeproxy_store_failed_writes_total\{reason="full"\} [1-9]', metrics, re.M), metrics
            with open(server.log.name) as log:
                assert "writes failed in storage" in log.read()

            connected = threading.Event()

            def hello():
                yield pb2.NodeMessage(hello=pb2.Hello(node=pb2.Node(metadata=pb2.ObjectMeta(name="late-node"))))
                connected.wait(10)

            responses = pb2_grpc.NodeSyncStub(channel).Sync(hello(), timeout=10)
            snapshot = next(responses).snapshot
            connected.set()
            responses.cancel()
            assert sorted(item.metadata.name for item in snapshot.endpoint_slices) == sorted(acknowledged)

            os.remove(filler)
            acknowledged[name] = ("10.0.0.1", apply(name))
            channel.close()
        finally:
            server.stop()
        assert_integrity(database)
        server = Server(str(tmp_path), database)
        try:
            assert_acknowledged_writes_stored(stubs, server, acknowledged)
        finally:
            server.stop()


def test_every_write_is_synced_to_disk_before_it_is_acknowledged(server, registry):
    """One write at a time: each answer must come after the WAL was flushed (fdatasync), as
    `synchronous=FULL` does. With `NORMAL` SQLite syncs only at checkpoints (every 1,000 pages),
    and 40 small writes would see none."""
    pb2, stub, _ = registry
    trace = os.path.join(os.path.dirname(server.log.name), "syncs.trace")
    tracer = subprocess.Popen(
        ["strace", "-f", "-e", "trace=fsync,fdatasync", "-o", trace, "-p", str(server.process.pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # strace says "Process N attached" for each thread once it traces it.
        assert "attached" in tracer.stderr.readline(), "strace did not attach"
        time.sleep(0.5)
        writes = 40
        for sequence in range(writes):
            stub.Apply(pb2.ApplyRequest(items=[pb2.ApplyItem(
                object=slice_object(pb2, "web-1", f"10.244.0.{sequence + 1}"))]), timeout=5)
    finally:
        tracer.terminate()
        tracer.wait(timeout=10)
    with open(trace) as lines:
        syncs = sum(1 for line in lines if "fdatasync(" in line or "fsync(" in line)
    assert syncs >= writes, f"{syncs} syncs for {writes} acknowledged writes"
