"""Hardening of the server against hostile or careless clients and operators: requests built to
crash it (oversized shapes, offsets past the end, bytes no header may hold, random heads), a client
that never reads its answers, slow and idle connections, a connection cap, API groups behind a key,
client shared memory off by default, bounded and confined model configurations, start-up faults
and clear errors for common mistakes. Each case checks the answer and that the server still serves."""
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import time

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from conftest import ROOT, TernServer, free_port

try:
    from tritonclient.grpc import service_pb2, service_pb2_grpc
except ImportError:  # older tritonclient releases name the generated modules grpc_service_pb2*
    from tritonclient.grpc import grpc_service_pb2 as service_pb2, grpc_service_pb2_grpc as service_pb2_grpc

BINARY = os.environ.get("TERN_BIN", os.path.join(ROOT, ".build/debug/tern"))
FIXTURES = os.environ.get("TERN_FIXTURES", os.path.join(ROOT, ".cache", "fixtures"))
HUGE = 2305843009213693952  # 2^61 elements: 2^64 bytes of FP64, one past what any size can hold
LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"


def fixture_repository(path, *names):
    """A repository holding only the named fixture models (quick to start)."""
    os.makedirs(path, exist_ok=True)
    for name in names:
        shutil.copytree(os.path.join(FIXTURES, name), os.path.join(path, name))
    return str(path)


def started(tmp_path_factory, label, *args, models=("identity_fp64", "identity_fp32"), **kwargs):
    repo = fixture_repository(tmp_path_factory.mktemp(label) / "models", *models)
    return TernServer(repo, *args, **kwargs)


@pytest.fixture(scope="module")
def hardened(tmp_path_factory):
    """A server with the default settings, this module's own (a crash here must not hide behind
    a server other modules share)."""
    s = started(tmp_path_factory, "hardened")
    yield s
    s.stop()


def infer_json(server, model, datatype, shape, data):
    body = {"inputs": [{"name": "INPUT0", "shape": shape, "datatype": datatype, "data": data}]}
    return requests.post(f"{server.http_url}/v2/models/{model}/infer", json=body, timeout=10)


def assert_serving(server):
    """The process runs, says it is live and answers an ordinary inference correctly."""
    assert server.process.poll() is None, server.logs()[-2000:]
    assert requests.get(f"{server.http_url}/v2/health/live", timeout=5).status_code == 200
    response = infer_json(server, "identity_fp64", "FP64", [1, 3], [1.5, -2.0, 3.25])
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [1.5, -2.0, 3.25]


