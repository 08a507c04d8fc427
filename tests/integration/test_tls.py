"""TLS on every port with the unmodified tritonclient: HTTPS and gRPC over TLS, mutual TLS (a
missing or foreign client certificate refused), the metrics port over HTTPS, a plaintext client
refused, and a certificate renewed on SIGHUP without dropping the connections already open."""
import http.client
import os
import shutil
import signal
import ssl
import time

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from hybrid_helpers import make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(str(tmp_path_factory.mktemp("tls-certs")))


def repository(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(os.path.join(os.environ["TERN_FIXTURES"], "add_sub"), repo / "add_sub")
    return str(repo)


def tls_args(certs, port, mutual=False, cert=None, key=None):
    args = [f"--{port}-use-ssl", "true", f"--{port}-server-cert", cert or certs["server.pem"],
            f"--{port}-server-key", key or certs["server.key"]]
    if mutual:
        args += [f"--{port}-use-ssl-mutual", "true", f"--{port}-root-cert", certs["ca.pem"]]
    return args


def wait_ready(server):
    deadline = time.time() + 30
    while time.time() < deadline:
        if "server ready" in server.logs():
            return
        assert server.process.poll() is None, server.logs()
        time.sleep(0.1)
    raise AssertionError(server.logs())


def start(tmp_path, *args):
    """A server with TLS options (conftest's readiness probe speaks plain HTTP: this one waits
    for the log's "server ready")."""
    import subprocess
    from conftest import free_port, ROOT
    repo = repository(tmp_path)
    ports = free_port(), free_port(), free_port()
    binary = os.environ.get("TERN_BIN", os.path.join(ROOT, ".build/debug/tern"))
    log_path = str(tmp_path / "tern.log")
    log = open(log_path, "w")
    process = subprocess.Popen(
        [binary, "serve", "--model-repository", repo, "--host", "127.0.0.1", "--http-port", str(ports[0]),
         "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]), "--history-db", "none", "--experiments-db", "none", *args],
        stdout=log, stderr=subprocess.STDOUT)

    class Handle:
        pass
    handle = Handle()
    handle.process, handle.http_port, handle.grpc_port, handle.metrics_port = process, *ports
    handle.logs = lambda: open(log_path).read()
    wait_ready(handle)
    return handle


def stop(handle):
    handle.process.terminate()
    handle.process.wait(20)


def add_sub_inputs(module):
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.float32)
    inputs = [module.InferInput("INPUT0", [1, 16], "FP32"), module.InferInput("INPUT1", [1, 16], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs, a + b


def test_https_and_grpc_tls_with_tritonclient(tmp_path, certs):
    server = start(tmp_path, *tls_args(certs, "http"), *tls_args(certs, "grpc"), *tls_args(certs, "metrics")[:2])
    try:
        http = httpclient.InferenceServerClient(
            f"localhost:{server.http_port}", ssl=True, ssl_context_factory=lambda: ssl.create_default_context(cafile=certs["ca.pem"]))
        assert http.is_server_ready()
        inputs, expected = add_sub_inputs(httpclient)
        np.testing.assert_allclose(http.infer("add_sub", inputs).as_numpy("OUTPUT0"), expected)

        grpc = grpcclient.InferenceServerClient(f"localhost:{server.grpc_port}", ssl=True, root_certificates=certs["ca.pem"])
        assert grpc.is_server_live()
        inputs, expected = add_sub_inputs(grpcclient)
        np.testing.assert_allclose(grpc.infer("add_sub", inputs).as_numpy("OUTPUT0"), expected)

        # The metrics port speaks HTTPS with the HTTP port's certificate.
        metrics = requests.get(f"https://localhost:{server.metrics_port}/metrics", verify=certs["ca.pem"], timeout=5)
        assert metrics.status_code == 200 and "nv_inference_request_success" in metrics.text

        # A plaintext client gets no answer from a TLS port (the handshake fails, the connection closes).
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{server.http_port}/v2/health/live", timeout=5)
        # A client that does not trust the CA refuses the server.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"https://localhost:{server.http_port}/v2/health/live", timeout=5)
        assert server.process.poll() is None
    finally:
        stop(server)


def test_mutual_tls_refuses_missing_and_foreign_client_certificates(tmp_path, certs):
    server = start(tmp_path, *tls_args(certs, "http", mutual=True), *tls_args(certs, "grpc", mutual=True),
                   "--model-control-mode", "explicit", "--load-model", "add_sub")
    try:
        url = f"https://localhost:{server.http_port}/v2/health/ready"
        client_cert = (certs["client.pem"], certs["client.key"])
        good = requests.get(url, verify=certs["ca.pem"], cert=client_cert, timeout=5)
        assert good.status_code == 200
        # tritonclient over mutual TLS, with the client certificate in its SSL context.
        def mutual_context():
            context = ssl.create_default_context(cafile=certs["ca.pem"])
            context.load_cert_chain(certs["client.pem"], certs["client.key"])
            return context
        http = httpclient.InferenceServerClient(f"localhost:{server.http_port}", ssl=True, ssl_context_factory=mutual_context)
        inputs, expected = add_sub_inputs(httpclient)
        np.testing.assert_allclose(http.infer("add_sub", inputs).as_numpy("OUTPUT0"), expected)
        no_cert = httpclient.InferenceServerClient(
            f"localhost:{server.http_port}", ssl=True, ssl_context_factory=lambda: ssl.create_default_context(cafile=certs["ca.pem"]))
        with pytest.raises(Exception):
            no_cert.is_server_ready()
        # A change made over mutual TLS is recorded with the client certificate's name.
        base = f"https://localhost:{server.http_port}/v2/repository/models/add_sub"
        assert requests.post(f"{base}/load", verify=certs["ca.pem"], cert=client_cert, timeout=10).status_code == 200
        last = requests.get(f"{base}/history", verify=certs["ca.pem"], cert=client_cert, timeout=5).json()[-1]
        assert last["by"].startswith("127.0.0.1:") and last["by"].endswith("certificate CN=tern-edge"), last
        with pytest.raises((requests.exceptions.SSLError, requests.ConnectionError)):
            requests.get(url, verify=certs["ca.pem"], timeout=5)
        # A certificate from another CA: self-signed other-ca used as the client's certificate.
        with pytest.raises((requests.exceptions.SSLError, requests.ConnectionError)):
            requests.get(url, verify=certs["ca.pem"], cert=(certs["other-ca.pem"], certs["other-ca.key"]), timeout=5)

        ok = grpcclient.InferenceServerClient(
            f"localhost:{server.grpc_port}", ssl=True, root_certificates=certs["ca.pem"],
            private_key=certs["client.key"], certificate_chain=certs["client.pem"])
        inputs, expected = add_sub_inputs(grpcclient)
        np.testing.assert_allclose(ok.infer("add_sub", inputs).as_numpy("OUTPUT0"), expected)
        for extra in ({}, {"private_key": certs["other-ca.key"], "certificate_chain": certs["other-ca.pem"]}):
            refused = grpcclient.InferenceServerClient(
                f"localhost:{server.grpc_port}", ssl=True, root_certificates=certs["ca.pem"], **extra)
            with pytest.raises(InferenceServerException):
                refused.is_server_live(client_timeout=5)
        assert server.process.poll() is None
    finally:
        stop(server)


def test_sighup_renews_the_certificate_without_dropping_connections(tmp_path, certs):
    live_cert, live_key = str(tmp_path / "live.pem"), str(tmp_path / "live.key")
    shutil.copy(certs["server.pem"], live_cert)
    shutil.copy(certs["server.key"], live_key)
    server = start(tmp_path, *tls_args(certs, "http", cert=live_cert, key=live_key))
    try:
        context = ssl.create_default_context(cafile=certs["ca.pem"])
        kept = http.client.HTTPSConnection("localhost", server.http_port, context=context, timeout=5)
        kept.request("GET", "/v2/health/live")
        assert kept.getresponse().read() == b"" and kept.sock is not None
        first_socket = kept.sock

        # Renew: a certificate for the same names signed by the other CA, then SIGHUP.
        renewed = make_certificates(str(tmp_path / "renewed"))
        shutil.copy(renewed["server.pem"], live_cert)
        shutil.copy(renewed["server.key"], live_key)
        server.process.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while "TLS certificate reloaded" not in server.logs():
            assert time.time() < deadline, server.logs()
            time.sleep(0.1)

        # The connection opened before the reload still answers, on the same socket.
        kept.request("GET", "/v2/health/ready")
        response = kept.getresponse()
        assert response.status == 200 and response.read() == b""
        assert kept.sock is first_socket
        # New connections get the new certificate: trusted by the new CA, not by the old one.
        assert requests.get(f"https://localhost:{server.http_port}/v2/health/live", verify=renewed["ca.pem"], timeout=5).status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"https://localhost:{server.http_port}/v2/health/live", verify=certs["ca.pem"], timeout=5)

        # A broken file on reload keeps the current certificate and says why.
        with open(live_key, "w") as f:
            f.write("not a key\n")
        server.process.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while "TLS reload failed" not in server.logs():
            assert time.time() < deadline, server.logs()
            time.sleep(0.1)
        assert requests.get(f"https://localhost:{server.http_port}/v2/health/live", verify=renewed["ca.pem"], timeout=5).status_code == 200
        kept.close()
    finally:
        stop(server)


def test_tls_options_are_checked_at_start(tmp_path, certs):
    import subprocess
    from conftest import ROOT
    binary = os.environ.get("TERN_BIN", os.path.join(ROOT, ".build/debug/tern"))
    repo = repository(tmp_path)
    cases = [
        (["--grpc-use-ssl", "true"], "--grpc-use-ssl needs --grpc-server-cert"),
        (["--http-use-ssl", "true", "--http-server-cert", certs["server.pem"], "--http-server-key", str(tmp_path / "missing.key")], "missing.key"),
        (["--grpc-use-ssl-mutual", "true", "--grpc-server-cert", certs["server.pem"], "--grpc-server-key", certs["server.key"]], "root"),
        (["--metrics-use-ssl", "true"], "--metrics-use-ssl"),
    ]
    for args, expected in cases:
        result = subprocess.run([binary, "serve", "--model-repository", repo, "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                                 "--history-db", "none", "--experiments-db", "none", *args], capture_output=True, text=True, timeout=30)
        assert result.returncode != 0, args
        assert expected in result.stdout + result.stderr, (args, result.stderr)
        assert "server ready" not in result.stdout + result.stderr
