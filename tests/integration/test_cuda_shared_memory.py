"""Triton's CUDA shared-memory extension with the unmodified tritonclient, over HTTP and gRPC.

This machine has no GPU, so the CUDA runtime is a stand-in (fixtures/fake_cudart.c, built with
gcc): its "device memory" is POSIX shared memory named by the IPC handle and cudaMemcpy is
memcpy. Everything on Tern's side is real: the run-time loading of the library, the C call that
passes the 64-byte handle by value, registration, status, unregistration, copies to and from the
device each request, the device each copy runs on, and every handle closed. Without a CUDA runtime
the extension refuses registration and says why."""
import base64
import os
import subprocess
import uuid

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from conftest import ROOT, TernServer, build_repository


@pytest.fixture(scope="module")
def fake_cudart(tmp_path_factory):
    library = tmp_path_factory.mktemp("cudart") / "libfake_cudart.so"
    build = subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(library), os.path.join(ROOT, "tests", "integration", "fixtures", "fake_cudart.c")],
                           capture_output=True, text=True)
    if build.returncode != 0:
        pytest.skip(f"cannot build the CUDA runtime stand-in with gcc: {build.stderr[-300:]}")
    return library


@pytest.fixture(scope="module")
def cuda_server(tmp_path_factory, fake_cudart):
    root = tmp_path_factory.mktemp("cudashm")
    log = root / "cudart.log"
    server = TernServer(build_repository(str(root / "models")), "--allow-client-shm", "--cuda-runtime-library", str(fake_cudart),
                        env={"FAKE_CUDART_LOG": str(log)})
    server.cudart_log = log
    yield server
    server.stop()


@pytest.fixture
def device_memory():
    """Makes "device allocations" of the stand-in (shared-memory objects) and their IPC handles
    as tritonclient's cuda_shared_memory.get_raw_handle gives them (base64 of the 64 bytes)."""
    made = []

    def make(byte_size):
        key = f"/tern-cuda-{uuid.uuid4().hex[:12]}"
        handle = shm.create_shared_memory_region(key[1:], key, byte_size)
        made.append(handle)
        return handle, base64.b64encode(key.encode().ljust(64, b"\0"))

    yield make
    for handle in made:
        shm.destroy_shared_memory_region(handle)