def read_response(sock, timeout=5.0):
    """One HTTP/1.1 response from `sock`: (status, headers with lower-case names, body, whether the
    server closed the connection after it). None for the status when nothing came back."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in data:
        if time.monotonic() > deadline:
            raise AssertionError(f"no complete response head within {timeout} s: {data!r}")
        chunk = sock.recv(65536)
        if not chunk:
            if not data:
                return None, {}, b"", True
            raise AssertionError(f"connection closed inside a response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed inside a response body: {body!r}")
        body += chunk
    closed = False
    if headers.get("connection", "").lower() == "close":
        sock.settimeout(2)
        try:
            closed = sock.recv(1) == b""
        except ConnectionResetError:  # closed with bytes of ours unread
            closed = True
        except socket.timeout:
            closed = False
    return status, headers, body[:length], closed


def exchange(server, data, timeout=5.0):
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_response(sock, timeout)


def wait_closed(sock, limit):
    """Seconds until the server closes `sock` (recv gives b''), reading and discarding what comes."""
    sock.settimeout(limit)
    start = time.monotonic()
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"the server kept the connection open past {limit} s (got {received!r})")
        if not chunk:
            return time.monotonic() - start, received
        received += chunk


# ---- crash classes --------------------------------------------------------------------------------

def test_a_shape_too_large_for_any_tensor_is_refused(hardened):
    for shape in ([HUGE], [4294967296, 4294967296], [2, HUGE]):
        response = infer_json(hardened, "identity_fp64", "FP64", shape, [1])
        assert response.status_code == 400, (shape, response.text)
        assert "larger than any tensor can be" in response.json()["error"], response.text
        assert_serving(hardened)


def post_binary(server, header, payload):
    text = json.dumps(header).encode()
    return requests.post(f"{server.http_url}/v2/models/identity_fp64/infer", data=text + payload,
                         headers={"Inference-Header-Content-Length": str(len(text))}, timeout=10)


def binary_header(size):
    return {"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP64", "parameters": {"binary_data_size": size}}]}


def test_binary_data_sizes_past_the_end_or_not_integers_are_refused(hardened):
    for size in (9223372036854775807, 9223372036854775800, 9):
        response = post_binary(hardened, binary_header(size), b"\0" * 8)
        assert response.status_code == 400, (size, response.text)
        assert "runs past the end of the request body" in response.json()["error"], response.text
        assert_serving(hardened)
    for size in ("abc", 1.5, -1, "8"):
        response = post_binary(hardened, binary_header(size), b"\0" * 8)
        assert response.status_code == 400, (size, response.text)
        assert "binary_data_size must be a non-negative integer" in response.json()["error"], (size, response.text)
    for size in (None, [8], {"n": 8}):  # not even a parameter value
        response = post_binary(hardened, binary_header(size), b"\0" * 8)
        assert response.status_code == 400 and "binary_data_size" in response.json()["error"], (size, response.text)
    # The same request with the right size works.
    response = post_binary(hardened, binary_header(8), np.array([2.5]).tobytes())
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [2.5]
    assert_serving(hardened)


def test_header_bytes_no_header_may_hold_are_refused(hardened):
    status, _, body, closed = exchange(hardened, b"GET /v2/health/live HTTP/1.1\r\nX\xff: 1\r\n\r\n")
    assert status == 400 and "header name has an invalid byte 0xff" in body.decode(), body
    assert closed
    status, _, body, _ = exchange(hardened, b"GET /v2/health/live HTTP/1.1\r\nX-Note: a\x01b\r\n\r\n")
    assert status == 400 and "control byte" in body.decode(), body
    status, _, body, _ = exchange(hardened, b"GET /v2/health/live HTTP/1.1\r\nX-Note: a\x7fb\r\n\r\n")
    assert status == 400 and "control byte" in body.decode(), body
    # Bytes above 0x7f are allowed in a value (obs-text), as RFC 9110 says.
    status, _, _, _ = exchange(hardened, b"GET /v2/health/live HTTP/1.1\r\nX-Note: caf\xc3\xa9\r\n\r\n")
    assert status == 200
    assert_serving(hardened)


def raw_grpc_infer(server, shape, contents):
    request = service_pb2.ModelInferRequest(model_name="identity_fp64")
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "INPUT0", "FP64"
    tensor.shape.extend(shape)
    request.raw_input_contents.append(contents)
    with grpc.insecure_channel(server.grpc_address) as channel:
        return service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)


def test_grpc_shape_too_large_for_any_tensor_is_refused(hardened):
    for shape in ([HUGE], [4294967296, 4294967296]):
        with pytest.raises(grpc.RpcError) as caught:
            raw_grpc_infer(hardened, shape, b"\0" * 8)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
        assert "larger than any tensor can be" in caught.value.details(), caught.value.details()
        assert_serving(hardened)
    reply = raw_grpc_infer(hardened, [1, 1], np.array([4.0]).tobytes())
    assert np.frombuffer(reply.raw_output_contents[0], np.float64).tolist() == [4.0]


def mutated_head(rng):
    """A request head (sometimes with a body) that is valid, damaged or random bytes."""
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}).encode()
    bases = [
        LIVE,
        b"POST /v2/models/identity_fp64/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body,
        b"GET /v2/models/identity_fp64/config HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ]
    data = bytearray(rng.choice(bases))
    kind = rng.randrange(7)
    if kind == 0:  # random bytes overwritten
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:  # random bytes inserted
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data)):0] = rng.randbytes(rng.randint(1, 16))
    elif kind == 2:  # cut short
        data = data[:rng.randrange(len(data))]
    elif kind == 3:  # a slice deleted
        a = rng.randrange(len(data))
        del data[a:a + rng.randint(1, 20)]
    elif kind == 4:  # nothing but noise
        data = bytearray(rng.randbytes(rng.randint(1, 300)))
    elif kind == 5:  # a number made huge or negative
        text = bytes(data).replace(b"Content-Length: ", b"Content-Length: " + rng.choice([b"-", b"99999999999999999999", b"1e9", b" "]))
        data = bytearray(text.replace(b"[1, 2]", rng.choice([b"[-1, 2]", b"[18446744073709551616]", b"[1, 2, 3]"])))
    else:  # a long header
        data[data.index(b"\r\n") + 2:0] = b"X-Long: " + b"a" * rng.choice([100, 10000, 100000]) + b"\r\n"
    return bytes(data)


def test_random_request_heads_never_take_the_server_down(hardened):
    rng = random.Random(1)
    deadline = time.monotonic() + 60
    answered = 0
    server_errors = []
    for i in range(300):
        assert time.monotonic() < deadline, f"the fuzz ran past 60 s at request {i}"
        data = mutated_head(rng)
        with socket.create_connection(("127.0.0.1", hardened.http_port), timeout=2) as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
                received = b""
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    received += chunk
            except (ConnectionResetError, BrokenPipeError, socket.timeout):
                received = b""
        if received:
            answered += 1
            assert received.startswith(b"HTTP/1.1 "), (data[:120], received[:200])
            code = int(received[9:12])
            if code >= 500 and code != 505:  # 505: a damaged version in the request line
                server_errors.append((data[:200], received[:300]))
        assert hardened.process.poll() is None, f"the server died on request {i}: {data[:200]!r}"
    # Most heads got an answer (a head cut short before its end gets none: the client closed),
    # and none was an internal error.
    assert answered >= 150, answered
    assert server_errors == []
    assert_serving(hardened)


# ---- bounded memory -------------------------------------------------------------------------------

def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def test_a_client_that_never_reads_is_held_back_and_costs_little_memory(hardened):
    """Pipelined requests without reading the answers: the server stops reading once its answers
    back up, so the kernel soon refuses more bytes, and the server's memory stays flat."""
    before = rss_mb(hardened.process.pid)
    chunk = memoryview(LIVE * ((1 << 20) // len(LIVE)))
    sent, position = 0, 0
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", hardened.http_port)) as sock:
        sock.setblocking(False)
        while sent < 500_000_000 and time.monotonic() - start < 15:
            _, writable, _ = select.select([], [sock], [], 0.5)
            if not writable:
                continue
            try:
                n = sock.send(chunk[position:])
            except BlockingIOError:
                continue
            sent += n
            position = (position + n) % len(chunk)
        grown = rss_mb(hardened.process.pid) - before
    assert sent < 100_000_000, f"the kernel took {sent / 1e6:.0f} MB: nothing held the client back"
    assert grown < 100, f"resident memory grew by {grown:.0f} MB"
    time.sleep(0.5)
    assert_serving(hardened)


# ---- timeouts -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def impatient(tmp_path_factory):
    s = started(tmp_path_factory, "impatient", "--request-header-timeout", "1", "--request-body-timeout", "1",
                "--idle-timeout", "2")
    yield s
    s.stop()


def connect(server, port=None):
    return socket.create_connection(("127.0.0.1", port or server.http_port), timeout=10)


def test_a_request_head_that_stops_halfway_gets_408(impatient):
    with connect(impatient) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        status, _, body, closed = read_response(sock, timeout=4)
        assert time.monotonic() - start < 4
        assert status == 408 and "did not arrive within" in body.decode(), body
        assert closed


def test_idle_connections_are_closed_after_the_idle_timeout(impatient):
    with connect(impatient) as sock:
        elapsed, received = wait_closed(sock, 5)
        assert received == b"" and 1.5 <= elapsed <= 5, elapsed
    with connect(impatient) as sock:
        sock.sendall(LIVE)
        status, _, _, _ = read_response(sock)
        assert status == 200
        elapsed, received = wait_closed(sock, 5)
        assert received == b"" and 1.5 <= elapsed <= 5, elapsed


def test_a_body_that_stalls_gets_408_but_a_slow_steady_one_is_served(impatient):
    with connect(impatient) as sock:
        sock.sendall(b"POST /v2/models/identity_fp64/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n" + b"{" * 10)
        status, _, body, closed = read_response(sock, timeout=4)
        assert status == 408 and "no request body bytes arrived" in body.decode(), body
        assert closed
    # Pieces 0.4 s apart: the whole body takes longer than the timeout, no pause does.
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP64", "data": [7, 8]}]}).encode()
    with connect(impatient) as sock:
        sock.sendall(b"POST /v2/models/identity_fp64/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        pieces = [body[i:i + len(body) // 5 + 1] for i in range(0, len(body), len(body) // 5 + 1)]
        for piece in pieces:
            time.sleep(0.4)
            sock.sendall(piece)
        status, _, answer, _ = read_response(sock)
        assert status == 200, answer
        assert json.loads(answer)["outputs"][0]["data"] == [7.0, 8.0]
    assert_serving(impatient)


# ---- connection cap -------------------------------------------------------------------------------

def test_connections_beyond_the_cap_get_503(tmp_path_factory):
    s = started(tmp_path_factory, "capped", "--max-connections", "4")
    try:
        time.sleep(0.5)  # the start-up probes' connections are gone
        held = [connect(s) for _ in range(4)]
        time.sleep(0.3)
        # Refused as it is accepted, before it sends anything.
        with connect(s) as fifth:
            status, headers, body, closed = read_response(fifth)
        assert status == 503 and "limit of 4 connections" in body.decode(), body
        assert closed and headers.get("retry-after")
        # The cap is over every port: a gRPC connection is refused too.
        with connect(s, s.grpc_port) as extra:
            wait_closed(extra, 5)
        held.pop().close()
        time.sleep(0.5)
        assert requests.get(f"{s.http_url}/v2/health/ready", timeout=5).status_code == 200
        # The held connections still work.
        held[0].sendall(LIVE)
        assert read_response(held[0])[0] == 200
        for sock in held:
            sock.close()
    finally:
        s.stop()


# ---- restricted APIs ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def restricted(tmp_path_factory):
    s = started(tmp_path_factory, "restricted", "--model-control-mode", "explicit", "--load-model", "*",
                "--http-restricted-api", "model-repository,shared-memory:admin-key=SECRET",
                "--grpc-restricted-protocol", "model-repository:admin-key=SECRET")
    yield s
    s.stop()


def test_http_restricted_groups_need_the_key(restricted):
    url = f"{restricted.http_url}/v2/repository/index"
    response = requests.post(url, json={}, timeout=5)
    assert response.status_code == 403 and "'model-repository'" in response.json()["error"], response.text
    assert requests.post(url, json={}, headers={"admin-key": "WRONG"}, timeout=5).status_code == 403
    assert requests.post(url, json={}, headers={"admin-key": "SECRETS"}, timeout=5).status_code == 403
    response = requests.post(url, json={}, headers={"admin-key": "SECRET"}, timeout=5)
    assert response.status_code == 200
    assert {m["name"] for m in response.json()} == {"identity_fp64", "identity_fp32"}
    # Loads are in the same group.
    load = f"{restricted.http_url}/v2/repository/models/identity_fp32/load"
    assert requests.post(load, timeout=10).status_code == 403
    assert requests.post(load, headers={"admin-key": "SECRET"}, timeout=10).status_code == 200
    shm_status = f"{restricted.http_url}/v2/systemsharedmemory/status"
    response = requests.get(shm_status, timeout=5)
    assert response.status_code == 403 and "'shared-memory'" in response.json()["error"], response.text
    assert requests.get(shm_status, headers={"admin-key": "SECRET"}, timeout=5).status_code == 200
    # Groups not named stay open.
    assert_serving(restricted)
    assert requests.get(f"{restricted.http_url}/v2/models/identity_fp64/config", timeout=5).status_code == 200


def test_grpc_restricted_protocols_need_the_key(restricted):
    c = grpcclient.InferenceServerClient(restricted.grpc_address)
    for headers in (None, {"triton-grpc-protocol-admin-key": "WRONG"}, {"admin-key": "SECRET"}):
        with pytest.raises(InferenceServerException) as caught:
            c.get_model_repository_index(headers=headers)
        assert caught.value.status() == "StatusCode.PERMISSION_DENIED", caught.value
        assert "'model-repository'" in caught.value.message()
    index = c.get_model_repository_index(headers={"triton-grpc-protocol-admin-key": "SECRET"})
    assert {m.name for m in index.models} == {"identity_fp64", "identity_fp32"}
    # Only model-repository is restricted over gRPC: the rest answers without a key.
    assert c.is_server_live() and c.is_model_ready("identity_fp64")
    assert c.get_system_shared_memory_status(as_json=True) in ({}, {"regions": {}})
    x = grpcclient.InferInput("INPUT0", [1, 2], "FP64")
    x.set_data_from_numpy(np.array([[3.0, 4.0]]))
    assert c.infer("identity_fp64", [x]).as_numpy("OUTPUT0").tolist() == [[3.0, 4.0]]


def test_keys_from_a_file_and_from_the_environment(tmp_path_factory, tmp_path):
    key_file = tmp_path / "admin.key"
    key_file.write_text("FILESECRET\n")
    s = started(tmp_path_factory, "keys", "--http-restricted-api", f"model-repository:admin-key=file:{key_file}",
                "--grpc-restricted-protocol", "model-repository:admin-key=env:TERN_TEST_KEY",
                env={"TERN_TEST_KEY": "ENVSECRET"})
    try:
        url = f"{s.http_url}/v2/repository/index"
        assert requests.post(url, timeout=5).status_code == 403
        assert requests.post(url, headers={"admin-key": "file:" + str(key_file)}, timeout=5).status_code == 403
        assert requests.post(url, headers={"admin-key": "ENVSECRET"}, timeout=5).status_code == 403
        assert requests.post(url, headers={"admin-key": "FILESECRET"}, timeout=5).status_code == 200
        c = grpcclient.InferenceServerClient(s.grpc_address)
        for wrong in ("env:TERN_TEST_KEY", "FILESECRET"):
            with pytest.raises(InferenceServerException) as caught:
                c.get_model_repository_index(headers={"triton-grpc-protocol-admin-key": wrong})
            assert caught.value.status() == "StatusCode.PERMISSION_DENIED"
        assert len(c.get_model_repository_index(headers={"triton-grpc-protocol-admin-key": "ENVSECRET"}).models) == 2
    finally:
        s.stop()


def serve_and_fail(repository, *args, env=None, timeout=15):
    """Runs `tern serve` expecting it to give up; returns (exit status, output)."""
    command = [BINARY, "serve", "--model-repository", repository, "--host", "127.0.0.1", "--history-db", "none",
               "--experiments-db", "none", "--metrics-port", str(free_port()), *args]
    if "--http-port" not in args:
        command += ["--http-port", str(free_port())]
    if "--grpc-port" not in args:
        command += ["--grpc-port", str(free_port())]
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **env} if env else None)
    return out.returncode, out.stdout + out.stderr


def test_bad_restriction_options_stop_the_start(tmp_path):
    repo = fixture_repository(tmp_path / "models", "identity_fp64")
    status, output = serve_and_fail(repo, "--http-restricted-api", "bogus:admin-key=S")
    assert status != 0 and "'bogus'" in output and "server ready" not in output, output
    status, output = serve_and_fail(repo, "--grpc-restricted-protocol", "nonsense-group:k=v")
    assert status != 0 and "nonsense-group" in output, output
    assert "TERN_UNSET_KEY" not in os.environ
    status, output = serve_and_fail(repo, "--http-restricted-api", "inference:k=env:TERN_UNSET_KEY")
    assert status != 0 and "TERN_UNSET_KEY" in output, output
    status, output = serve_and_fail(repo, "--http-restricted-api", f"inference:k=file:{tmp_path / 'missing.key'}")
    assert status != 0 and "missing.key" in output, output


# ---- client shared memory is off by default -----------------------------------------------------

def test_client_shared_memory_needs_allow_client_shm(hardened):
    k = f"/tern-hardening-{os.getpid()}"
    handle = shm.create_shared_memory_region("hardening", k, 64)
    try:
        response = requests.post(f"{hardened.http_url}/v2/systemsharedmemory/region/r/register",
                                 json={"key": k, "offset": 0, "byte_size": 64}, timeout=5)
        assert response.status_code == 403 and "--allow-client-shm" in response.json()["error"], response.text
        with pytest.raises(InferenceServerException) as caught:
            httpclient.InferenceServerClient(hardened.http_address).register_system_shared_memory("r", k, 64)
        assert caught.value.status() == "403"
        with pytest.raises(InferenceServerException) as caught:
            grpcclient.InferenceServerClient(hardened.grpc_address).register_system_shared_memory("r", k, 64)
        assert caught.value.status() == "StatusCode.PERMISSION_DENIED", caught.value
        assert "--allow-client-shm" in caught.value.message()
        # Nothing was registered or mapped.
        assert requests.get(f"{hardened.http_url}/v2/systemsharedmemory/status", timeout=5).json() == []
        with open(f"/proc/{hardened.process.pid}/maps") as f:
            assert not any(line.rstrip().endswith("/dev/shm" + k) for line in f)
        # An inference naming a region is refused as unknown, not served from memory.
        body = {"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP64",
                            "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 8}}]}
        response = requests.post(f"{hardened.http_url}/v2/models/identity_fp64/infer", json=body, timeout=5)
        assert response.status_code in (400, 403, 404), response.text
    finally:
        shm.destroy_shared_memory_region(handle)
    assert_serving(hardened)


# ---- configurations from clients and from disk --------------------------------------------------

@pytest.fixture(scope="module")
def configurable(tmp_path_factory):
    repo = fixture_repository(tmp_path_factory.mktemp("configurable") / "models", "identity_fp64")
    shutil.copytree(os.path.join(FIXTURES, "identity_fp64"), os.path.join(repo, "garbled"))
    with open(os.path.join(repo, "garbled", "config.pbtxt"), "wb") as f:
        f.write(random.Random(3).randbytes(512))
    s = TernServer(repo, "--model-control-mode", "explicit", "--load-model", "identity_fp64")
    yield s
    s.stop()


IDENTITY_FP64 = {"name": "identity_fp64", "backend": "onnxruntime", "max_batch_size": 4,
                 "input": [{"name": "INPUT0", "data_type": "TYPE_FP64", "dims": [-1]}],
                 "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP64", "dims": [-1]}]}


