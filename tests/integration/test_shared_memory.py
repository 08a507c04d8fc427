"""Triton's system shared-memory extension with the unmodified tritonclient: inputs read from and
outputs written to POSIX shared memory the client registered, over HTTP and gRPC; registration,
status and every error Triton 2.51 gives (checked against it), and no mapping left behind."""
import base64
import os
import uuid

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from helpers import client

PROTOCOLS = ["http", "grpc"]


@pytest.fixture
def server(shm_server):
    """Every test here registers regions: a server started with --allow-client-shm."""
    return shm_server


def key():
    return f"/tern-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def regions():
    """Creates shared-memory objects for a test and removes them (and their registration) after."""
    made = []

    def make(byte_size, name=None):
        k = key()
        handle = shm.create_shared_memory_region(name or k[1:], k, byte_size)
        made.append(handle)
        return k, handle

    yield make
    for handle in made:
        shm.destroy_shared_memory_region(handle)


def module_client(server, protocol):
    return client(server, "grpc" if protocol == "grpc" else "http-binary")


def mapped(server, k):
    """Whether the server process maps the shared-memory object `k`."""
    with open(f"/proc/{server.process.pid}/maps") as f:
        return any(line.rstrip().endswith("/dev/shm" + k) for line in f)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_inputs_and_outputs_in_shared_memory(server, regions, protocol):
    module, c = module_client(server, protocol)
    a = np.arange(32, dtype=np.float32).reshape(2, 16)
    b = np.full((2, 16), 0.5, dtype=np.float32)
    # Both inputs in one region, the second at an offset; the output at an offset of its own region.
    in_key, in_handle = regions(2 * a.nbytes)
    out_key, out_handle = regions(4096)
    shm.set_shared_memory_region(in_handle, [a])
    shm.set_shared_memory_region(in_handle, [b], offset=a.nbytes)
    c.unregister_system_shared_memory()
    c.register_system_shared_memory("inputs", in_key, 2 * a.nbytes)
    c.register_system_shared_memory("outputs", out_key, 4096, offset=0)

    x0 = module.InferInput("INPUT0", [2, 16], "FP32")
    x0.set_shared_memory("inputs", a.nbytes)
    x1 = module.InferInput("INPUT1", [2, 16], "FP32")
    x1.set_shared_memory("inputs", b.nbytes, offset=a.nbytes)
    o0 = module.InferRequestedOutput("OUTPUT0")
    o0.set_shared_memory("outputs", 1024, offset=512)
    o1 = module.InferRequestedOutput("OUTPUT1")
    result = c.infer("add_sub", [x0, x1], outputs=[o0, o1])

    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.float32, [2, 16], offset=512), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    # The output in shared memory is described, not sent (as Triton does).
    entry = result.get_output("OUTPUT0")
    shape = entry["shape"] if protocol == "http" else list(entry.shape)
    assert shape == [2, 16]
    if protocol == "grpc":
        assert len(result.get_response().raw_output_contents[0]) == 0
    else:
        assert "data" not in entry and "binary_data_size" not in entry.get("parameters", {})

    # The inputs are read from the region at each request, not from a copy made at registration.
    shm.set_shared_memory_region(in_handle, [b], offset=0)
    c.infer("add_sub", [x0, x1], outputs=[o0, o1])
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.float32, [2, 16], offset=512), b + b)

    status = c.get_system_shared_memory_status(**({"as_json": True} if protocol == "grpc" else {}))
    if protocol == "grpc":
        regions_by_name = status["regions"]
        assert regions_by_name["inputs"]["key"] == in_key and int(regions_by_name["inputs"]["byte_size"]) == 2 * a.nbytes
        assert set(regions_by_name) == {"inputs", "outputs"}
    else:
        assert [(r["name"], r["key"], r["offset"], r["byte_size"]) for r in status] == [
            ("inputs", in_key, 0, 2 * a.nbytes), ("outputs", out_key, 0, 4096)]
    c.unregister_system_shared_memory("inputs")
    assert mapped(server, out_key) and not mapped(server, in_key)
    c.unregister_system_shared_memory()
    assert not mapped(server, out_key)
    assert c.get_system_shared_memory_status(**({"as_json": True} if protocol == "grpc" else {})) in ([], {})


def test_a_region_at_an_offset_that_is_not_page_aligned(server, regions):
    """Triton refuses offsets mmap cannot take directly; Tern maps from the offset's page."""
    _, c = module_client(server, "http")
    k, handle = regions(8192)
    a = np.arange(16, dtype=np.float32)[None]
    shm.set_shared_memory_region(handle, [a], offset=100)
    shm.set_shared_memory_region(handle, [a * 3], offset=100 + a.nbytes)
    c.register_system_shared_memory("odd", k, 2 * a.nbytes, offset=100)
    try:
        x0 = httpclient.InferInput("INPUT0", [1, 16], "FP32")
        x0.set_shared_memory("odd", a.nbytes)
        x1 = httpclient.InferInput("INPUT1", [1, 16], "FP32")
        x1.set_shared_memory("odd", a.nbytes, offset=a.nbytes)
        result = c.infer("add_sub", [x0, x1])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a * 4)
    finally:
        c.unregister_system_shared_memory("odd")


