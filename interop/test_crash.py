"""Durability: every write the server acknowledged survives kill -9 of the server process,
and the database passes SQLite's integrity check afterwards."""
import os
import signal
import sqlite3
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