def calls(server):
    return server.cudart_log.read_text().splitlines() if server.cudart_log.exists() else []


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_inputs_and_outputs_in_cuda_shared_memory(cuda_server, device_memory, protocol):
    module = grpcclient if protocol == "grpc" else httpclient
    c = module.InferenceServerClient(cuda_server.grpc_address if protocol == "grpc" else cuda_server.http_address)
    a = np.arange(32, dtype=np.float32).reshape(2, 16)
    b = np.full((2, 16), 0.25, dtype=np.float32)
    inputs, input_handle = device_memory(2 * a.nbytes)
    outputs, output_handle = device_memory(4096)
    shm.set_shared_memory_region(inputs, [a])
    shm.set_shared_memory_region(inputs, [b], offset=a.nbytes)
    c.unregister_cuda_shared_memory()
    before = len(calls(cuda_server))
    c.register_cuda_shared_memory("gpu_in", input_handle, 1, 2 * a.nbytes)
    c.register_cuda_shared_memory("gpu_out", output_handle, 0, 4096)

    x0 = module.InferInput("INPUT0", [2, 16], "FP32")
    x0.set_shared_memory("gpu_in", a.nbytes)
    x1 = module.InferInput("INPUT1", [2, 16], "FP32")
    x1.set_shared_memory("gpu_in", b.nbytes, offset=a.nbytes)
    o0 = module.InferRequestedOutput("OUTPUT0")
    o0.set_shared_memory("gpu_out", 1024, offset=256)
    o1 = module.InferRequestedOutput("OUTPUT1")
    result = c.infer("add_sub", [x0, x1], outputs=[o0, o1])
    np.testing.assert_array_equal(shm.get_contents_as_numpy(outputs, np.float32, [2, 16], offset=256), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    # The inputs are copied off the device at each request, not once at registration.
    shm.set_shared_memory_region(inputs, [b], offset=0)
    c.infer("add_sub", [x0, x1], outputs=[o0, o1])
    np.testing.assert_array_equal(shm.get_contents_as_numpy(outputs, np.float32, [2, 16], offset=256), b + b)

    log = calls(cuda_server)[before:]
    assert log[0].startswith("open /tern-cuda-") and log[0].endswith("device 1 flags 1"), log  # lazy peer access, as Triton
    assert log[1].endswith("device 0 flags 1"), log
    # Each request: two inputs read on device 1, one output written on device 0.
    assert log[2:].count("copy to-host 128 device 1") == 4 and log[2:].count("copy to-device 128 device 0") == 2, log

    status = c.get_cuda_shared_memory_status(**({"as_json": True} if protocol == "grpc" else {}))
    if protocol == "grpc":
        assert {name: (int(r.get("device_id", 0)), int(r["byte_size"])) for name, r in status["regions"].items()} == {
            "gpu_in": (1, 2 * a.nbytes), "gpu_out": (0, 4096)}
    else:
        assert status == [{"name": "gpu_in", "device_id": 1, "byte_size": 256}, {"name": "gpu_out", "device_id": 0, "byte_size": 4096}]
    # System shared memory calls leave CUDA regions alone (and the other way round).
    c.unregister_system_shared_memory()
    status = c.get_cuda_shared_memory_status(**({"as_json": True} if protocol == "grpc" else {}))
    assert sorted(status["regions"] if protocol == "grpc" else [r["name"] for r in status]) == ["gpu_in", "gpu_out"]
    c.unregister_cuda_shared_memory("gpu_in")
    c.unregister_cuda_shared_memory()
    assert c.get_cuda_shared_memory_status(**({"as_json": True} if protocol == "grpc" else {})) in ([], {})
    # Every handle opened was closed.
    log = calls(cuda_server)[before:]
    assert sum(line.startswith("open ") for line in log) == 2 and sum(line.startswith("close ") for line in log) == 2, log
    assert "cuda_shared_memory" in requests.get(f"{cuda_server.http_url}/v2", timeout=10).json()["extensions"]


def test_bad_cuda_registrations_get_clear_errors_and_the_server_keeps_serving(cuda_server, device_memory):
    url = f"{cuda_server.http_url}/v2/cudasharedmemory/region"
    region, raw = device_memory(64)

    def register(name, body):
        return requests.post(f"{url}/{name}/register", json=body, timeout=10)

    r = register("short", {"raw_handle": {"b64": base64.b64encode(b"too short").decode()}, "device_id": 0, "byte_size": 64})
    assert r.status_code == 400 and "a CUDA IPC handle is 64 bytes, not 9" in r.json()["error"], r.text
    r = register("nodev", {"raw_handle": {"b64": raw.decode()}, "device_id": 7, "byte_size": 64})
    assert r.status_code == 400 and "CUDA device 7 does not exist (this server sees 2)" in r.json()["error"], r.text
    r = register("gone", {"raw_handle": {"b64": base64.b64encode(b"/tern-cuda-absent".ljust(64, b"\0")).decode()}, "device_id": 0, "byte_size": 64})
    assert r.status_code == 400 and "Unable to open the CUDA IPC handle on device 0: invalid resource handle" in r.json()["error"], r.text
    r = register("plain", {"raw_handle": "not an object", "device_id": 0, "byte_size": 64})
    assert r.status_code == 400 and "'raw_handle' must be" in r.json()["error"], r.text
    r = register("nosize", {"raw_handle": {"b64": raw.decode()}, "device_id": 0})
    assert r.status_code == 400 and r.json()["error"] == "CUDA shared memory register request has no 'byte_size' field", r.text
    assert register("dup", {"raw_handle": {"b64": raw.decode()}, "device_id": 0, "byte_size": 64}).status_code == 200
    r = register("dup", {"raw_handle": {"b64": raw.decode()}, "device_id": 0, "byte_size": 64})
    assert r.status_code == 400 and "already in manager" in r.json()["error"], r.text
    r = requests.get(f"{url}/nope/status", timeout=10)
    assert r.status_code == 404 and r.json()["error"] == "Unable to find cuda shared memory region: 'nope'"
    # A tensor that reaches past the region's end is refused; the region and the server stay.
    g = grpcclient.InferenceServerClient(cuda_server.grpc_address)
    x0 = grpcclient.InferInput("INPUT0", [2, 16], "FP32")
    x0.set_shared_memory("dup", 128)
    x1 = grpcclient.InferInput("INPUT1", [2, 16], "FP32")
    x1.set_data_from_numpy(np.ones((2, 16), np.float32))
    with pytest.raises(InferenceServerException) as e:
        g.infer("add_sub", [x0, x1])
    assert "Invalid offset + byte size for shared memory region: 'dup'" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        g.register_cuda_shared_memory("dup2", base64.b64encode(b"x" * 10), 0, 64)
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and "64 bytes, not 10" in e.value.message()
    assert [r["name"] for r in requests.get(f"{cuda_server.http_url}/v2/cudasharedmemory/status", timeout=10).json()] == ["dup"]
    requests.post(f"{cuda_server.http_url}/v2/cudasharedmemory/unregister", timeout=10)
    assert requests.get(f"{cuda_server.http_url}/v2/health/ready", timeout=10).status_code == 200


def test_without_a_cuda_runtime_registration_is_refused_with_the_reason(tmp_path):
    server = TernServer(build_repository(str(tmp_path / "models")), "--allow-client-shm", "--cuda-runtime-library", str(tmp_path / "libcudart-absent.so"))
    try:
        r = requests.post(f"{server.http_url}/v2/cudasharedmemory/region/c/register",
                          json={"raw_handle": {"b64": base64.b64encode(b"\0" * 64).decode()}, "device_id": 0, "byte_size": 64}, timeout=10)
        assert r.status_code == 501, r.text
        assert "CUDA shared memory is not available on this server: the CUDA runtime cannot be loaded" in r.json()["error"]
        assert "libcudart-absent.so" in r.json()["error"]
        assert requests.get(f"{server.http_url}/v2/cudasharedmemory/status", timeout=10).json() == []
        assert "cuda_shared_memory" not in requests.get(f"{server.http_url}/v2", timeout=10).json()["extensions"]
        assert "no CUDA shared memory" in server.logs()
    finally:
        server.stop()
