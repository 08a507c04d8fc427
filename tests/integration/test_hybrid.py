"""Edge-cloud hybrid routing with two real Tern servers on loopback: a remote KServe v2 model,
and hybrid models with each routing policy, a circuit breaker and local fallback."""
import math
import os
import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
import requests
import tritonclient.http as httpclient

from conftest import EXAMPLES, ROOT, TernServer
from hybrid_helpers import DelayProxy, TLSProxy, cloud_repository, edge_repository, make_certificates, remote_model, wait_ready

FIXTURES = os.environ.get("TERN_FIXTURES", os.path.join(ROOT, ".cache", "fixtures"))
ROWS = np.load(os.path.join(FIXTURES, "digits_validation", "X.npy"))
LABELS = np.load(os.path.join(FIXTURES, "digits_validation", "labels.npy"))


def reference(model):
    session = ort.InferenceSession(os.path.join(EXAMPLES, model, "1", "model.onnx"))
    return lambda x: session.run(["label", "probabilities"], {"X": x})


EDGE_REF, CLOUD_REF = reference("digits_logreg"), reference("digits_mlp")


def ask(client, model, x, timeout=None, **parameters):
    inp = httpclient.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(model, [inp], parameters=parameters or None, timeout=timeout)
    params = result.get_response().get("parameters", {})
    return result, params.get("tern.route"), params.get("tern.route_reason")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    cloud = wait_ready(TernServer(cloud_repository(str(tmp_path_factory.mktemp("cloud") / "models"))))
    edge = TernServer(edge_repository(str(tmp_path_factory.mktemp("edge") / "models"), cloud.http_port))
    yield edge, cloud
    edge.stop()
    cloud.stop()


