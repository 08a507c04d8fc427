"""Pieces shared by the hybrid tests and benchmark: an edge and a cloud repository, and a TCP
proxy that adds WAN-like delay on the way to the cloud."""
import os
import random
import shutil
import socket
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples", "models")

HYBRID = """name: "{name}"
backend: "hybrid"
max_batch_size: 64
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 64 ] }} ]
output [ {{ name: "label" data_type: TYPE_INT64 dims: [ 1 ] reshape: {{ shape: [ ] }} }},
         {{ name: "probabilities" data_type: TYPE_FP32 dims: [ 10 ] }} ]
parameters {{ key: "tern.hybrid.local" value: {{ string_value: "digits_edge" }} }}
parameters {{ key: "tern.hybrid.remote" value: {{ string_value: "digits_cloud" }} }}
parameters {{ key: "tern.hybrid.policy" value: {{ string_value: "{policy}" }} }}
parameters {{ key: "tern.hybrid.confidence_output" value: {{ string_value: "probabilities" }} }}
parameters {{ key: "tern.hybrid.confidence_threshold" value: {{ string_value: "{threshold}" }} }}
parameters {{ key: "tern.hybrid.complexity_threshold" value: {{ string_value: "{complexity}" }} }}
parameters {{ key: "tern.hybrid.breaker_failures" value: {{ string_value: "3" }} }}
parameters {{ key: "tern.hybrid.breaker_open_ms" value: {{ string_value: "{breaker_ms}" }} }}
parameters {{ key: "tern.hybrid.probe_every" value: {{ string_value: "{probe_every}" }} }}
"""

REMOTE = """name: "digits_cloud"
backend: "remote"
max_batch_size: 64
parameters {{ key: "tern.remote.url" value: {{ string_value: "http://127.0.0.1:{port}" }} }}
parameters {{ key: "tern.remote.model" value: {{ string_value: "digits_big" }} }}
parameters {{ key: "tern.remote.timeout_ms" value: {{ string_value: "{timeout_ms}" }} }}
parameters {{ key: "tern.remote.retries" value: {{ string_value: "1" }} }}
"""


def wait_ready(server, timeout=30):
    """Live is not ready: wait until the server has loaded its models."""
    import requests
    deadline = time.time() + timeout
    while time.time() < deadline:
        if requests.get(f"{server.http_url}/v2/health/ready").status_code == 200:
            return server
        time.sleep(0.05)
    raise RuntimeError("the server did not become ready")


def cloud_repository(path):
    """The cloud: the bigger digits MLP as digits_big."""
    rename(os.path.join(EXAMPLES, "digits_mlp"), os.path.join(path, "digits_big"))
    return path


def rename(source, target):
    """Copies a model folder under another name (its config.pbtxt names the new folder)."""
    shutil.copytree(source, target)
    config = os.path.join(target, "config.pbtxt")
    if os.path.exists(config):
        old, new = os.path.basename(source), os.path.basename(target)
        with open(config) as f:
            text = f.read().replace(f'name: "{old}"', f'name: "{new}"')
        with open(config, "w") as f:
            f.write(text)


def edge_repository(path, cloud_port, threshold=0.9, complexity=1000.0, breaker_ms=1500, timeout_ms=1000, probe_every=5):
    """The edge: logistic regression locally, the cloud model as a remote model, and one hybrid
    model per policy (digits_<policy>)."""
    rename(os.path.join(EXAMPLES, "digits_logreg"), os.path.join(path, "digits_edge"))
    os.makedirs(os.path.join(path, "digits_cloud", "1"))
    with open(os.path.join(path, "digits_cloud", "config.pbtxt"), "w") as f:
        f.write(REMOTE.format(port=cloud_port, timeout_ms=timeout_ms))
    for policy in ("edge", "cloud", "complexity", "cascade", "latency"):
        name = f"digits_{policy}_route"
        os.makedirs(os.path.join(path, name, "1"))
        with open(os.path.join(path, name, "config.pbtxt"), "w") as f:
            f.write(HYBRID.format(name=name, policy=policy, threshold=threshold, complexity=complexity, breaker_ms=breaker_ms,
                                  probe_every=probe_every))
    return path


class DelayProxy:
    """Forwards TCP connections to `target_port`, delaying each chunk sent towards the target by
    `delay_ms` ± `jitter_ms` (an emulated WAN link; replies pass straight back)."""

    def __init__(self, target_port, delay_ms, jitter_ms=0.0, seed=0):
        self.target_port, self.delay, self.jitter = target_port, delay_ms / 1000, jitter_ms / 1000
        self.random = random.Random(seed)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source, sink, delayed):
        try:
            while True:
                data = source.recv(1 << 16)
                if not data:
                    break
                if delayed:
                    time.sleep(max(0.0, self.delay + self.random.uniform(-self.jitter, self.jitter)))
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.closed = True
        self.listener.close()
