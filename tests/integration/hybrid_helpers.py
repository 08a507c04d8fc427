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


def remote_model(repository, name, url, model="digits_big", **parameters):
    """Writes a `remote` model `name` forwarding to `model` at `url`; `parameters` are further
    tern.remote.* settings (header_Authorization="..." sets tern.remote.header.Authorization)."""
    os.makedirs(os.path.join(repository, name, "1"), exist_ok=True)
    lines = [f'name: "{name}"', 'backend: "remote"', "max_batch_size: 64"]
    settings = {"url": url, "model": model, **{key.replace("header_", "header."): value for key, value in parameters.items()}}
    for key, value in settings.items():
        lines.append(f'parameters {{ key: "tern.remote.{key}" value: {{ string_value: "{value}" }} }}')
    with open(os.path.join(repository, name, "config.pbtxt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return os.path.join(repository, name)


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


def make_certificates(folder):
    """A private CA and a server certificate for localhost / 127.0.0.1 signed by it, and a second,
    unrelated CA (to check that verification refuses what the first did not sign). Returns the
    paths as a dict."""
    import subprocess
    os.makedirs(folder, exist_ok=True)
    path = {name: os.path.join(folder, name) for name in (
        "ca.pem", "ca.key", "server.pem", "server.key", "other-ca.pem", "other-ca.key", "client.pem", "client.key")}

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=Tern test {ca}",
            "-keyout", path[f"{ca}.key"], "-out", path[f"{ca}.pem"])
    extensions = os.path.join(folder, "server.ext")
    with open(extensions, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n")
    request = os.path.join(folder, "server.csr")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", path["server.key"], "-out", request)
    run("x509", "-req", "-in", request, "-CA", path["ca.pem"], "-CAkey", path["ca.key"], "-CAcreateserial", "-days", "2",
        "-extfile", extensions, "-out", path["server.pem"])
    # A client certificate from the same CA, for mutual TLS.
    client_extensions = os.path.join(folder, "client.ext")
    with open(client_extensions, "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n")
    client_request = os.path.join(folder, "client.csr")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=tern-edge", "-keyout", path["client.key"], "-out", client_request)
    run("x509", "-req", "-in", client_request, "-CA", path["ca.pem"], "-CAkey", path["ca.key"], "-CAcreateserial", "-days", "2",
        "-extfile", client_extensions, "-out", path["client.pem"])
    return path


class TLSProxy:
    """A TLS-terminating proxy (Python's ssl, i.e. OpenSSL) in front of a plain HTTP server on
    `target_port`. With `require_header`, a connection whose first request lacks that header
    (e.g. "authorization: Bearer x") is answered 401 and closed. `connections` counts the
    connections it accepted (kept-alive connections are reused, so it stays small). With
    `client_ca`, clients must present a certificate signed by it (mutual TLS)."""

    def __init__(self, target_port, certfile, keyfile, require_header=None, client_ca=None):
        import asyncio
        import ssl
        self.target_port, self.require = target_port, require_header.lower().encode() if require_header else None
        self.connections = 0
        self.refused = 0
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)
        if client_ca:  # mutual TLS: a client certificate signed by this CA is required
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(client_ca)
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def start():
            # Every loopback address (127.0.0.2 reaches it under a name the certificate lacks).
            self.server = await asyncio.start_server(self._serve, "0.0.0.0", 0, ssl=context)
            self.port = self.server.sockets[0].getsockname()[1]
            started.set()

        threading.Thread(target=lambda: (self.loop.run_until_complete(start()), self.loop.run_forever()), daemon=True).start()
        started.wait(10)

    async def _serve(self, reader, writer):
        import asyncio
        self.connections += 1
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    writer.close()
                    return
                head += chunk
            if self.require is not None and self.require not in head.split(b"\r\n\r\n")[0].lower():
                self.refused += 1
                body = b'{"error":"missing or wrong token"}'
                writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                writer.close()
                return
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            upstream_writer.write(head)

            async def pump(source, sink):
                try:
                    while data := await source.read(1 << 16):
                        sink.write(data)
                        await sink.drain()
                finally:
                    sink.close()

            await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer), return_exceptions=True)
        except (ConnectionError, OSError):
            writer.close()

    def close(self):
        self.loop.call_soon_threadsafe(self.server.close)
