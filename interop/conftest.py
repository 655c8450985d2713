"""Fixtures for interop tests: a real control-server process and Python stubs generated
from schema/proto in this test run (nothing generated is committed)."""
import os
import socket
import subprocess
import sys
import tempfile
import time

import grpc
import pytest
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.environ.get("CONTROL_SERVER", os.path.join(ROOT, ".build", "debug", "control-server"))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def stubs():
    out = tempfile.mkdtemp(prefix="kubeproxy-stubs-")
    proto_dir = os.path.join(ROOT, "schema", "proto")
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    code = protoc.main([
        "protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}",
        os.path.join(proto_dir, "kubeproxy.proto"),
    ])
    assert code == 0, "protoc failed"
    sys.path.insert(0, out)
    import kubeproxy_pb2
    import kubeproxy_pb2_grpc
    return kubeproxy_pb2, kubeproxy_pb2_grpc


class Server:
    """A control-server with its log in `workdir`, and its database there too unless `database`
    names it."""

    def __init__(self, workdir, database=None):
        self.port = free_port()
        self.http_port = free_port()
        self.log = open(os.path.join(workdir, "server.log"), "w")
        self.process = subprocess.Popen(
            [BINARY, "--db", database or os.path.join(workdir, "state.db"), "--listen", f"127.0.0.1:{self.port}",
             "--http-listen", f"127.0.0.1:{self.http_port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError("control-server exited early")
                time.sleep(0.05)
        raise RuntimeError("control-server did not start listening")

    @property
    def target(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.log.close()


@pytest.fixture
def server(tmp_path):
    assert os.path.exists(BINARY), f"build first: {BINARY} is missing (swift build)"
    server = Server(str(tmp_path))
    yield server
    server.stop()


@pytest.fixture
def registry(server, stubs):
    pb2, pb2_grpc = stubs
    channel = grpc.insecure_channel(server.target)
    yield pb2, pb2_grpc.RegistryStub(channel), channel
    channel.close()