def test_remote_model_forwards_to_the_cloud_and_completes_its_config_from_metadata(pair):
    edge, _ = pair
    client = httpclient.InferenceServerClient(edge.http_address)
    config = client.get_model_config("digits_cloud")
    assert [i["name"] for i in config["input"]] == ["X"]  # read from the cloud's metadata
    x = ROWS[:5]
    result, _, _ = ask(client, "digits_cloud", x)
    labels, probabilities = CLOUD_REF(x)
    assert np.array_equal(result.as_numpy("label").ravel(), labels)  # exposed as [N, 1], as the cloud does
    assert np.allclose(result.as_numpy("probabilities"), probabilities, atol=1e-5)
    # A bad request keeps its meaning across the hop: 400 from the cloud is a 400 here.
    bad = httpclient.InferInput("X", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(Exception) as error:
        client.infer("digits_cloud", [bad])
    assert "400" in str(error.value)


def test_each_policy_routes_as_specified(pair):
    edge, _ = pair
    client = httpclient.InferenceServerClient(edge.http_address)
    for i in range(40):
        x = ROWS[i:i + 1]
        edge_labels, edge_probabilities = EDGE_REF(x)
        cloud_labels, _ = CLOUD_REF(x)

        result, route, reason = ask(client, "digits_edge_route", x)
        assert (route, reason) == ("edge", "policy_edge") and result.as_numpy("label")[0] == edge_labels[0]
        result, route, reason = ask(client, "digits_cloud_route", x)
        assert (route, reason) == ("cloud", "policy_cloud") and result.as_numpy("label")[0] == cloud_labels[0]

        # Cascade: local first, offloaded exactly when logistic regression is below 0.9 confident.
        result, route, reason = ask(client, "digits_cascade_route", x)
        confident = edge_probabilities.max() >= 0.9
        assert (route, reason) == (("edge", "confident") if confident else ("cloud", "low_confidence"))
        assert result.as_numpy("label")[0] == (edge_labels[0] if confident else cloud_labels[0])

        # Complexity (a heuristic): variance × log2(size) against the threshold (1000 here).
        score = float(np.var(x.astype(np.float64))) * math.log2(x.size)
        _, route, _ = ask(client, "digits_complexity_route", x)
        assert route == ("cloud" if score > 1000 else "edge"), score

        # Privacy: a request may forbid offloading.
        _, route, reason = ask(client, "digits_cloud_route", x, **{"tern.local_only": True})
        assert (route, reason) == ("edge", "local_only")
    text = requests.get(f"http://127.0.0.1:{edge.metrics_port}/metrics").text
    assert 'tern_hybrid_requests_total{model="digits_cascade_route",reason="low_confidence",route="cloud"}' in text \
        or 'tern_hybrid_requests_total{model="digits_cascade_route",route="cloud",reason="low_confidence"}' in text
    assert "tern_hybrid_offloaded_bytes_total" in text


def test_killing_the_cloud_mid_load_loses_nothing_and_the_breaker_recovers(tmp_path):
    cloud_repo = cloud_repository(str(tmp_path / "cloud"))
    cloud = wait_ready(TernServer(cloud_repo))
    ports = (cloud.http_port, cloud.grpc_port, cloud.metrics_port)
    edge = TernServer(edge_repository(str(tmp_path / "edge"), cloud.http_port, breaker_ms=1000, timeout_ms=500))
    routes, failures, stop = [], [], threading.Event()
    lock = threading.Lock()

    def load(seed):
        client = httpclient.InferenceServerClient(edge.http_address)
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            x = ROWS[rng.integers(len(ROWS)):][:1]
            try:
                result, route, reason = ask(client, "digits_cloud_route", x)
                expected = (CLOUD_REF if route == "cloud" else EDGE_REF)(x)[0][0]
                with lock:
                    routes.append((time.monotonic(), route, reason, result.as_numpy("label")[0] == expected))
            except Exception as error:  # noqa: BLE001
                with lock:
                    failures.append(str(error))
            time.sleep(0.01)

    try:
        threads = [threading.Thread(target=load, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        cloud.process.kill()
        cloud.process.wait()
        killed = time.monotonic()
        time.sleep(3)
        breaker = requests.get(f"http://127.0.0.1:{edge.metrics_port}/metrics").text
        restarting = time.monotonic()
        cloud = TernServer(cloud_repo, ports=ports)
        back = time.monotonic()
        time.sleep(4)
        stop.set()
        for t in threads:
            t.join()
        assert failures == []
        assert all(ok for *_, ok in routes)
        before = [r for r in routes if r[0] < killed]
        down = [r for r in routes if killed + 0.5 < r[0] < restarting]
        after = [r for r in routes if r[0] > back + 2.5]
        assert before and all(route == "cloud" for _, route, _, _ in before)
        assert down and all(route == "edge" for _, route, _, _ in down)
        assert {reason for _, _, reason, _ in down} <= {"cloud_failed", "breaker_open"}
        assert any(reason == "breaker_open" for _, _, reason, _ in down)  # the breaker stopped trying
        assert 'tern_hybrid_breaker_open{model="digits_cloud_route"} 1' in breaker
        assert after and all(route == "cloud" for _, route, _, _ in after)  # recovered
    finally:
        stop.set()
        edge.stop()
        cloud.stop()


def test_a_deadline_the_cloud_cannot_meet_keeps_the_request_local(tmp_path):
    cloud = wait_ready(TernServer(cloud_repository(str(tmp_path / "cloud"))))
    proxy = DelayProxy(cloud.http_port, delay_ms=60)
    edge = TernServer(edge_repository(str(tmp_path / "edge"), proxy.port))
    try:
        client = httpclient.InferenceServerClient(edge.http_address)
        x = ROWS[:1]
        seen = set()
        for _ in range(12):  # the policy measures both routes (probes)
            _, route, _ = ask(client, "digits_latency_route", x)
            seen.add(route)
        assert seen == {"edge", "cloud"}
        for _ in range(10):
            _, route, reason = ask(client, "digits_latency_route", x, timeout=30_000)  # 30 ms; the cloud takes > 60
            assert (route, reason) == ("edge", "deadline")
    finally:
        edge.stop()
        proxy.close()
        cloud.stop()


def index_reasons(client):
    return {entry["name"]: (entry.get("state"), entry.get("reason", "")) for entry in client.get_model_repository_index()}


def test_remote_models_over_https_with_a_token_and_over_grpc(tmp_path):
    certs = make_certificates(str(tmp_path / "certs"))
    cloud = wait_ready(TernServer(cloud_repository(str(tmp_path / "cloud"))))
    proxy = TLSProxy(cloud.http_port, certs["server.pem"], certs["server.key"], require_header="authorization: Bearer edge-token")
    repo = str(tmp_path / "edge")
    # The CA file is read relative to the model's directory.
    import shutil
    https = remote_model(repo, "digits_https", f"https://localhost:{proxy.port}", tls_ca_file="ca.pem", header_Authorization="Bearer edge-token")
    shutil.copy(certs["ca.pem"], os.path.join(https, "ca.pem"))
    remote_model(repo, "digits_https_ip", f"https://127.0.0.1:{proxy.port}", tls_ca_file=certs["ca.pem"], header_Authorization="Bearer edge-token")
    remote_model(repo, "digits_https_no_token", f"https://localhost:{proxy.port}", tls_ca_file=certs["ca.pem"], retries="0")
    remote_model(repo, "digits_https_wrong_ca", f"https://localhost:{proxy.port}", tls_ca_file=certs["other-ca.pem"],
                 header_Authorization="Bearer edge-token", retries="0")
    remote_model(repo, "digits_https_unverified", f"https://localhost:{proxy.port}", tls_verify="none", header_Authorization="Bearer edge-token")
    # 127.0.0.2 is not in the certificate: refused with full verification, accepted without the name check.
    remote_model(repo, "digits_https_wrong_name", f"https://127.0.0.2:{proxy.port}", tls_ca_file=certs["ca.pem"],
                 header_Authorization="Bearer edge-token", retries="0")
    remote_model(repo, "digits_https_no_hostname", f"https://127.0.0.2:{proxy.port}", tls_ca_file=certs["ca.pem"], tls_verify="no_hostname",
                 header_Authorization="Bearer edge-token")
    remote_model(repo, "digits_plain_to_tls", f"http://localhost:{proxy.port}", retries="0", timeout_ms="1000")
    remote_model(repo, "digits_grpc", f"grpc://127.0.0.1:{cloud.grpc_port}", header_Authorization="Bearer edge-token")
    # Mutual TLS: a proxy that demands a client certificate from the CA.
    mutual = TLSProxy(cloud.http_port, certs["server.pem"], certs["server.key"], client_ca=certs["ca.pem"])
    remote_model(repo, "digits_mtls", f"https://localhost:{mutual.port}", tls_ca_file=certs["ca.pem"],
                 tls_cert_file=certs["client.pem"], tls_key_file=certs["client.key"])
    remote_model(repo, "digits_mtls_no_cert", f"https://localhost:{mutual.port}", tls_ca_file=certs["ca.pem"], retries="0")
    edge = wait_ready(TernServer(repo))
    try:
        client = httpclient.InferenceServerClient(edge.http_address)
        states = index_reasons(client)
        for name in ("digits_https", "digits_https_ip", "digits_https_unverified", "digits_https_no_hostname", "digits_grpc", "digits_mtls"):
            assert states[name][0] == "READY", (name, states[name])
        assert states["digits_https_wrong_name"][0] == "UNAVAILABLE" and "handshake" in states["digits_https_wrong_name"][1], states["digits_https_wrong_name"]
        assert states["digits_mtls_no_cert"][0] == "UNAVAILABLE" and "client certificate" in states["digits_mtls_no_cert"][1], states["digits_mtls_no_cert"]
        # What cannot be trusted or is refused does not load, and says why.
        assert states["digits_https_no_token"][0] == "UNAVAILABLE" and "401" in states["digits_https_no_token"][1]
        assert "missing or wrong token" in states["digits_https_no_token"][1]
        assert states["digits_https_wrong_ca"][0] == "UNAVAILABLE" and "certificate" in states["digits_https_wrong_ca"][1].lower(), states["digits_https_wrong_ca"]
        assert states["digits_plain_to_tls"][0] == "UNAVAILABLE"
        x = ROWS[:6]
        labels, probabilities = CLOUD_REF(x)
        for name in ("digits_https", "digits_https_ip", "digits_https_unverified", "digits_grpc", "digits_mtls"):
            result, _, _ = ask(client, name, x)
            assert np.array_equal(result.as_numpy("label").ravel(), labels), name
            assert np.allclose(result.as_numpy("probabilities"), probabilities, atol=1e-5), name
        # Kept-alive TLS connections: 40 sequential calls open no new connection.
        before = proxy.connections
        for i in range(40):
            result, _, _ = ask(client, "digits_https", ROWS[i:i + 1])
            assert result.as_numpy("label").ravel()[0] == CLOUD_REF(ROWS[i:i + 1])[0][0]
        assert proxy.connections == before
        # The cloud's own verdict on a bad request crosses both transports as a 400.
        bad = httpclient.InferInput("X", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
        for name in ("digits_https", "digits_grpc"):
            with pytest.raises(Exception) as error:
                client.infer(name, [bad])
            assert "400" in str(error.value), (name, str(error.value))
    finally:
        edge.stop()
        proxy.close()
        mutual.close()
        cloud.stop()


# ---- real Triton 2.51 as the cloud ----------------------------------------------------------------

TRITON_DIGITS = """name: "digits_big"
backend: "python"
max_batch_size: 64
input [ { name: "X" data_type: TYPE_FP32 dims: [ 64 ] } ]
output [ { name: "label" data_type: TYPE_INT64 dims: [ 1 ] }, { name: "probabilities" data_type: TYPE_FP32 dims: [ 10 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


@pytest.fixture(scope="module")
def triton_cloud(tmp_path_factory):
    import subprocess
    import sys
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from compare_triton import ensure_triton, free_port, triton_env  # the pytriton wheel's tritonserver, unpacked once

    root = ensure_triton()
    repo = tmp_path_factory.mktemp("triton") / "models"
    os.makedirs(repo / "digits_big" / "1")
    (repo / "digits_big" / "config.pbtxt").write_text(TRITON_DIGITS)
    import shutil
    shutil.copy(os.path.join(os.path.dirname(__file__), "triton_digits", "model.py"), repo / "digits_big" / "1" / "model.py")
    shutil.copy(os.path.join(EXAMPLES, "digits_mlp", "1", "model.onnx"), repo / "digits_big" / "1" / "model.onnx")
    h, g, m = free_port(), free_port(), free_port()
    certs = make_certificates(str(tmp_path_factory.mktemp("triton-certs")))
    env = triton_env()
    log = open(repo / ".." / "triton.log", "w")
    process = subprocess.Popen(
        [os.path.join(root, "bin/tritonserver"), "--model-repository", str(repo), "--backend-directory", os.path.join(root, "backends"),
         "--http-port", str(h), "--grpc-port", str(g), "--metrics-port", str(m),
         # gRPC over mutual TLS, for the grpcs:// remote.
         "--grpc-use-ssl=true", "--grpc-server-cert", certs["server.pem"], "--grpc-server-key", certs["server.key"],
         "--grpc-root-cert", certs["ca.pem"], "--grpc-use-ssl-mutual=true"], stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{h}/v2/models/digits_big/ready", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        if process.poll() is not None:
            raise RuntimeError("tritonserver exited: " + open(repo / ".." / "triton.log").read()[-2000:])
        time.sleep(0.2)
    else:
        raise RuntimeError("tritonserver did not become ready")
    yield {"http": h, "grpc": g, "certs": certs}
    process.terminate()
    process.wait(10)
    log.close()


def test_real_triton_as_the_cloud(triton_cloud, tmp_path):
    edge = TernServer(edge_repository(str(tmp_path / "edge"), triton_cloud["http"]))
    try:
        client = httpclient.InferenceServerClient(edge.http_address)
        # The remote model's config came from Triton's metadata.
        assert [o["name"] for o in client.get_model_config("digits_cloud")["output"]] == ["label", "probabilities"]
        x = ROWS[:8]
        result, _, _ = ask(client, "digits_cloud", x)
        labels, probabilities = CLOUD_REF(x)
        assert np.array_equal(result.as_numpy("label").ravel(), labels), (result.as_numpy("label").ravel(), labels, result.as_numpy("probabilities")[:2])
        assert np.allclose(result.as_numpy("probabilities"), probabilities, atol=1e-5)
        offloaded = 0
        for i in range(40):
            x = ROWS[i:i + 1]
            edge_labels, edge_probabilities = EDGE_REF(x)
            result, route, reason = ask(client, "digits_cascade_route", x)
            confident = edge_probabilities.max() >= 0.9
            assert (route, reason) == (("edge", "confident") if confident else ("cloud", "low_confidence"))
            assert result.as_numpy("label").ravel()[0] == (edge_labels[0] if confident else CLOUD_REF(x)[0][0])
            offloaded += route == "cloud"
        assert offloaded > 0
    finally:
        edge.stop()


def test_real_triton_over_grpc_with_mutual_tls(triton_cloud, tmp_path):
    repo = str(tmp_path / "edge")
    ca = triton_cloud["certs"]["ca.pem"]
    certs = triton_cloud["certs"]
    remote_model(repo, "digits_grpcs", f"grpcs://localhost:{triton_cloud['grpc']}", tls_ca_file=ca,
                 tls_cert_file=certs["client.pem"], tls_key_file=certs["client.key"])
    remote_model(repo, "digits_grpcs_no_cert", f"grpcs://localhost:{triton_cloud['grpc']}", tls_ca_file=ca, retries="0", timeout_ms="2000")
    remote_model(repo, "digits_grpcs_wrong_ca", f"grpcs://localhost:{triton_cloud['grpc']}", tls_ca_file=triton_cloud["certs"]["other-ca.pem"],
                 retries="0", timeout_ms="2000")
    remote_model(repo, "digits_grpc_plain", f"grpc://localhost:{triton_cloud['grpc']}", retries="0", timeout_ms="2000")
    edge = wait_ready(TernServer(repo))
    try:
        client = httpclient.InferenceServerClient(edge.http_address)
        states = index_reasons(client)
        assert states["digits_grpcs"][0] == "READY", states["digits_grpcs"]
        assert states["digits_grpcs_wrong_ca"][0] == "UNAVAILABLE" and "CERTIFICATE_VERIFY_FAILED" in states["digits_grpcs_wrong_ca"][1], states["digits_grpcs_wrong_ca"]
        assert states["digits_grpc_plain"][0] == "UNAVAILABLE", states["digits_grpc_plain"]
        assert states["digits_grpcs_no_cert"][0] == "UNAVAILABLE", states["digits_grpcs_no_cert"]  # Triton demands a client certificate
        x = ROWS[:8]
        labels, probabilities = CLOUD_REF(x)
        for _ in range(3):
            result, _, _ = ask(client, "digits_grpcs", x)
            assert np.array_equal(result.as_numpy("label").ravel(), labels)
            assert np.allclose(result.as_numpy("probabilities"), probabilities, atol=1e-5)
    finally:
        edge.stop()