def load_with(server, config_text):
    start = time.monotonic()
    response = requests.post(f"{server.http_url}/v2/repository/models/identity_fp64/load",
                             json={"parameters": {"config": config_text}}, timeout=30)
    return response, time.monotonic() - start


def test_load_configs_that_escape_the_folder_or_ask_too_much_are_refused(configurable):
    cases = [
        ({"default_model_filename": "../../other/1/model.onnx"}, "inside the model's folder"),
        ({"default_model_filename": "/etc/passwd"}, "inside the model's folder"),
        ({"instance_group": [{"count": 1000, "kind": "KIND_CPU"}]}, "limit"),
        ({"instance_group": [{"count": 100000, "kind": "KIND_CPU"}]}, "instance_group"),
        ({"max_batch_size": 2147483647}, "larger than the limit"),
        ({"input": [{"name": "INPUT0", "data_type": "TYPE_FP64", "dims": [9223372036854775807]}]}, "9223372036854775807"),
    ]
    for override, fragment in cases:
        response, seconds = load_with(configurable, json.dumps({**IDENTITY_FP64, **override}))
        assert response.status_code == 400, (override, response.text)
        assert fragment in response.json()["error"], (override, response.text)
        assert seconds < 10, (override, seconds)
        # The version already serving keeps serving.
        assert_serving(configurable)
    text = json.dumps(IDENTITY_FP64).replace('"max_batch_size": 4', '"max_batch_size": 1e99')
    assert "1e99" in text
    response, _ = load_with(configurable, text)
    assert response.status_code == 400 and "out of range" in response.json()["error"], response.text
    # And a sound config still loads.
    response, _ = load_with(configurable, json.dumps({**IDENTITY_FP64, "max_batch_size": 2}))
    assert response.status_code == 200, response.text
    assert requests.get(f"{configurable.http_url}/v2/models/identity_fp64/config", timeout=5).json()["max_batch_size"] == 2
    assert_serving(configurable)