def post(server, path, body=None):
    return requests.post(f"{server.http_url}{path}", json=body)


def test_registration_errors_match_triton(server, regions):
    k, _ = regions(64)
    url = "/v2/systemsharedmemory/region"
    assert post(server, f"{url}/r/register", {"key": k, "offset": 0, "byte_size": 64}).status_code == 200
    try:
        r = post(server, f"{url}/r/register", {"key": k, "offset": 0, "byte_size": 64})
        assert r.status_code == 400 and r.json()["error"] == "shared memory region 'r' already in manager"
        r = post(server, f"{url}/x/register", {"key": "/tern-no-such-key", "offset": 0, "byte_size": 64})
        assert r.status_code == 400 and "Unable to open shared memory region: '/tern-no-such-key'" in r.json()["error"]
        r = post(server, f"{url}/y/register", {"key": k, "offset": 0, "byte_size": 1 << 20})
        assert r.status_code == 400 and "Invalid shared memory region" in r.json()["error"]
        r = post(server, f"{url}/w/register", {"key": k})
        assert r.status_code == 400 and r.json()["error"] == "Shared memory register request has no 'byte_size' field"
        r = requests.get(f"{server.http_url}{url}/nope/status")
        assert r.status_code == 404 and r.json()["error"] == "Unable to find system shared memory region: 'nope'"
        assert post(server, f"{url}/nope/unregister").status_code == 200
        # gRPC gives the same answers with gRPC codes.
        g = grpcclient.InferenceServerClient(server.grpc_address)
        with pytest.raises(InferenceServerException) as e:
            g.register_system_shared_memory("r", k, 64)
        assert e.value.status() == "StatusCode.ALREADY_EXISTS"
        with pytest.raises(InferenceServerException) as e:
            g.get_system_shared_memory_status("nope")
        assert e.value.status() == "StatusCode.NOT_FOUND"
        # No CUDA here: nothing registered, and registering says why.
        assert requests.get(f"{server.http_url}/v2/cudasharedmemory/status").json() == []
        with pytest.raises(InferenceServerException) as e:
            g.register_cuda_shared_memory("c", base64.b64encode(b"handle"), 0, 64)
        assert "CUDA shared memory is not available on this server: the CUDA runtime cannot be loaded" in e.value.message(), e.value.message()
        assert "system_shared_memory" in requests.get(f"{server.http_url}/v2").json()["extensions"]
    finally:
        post(server, f"{url}/r/unregister")


def test_inference_errors_match_triton_and_the_server_keeps_serving(server, regions):
    k, handle = regions(256)
    shm.set_shared_memory_region(handle, [np.ones(64, dtype=np.float32)])
    assert post(server, "/v2/systemsharedmemory/region/e/register", {"key": k, "offset": 0, "byte_size": 256}).status_code == 200

    def infer(inputs, outputs=None):
        body = {"inputs": inputs}
        if outputs:
            body["outputs"] = outputs
        return post(server, "/v2/models/add_sub/infer", body)

    def place(region="e", size=64, offset=0):
        return {"shared_memory_region": region, "shared_memory_byte_size": size, "shared_memory_offset": offset}

    inline = {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "data": [1.0] * 16}
    try:
        r = infer([{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "parameters": place("nope")}, inline])
        assert r.status_code == 404 and r.json()["error"] == "Unable to find shared memory region: 'nope'"
        r = infer([{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "parameters": place(offset=240)}, inline])
        assert r.status_code == 400 and "Invalid offset + byte size for shared memory region: 'e'" in r.json()["error"]
        r = infer([{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "parameters": place(size=48)}, inline])
        assert r.status_code == 400 and "INPUT0" in r.json()["error"] and "48" in r.json()["error"]
        r = infer([{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [1.0] * 16, "parameters": place()}, inline])
        assert r.status_code == 400 and "only one of" in r.json()["error"]
        good = [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "parameters": place()}, inline]
        r = infer(good, [{"name": "OUTPUT0", "parameters": {**place(size=32, offset=128)}}])
        assert r.status_code == 400 and r.json()["error"] == (
            "shared memory size specified with the request for output 'OUTPUT0' (32 bytes) should be at least 64 bytes to hold the results")
        r = infer(good, [{"name": "OUTPUT0", "parameters": {**place(offset=128), "binary_data": True}}])
        assert r.status_code == 400 and r.json()["error"] == "output 'OUTPUT0' can't set both 'shared_memory_region' and 'binary_data'"
        r = infer(good, [{"name": "OUTPUT0", "parameters": place(offset=128)}])
        assert r.status_code == 200, r.text
        assert shm.get_contents_as_numpy(handle, np.float32, [16], offset=128).tolist() == [2.0] * 16
    finally:
        post(server, "/v2/systemsharedmemory/region/e/unregister")
    r = infer(good)
    assert r.status_code == 404
    assert infer([{**inline, "name": "INPUT0"}, inline]).status_code == 200
