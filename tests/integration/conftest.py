"""Starts real `tern serve` processes on free ports for the integration tests.

TERN_BIN names the binary (the Makefile passes the debug build); TERN_FIXTURES the folder of
fixture models made by `scripts/make_models.py fixtures`.
"""
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples", "models")


_handed_out = set()


@pytest.fixture(autouse=True)
def _kill_federated_leftovers():
    """Kills the coordinators and Flower clients a test started and left running (a failed test)."""
    yield
    helpers = sys.modules.get("fl_helpers")
    for process in (helpers.STARTED if helpers else []):
        if process.poll() is None:
            process.kill()
            process.wait()
    if helpers:
        helpers.STARTED.clear()


def free_port():
    """A port nobody listens on, never one handed out before in this run: the kernel may give the
    same free port to two calls in a row, and a server started with its HTTP and gRPC ports equal
    answered gRPC clients with HTTP/1 (a flaky failure seen once)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


class TernServer:
    def __init__(self, repo, *extra_args, ports=None, env=None):
        self.repo = repo
        self.http_port, self.grpc_port, self.metrics_port = ports or (free_port(), free_port(), free_port())
        binary = os.environ.get("TERN_BIN", os.path.join(ROOT, ".build/debug/tern"))
        self.log_path = os.path.join(repo, "..", f"tern-{self.http_port}.log")
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [binary, "serve", "--model-repository", repo, "--host", "127.0.0.1",
             "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
             "--metrics-port", str(self.metrics_port),
             *([] if "--history-db" in extra_args or "--state-dir" in extra_args else ["--history-db", os.path.join(repo, "..", f"history-{self.http_port}.sqlite")]),
             *([] if "--experiments-db" in extra_args or "--state-dir" in extra_args else ["--experiments-db", os.path.join(repo, "..", f"experiments-{self.http_port}.sqlite")]),
             *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **env} if env else None)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("tern exited early:\n" + open(self.log_path).read())
            try:
                # The ports open before the models load: wait for the start-up to finish too.
                if requests.get(f"{self.http_url}/v2/health/live", timeout=1).status_code == 200 and self.grpc_listening() \
                        and "server ready" in open(self.log_path).read():
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError("tern did not start:\n" + open(self.log_path).read())

    def grpc_listening(self):
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.grpc_port)) == 0

    @property
    def http_url(self):
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def http_address(self):
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self):
        return f"127.0.0.1:{self.grpc_port}"

    def logs(self):
        return open(self.log_path).read()

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def build_repository(path, fixtures=True):
    """The example models plus fixture models and one model with a broken config."""
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(EXAMPLES):
        shutil.copytree(os.path.join(EXAMPLES, name), os.path.join(path, name))
    if fixtures:
        fixture_root = os.environ.get("TERN_FIXTURES", os.path.join(ROOT, ".cache", "fixtures"))
        for name in os.listdir(fixture_root):
            if name.startswith("identity_"):
                shutil.copytree(os.path.join(fixture_root, name), os.path.join(path, name))
        broken = os.path.join(path, "broken_config")
        shutil.copytree(os.path.join(fixture_root, "add_sub"), broken)
        with open(os.path.join(broken, "config.pbtxt"), "w") as f:
            f.write('name: "broken_config"\nbackend: "onnxruntime"\nmax_batch_size: 8\n'
                    'input [ { name: "INPUT0" data_type: TYPE_FLOAT32 dims: [ 16 ] } ]\n')
    return path


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    repo = build_repository(str(tmp_path_factory.mktemp("repo") / "models"))
    s = TernServer(repo)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def shm_server(tmp_path_factory):
    """The same repository as `server`, with client shared memory allowed (off by default)."""
    repo = build_repository(str(tmp_path_factory.mktemp("shm") / "models"))
    s = TernServer(repo, "--allow-client-shm")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def explicit_server(tmp_path_factory):
    repo = build_repository(str(tmp_path_factory.mktemp("explicit") / "models"), fixtures=False)
    s = TernServer(repo, "--model-control-mode", "explicit", "--load-model", "add_sub")
    yield s
    s.stop()