def test_a_config_pbtxt_of_random_bytes_is_reported_as_not_text(configurable):
    response = requests.post(f"{configurable.http_url}/v2/repository/models/garbled/load", timeout=30)
    assert response.status_code == 400 and "not UTF-8 text" in response.json()["error"], response.text
    index = {m["name"]: m for m in requests.post(f"{configurable.http_url}/v2/repository/index", timeout=5).json()}
    assert index["garbled"]["state"] == "UNAVAILABLE" and "not UTF-8 text" in index["garbled"]["reason"], index["garbled"]
    assert_serving(configurable)


# ---- start-up faults ------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["--grpc-port", "--http-port"])
def test_a_port_in_use_stops_the_start(tmp_path, which):
    repo = fixture_repository(tmp_path / "models", "identity_fp64")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        start = time.monotonic()
        status, output = serve_and_fail(repo, which, str(port), timeout=15)
        assert time.monotonic() - start < 15
    assert status != 0, output
    assert str(port) in output and "Address already in use" in output, output
    assert "server ready" not in output, output


def test_a_missing_repository_stops_the_start(tmp_path):
    missing = str(tmp_path / "no-such-repository")
    status, output = serve_and_fail(missing)
    assert status != 0 and missing in output, output
    assert "server ready" not in output


def test_sigterm_stops_the_server(tmp_path):
    s = TernServer(fixture_repository(tmp_path / "models", "identity_fp64"))
    try:
        assert_serving(s)
        s.process.send_signal(signal.SIGTERM)
        s.process.wait(timeout=20)
        assert s.process.returncode is not None
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{s.http_url}/v2/health/live", timeout=2)
    finally:
        if s.process.poll() is None:
            s.process.kill()
        s.log.close()


