"""Durability: every write the server acknowledged survives kill -9 of the server process,
and the database passes SQLite's integrity check afterwards; and every write is synced to disk
before it is acknowledged (what a power failure needs, which kill -9 cannot show)."""
import os
import signal
import sqlite3
import subprocess
import threading
import time

import grpc

from conftest import Server


def slice_object(pb2, name, address):
    return pb2.Object(endpoint_slice=pb2.EndpointSlice(
        metadata=pb2.ObjectMeta(namespace="default", name=name), service_name="web", address_type="IPv4",
        ports=[pb2.EndpointPort(name="http", protocol=pb2.TCP, port=8080)],
        endpoints=[pb2.Endpoint(addresses=[address])]))


def test_acknowledged_writes_survive_kill_9(tmp_path, stubs):
    pb2, pb2_grpc = stubs
    workdir = str(tmp_path)
    server = Server(workdir)
    acknowledged = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(worker):
        channel = grpc.insecure_channel(server.target)
        stub = pb2_grpc.RegistryStub(channel)
        sequence = 0
        while not stop.is_set():
            sequence += 1
            name = f"w{worker}-{sequence % 50}"
            address = f"10.{worker + 1}.{sequence // 250 % 250}.{sequence % 250 + 1}"
            try:
                response = stub.Apply(pb2.ApplyRequest(items=[pb2.ApplyItem(object=slice_object(pb2, name, address))]),
                                      timeout=5)
            except grpc.RpcError:
                break  # the server died mid-call: this write was never acknowledged
            with lock:
                acknowledged[name] = (address, response.revision)
        channel.close()

    threads = [threading.Thread(target=writer, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    stop.set()
    for thread in threads:
        thread.join()
    server.log.close()
    assert len(acknowledged) > 50, "the writers made progress before the crash"

    database = os.path.join(workdir, "state.db")
    connection = sqlite3.connect(database)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    connection.close()

    restarted = Server(workdir)
    try:
        channel = grpc.insecure_channel(restarted.target)
        stub = pb2_grpc.RegistryStub(channel)
        for name, (address, revision) in acknowledged.items():
            got = stub.Get(pb2.GetRequest(ref=pb2.ObjectRef(kind=pb2.ENDPOINT_SLICE, namespace="default", name=name)))
            stored = got.object.endpoint_slice
            # A later write may have landed after its ack was lost in the crash, never an earlier one.
            assert stored.metadata.revision >= revision, name
            if stored.metadata.revision == revision:
                assert list(stored.endpoints[0].addresses) == [address], name
        info = stub.ServerInfo(pb2.ServerInfoRequest())
        assert info.head_revision >= max(revision for _, revision in acknowledged.values())
        channel.close()
    finally:
        restarted.stop()
    connection = sqlite3.connect(database)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    connection.close()


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