# ---- clear errors for common mistakes -----------------------------------------------------------

def test_a_wrong_method_gets_405_with_allow(hardened):
    status, headers, body, _ = exchange(hardened, b"FOO /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 405 and headers.get("allow") == "GET", (headers, body)
    status, headers, body, _ = exchange(
        hardened, b"PUT /v2/models/identity_fp64/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert status == 405 and headers.get("allow") == "POST", (headers, body)
    assert requests.delete(f"{hardened.http_url}/v2/models/identity_fp64/infer", timeout=5).status_code == 405
    # An unknown path stays 404.
    assert requests.get(f"{hardened.http_url}/v2/no/such/path", timeout=5).status_code == 404


def test_bare_lf_tls_and_out_of_range_values_are_explained(hardened):
    status, _, body, _ = exchange(hardened, b"GET /v2/health/live HTTP/1.1\nHost: x\n\n")
    assert status == 400 and "bare LF" in body.decode(), body
    status, _, body, closed = exchange(hardened, b"\x16\x03\x01\x00\x05hello")
    assert status == 400 and "TLS handshake" in body.decode(), body
    assert closed
    response = infer_json(hardened, "identity_fp32", "FP32", [1, 1], [1e39])
    assert response.status_code == 400 and "beyond the range of FP32" in response.json()["error"], response.text
    response = infer_json(hardened, "identity_fp32", "FP32", [1, 2], [3e38, -3e38])
    assert response.status_code == 200, response.text
    assert np.allclose(response.json()["outputs"][0]["data"], [3e38, -3e38], rtol=1e-6)
    assert_serving(hardened)


def test_a_grpc_stream_whose_messages_stop_arriving_is_ended(impatient):
    """A call that opens a stream and then sends nothing holds no connection forever: the
    server ends it (DEADLINE_EXCEEDED) after the idle timeout (2 s here)."""
    channel = grpc.insecure_channel(impatient.grpc_address)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    stop = time.monotonic() + 15

    def silent():
        while time.monotonic() < stop:
            time.sleep(0.1)
        return
        yield  # a generator that yields nothing

    started_at = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        for _ in stub.ModelStreamInfer(silent(), timeout=20):
            pass
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, caught.value
    assert "stopped arriving" in caught.value.details()
    assert time.monotonic() - started_at < 10
    channel.close()
    assert_serving(impatient)


def test_an_experiments_promote_also_needs_the_lifecycle_key(tmp_path_factory):
    """Promoting an experiment swaps a model: restricting `lifecycle` guards it even when the
    experiments group is open (the key is checked before the experiment is even looked up)."""
    s = started(tmp_path_factory, "lifecycle-only", "--http-restricted-api", "lifecycle:ops=K",
                "--grpc-restricted-protocol", "lifecycle:ops=K")
    try:
        url = f"{s.http_url}/v2/experiments/nothing/promote"
        refused = requests.post(url, data="{}", timeout=5)
        assert refused.status_code == 403 and "'lifecycle'" in refused.json()["error"], refused.text
        allowed = requests.post(url, data="{}", headers={"ops": "K"}, timeout=5)
        assert allowed.status_code == 404, allowed.text  # past the check: no such experiment
        # Other experiment routes need no key.
        assert requests.get(f"{s.http_url}/v2/experiments", timeout=5).status_code == 200

        channel = grpc.insecure_channel(s.grpc_address)
        promote = channel.unary_unary("/tern.experiments.v1.ExperimentService/PromoteExperiment",
                                      request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as caught:
            promote(b"", timeout=5)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED and "'lifecycle'" in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:
            promote(b"", timeout=5, metadata=[("triton-grpc-protocol-ops", "K")])
        assert caught.value.code() != grpc.StatusCode.PERMISSION_DENIED
        listing = channel.unary_unary("/tern.experiments.v1.ExperimentService/ListExperiments",
                                      request_serializer=lambda b: b, response_deserializer=lambda b: b)
        listing(b"", timeout=5)
        channel.close()
    finally:
        s.stop()


def test_control_actions_record_who_made_them(restricted):
    """Loads and unloads land in the lifecycle history with the client's address and the name of
    the key that opened the restricted group, over HTTP and gRPC."""
    load = requests.post(f"{restricted.http_url}/v2/repository/models/identity_fp32/load", headers={"admin-key": "SECRET"}, timeout=10)
    assert load.status_code == 200, load.text
    c = grpcclient.InferenceServerClient(restricted.grpc_address)
    c.unload_model("identity_fp32", headers={"triton-grpc-protocol-admin-key": "SECRET"})
    c.load_model("identity_fp32", headers={"triton-grpc-protocol-admin-key": "SECRET"})
    events = requests.get(f"{restricted.http_url}/v2/repository/models/identity_fp32/history", timeout=5).json()
    by = [e["by"] for e in events[-3:]]
    assert all(b.startswith("127.0.0.1:") and b.endswith(", key admin-key") for b in by), events[-3:]
    assert [e["action"] for e in events[-3:]][1] == "unload", events[-3:]
    # Start-up loads are the server's own: no one named.
    first = requests.get(f"{restricted.http_url}/v2/repository/models/identity_fp64/history", timeout=5).json()[0]
    assert first["by"] == "", first


def test_a_declared_shape_larger_than_the_request_limit_is_refused_before_decoding(tmp_path_factory):
    """A shape sent with its data may not declare more bytes than --max-request-size, over both
    protocols (checked before the data is read)."""
    s = started(tmp_path_factory, "small-requests", "--max-request-size", "100000")
    try:
        response = infer_json(s, "identity_fp64", "FP64", [1, 20000], [1.0])
        assert response.status_code == 400 and "largest request this server takes (100000 bytes" in response.json()["error"], response.text
        assert infer_json(s, "identity_fp64", "FP64", [1, 2], [1.0, 2.0]).status_code == 200
        channel = grpc.insecure_channel(s.grpc_address)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="identity_fp64")
        request.inputs.add(name="INPUT0", datatype="FP64", shape=[1, 20000])
        request.raw_input_contents.append(b"\0" * 8)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "largest request" in caught.value.details()
        channel.close()
        assert_serving(s)
    finally:
        s.stop()


def test_the_device_group_guards_device_stats_on_the_metrics_port(tmp_path_factory):
    s = started(tmp_path_factory, "device-restricted", "--http-restricted-api", "device:device-key=env:TERN_DEVICE_KEY",
                env={"TERN_DEVICE_KEY": "D"})
    try:
        url = f"http://127.0.0.1:{s.metrics_port}"
        refused = requests.get(f"{url}/device/stats", timeout=5)
        assert refused.status_code == 403 and "'device'" in refused.json()["error"], refused.text
        assert requests.get(f"{url}/device/stats", headers={"device-key": "D"}, timeout=5).status_code == 200
        assert requests.get(f"{url}/metrics", timeout=5).status_code == 200  # Prometheus scrapes stay open
        assert requests.post(f"{url}/metrics", timeout=5).status_code == 405
    finally:
        s.stop()
