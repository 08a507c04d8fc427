"""Bad requests get Triton's status codes and readable messages, and never disturb the server."""
import json

import numpy as np
import pytest
import requests
from tritonclient.utils import InferenceServerException

from helpers import client, infer

STATUS = {  # what tritonclient reports for each protocol
    "http-binary": {"not_found": "404", "invalid": "400"},
    "http-json": {"not_found": "404", "invalid": "400"},
    "grpc": {"not_found": "StatusCode.NOT_FOUND", "invalid": "StatusCode.INVALID_ARGUMENT"},
}
PROTOCOLS = list(STATUS)
ONES = np.ones((1, 16), dtype=np.float32)


def expect(kind, protocol, call, *fragments):
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == STATUS[protocol][kind], caught.value
    for fragment in fragments:
        assert fragment in caught.value.message(), caught.value.message()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_and_version_are_not_found(server, protocol):
    expect("not_found", protocol, lambda: infer(server, protocol, "no_such_model", {"INPUT0": ONES}), "no_such_model")
    expect("not_found", protocol,
           lambda: infer(server, protocol, "add_sub", {"INPUT0": ONES, "INPUT1": ONES}, model_version="7"), "version 7")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_invalid_requests_are_invalid_argument(server, protocol):
    cases = [
        ({"INPUT0": np.ones((1, 15), np.float32), "INPUT1": ONES}, None, "unexpected shape"),
        ({"INPUT0": ONES.astype(np.float64), "INPUT1": ONES}, None, "data-type"),
        ({"INPUT0": ONES}, None, "INPUT1"),
        ({"INPUT0": ONES, "INPUT1": ONES, "EXTRA": ONES}, None, "EXTRA"),
        ({"INPUT0": np.ones((9, 16), np.float32), "INPUT1": np.ones((9, 16), np.float32)}, None, "batch-size must be <= 8"),
        ({"INPUT0": ONES, "INPUT1": ONES}, ["NO_SUCH_OUTPUT"], "NO_SUCH_OUTPUT"),
    ]
    for inputs, outputs, fragment in cases:
        expect("invalid", protocol, lambda: infer(server, protocol, "add_sub", inputs, outputs=outputs), fragment)


def test_model_ready_on_unknown_model(server):
    assert requests.get(f"{server.http_url}/v2/models/no_such_model/ready").status_code == 400
    for protocol in ("http-binary", "grpc"):
        _, c = client(server, protocol)
        assert c.is_model_ready("no_such_model") is False
        assert c.is_model_ready("add_sub") is True


def post_infer(server, body, headers=None):
    return requests.post(f"{server.http_url}/v2/models/add_sub/infer", data=body, headers=headers or {})


def test_malformed_http_bodies_get_400_with_error_json(server):
    header = json.dumps({"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "parameters": {"binary_data_size": 64}},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "FP32", "parameters": {"binary_data_size": 64}}]}).encode()
    cases = [
        (b"{not json", None),
        (json.dumps({"outputs": []}).encode(), None),                       # no inputs
        (json.dumps({"inputs": [{"name": "INPUT0"}]}).encode(), None),        # no datatype/shape
        (header + b"\0" * 100, {"Inference-Header-Content-Length": str(len(header))}),   # too little binary data
        (header + b"\0" * 130, {"Inference-Header-Content-Length": str(len(header))}),   # too much
        (header, {"Inference-Header-Content-Length": str(len(header) + 10)}),            # header past the end
        (header + b"\0" * 128, {"Inference-Header-Content-Length": "abc"}),
        (json.dumps({"inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 15},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16}]}).encode(), None),  # size mismatch
        (json.dumps({"inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": ["x"] * 16},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16}]}).encode(), None),
    ]
    for body, headers in cases:
        response = post_infer(server, body, headers)
        assert response.status_code == 400, (body[:80], response.text)
        assert set(response.json()) == {"error"} and response.json()["error"]
    # and the server still serves
    good = {"inputs": [{"name": n, "shape": [1, 16], "datatype": "FP32", "data": [2.0] * 16} for n in ("INPUT0", "INPUT1")]}
    response = post_infer(server, json.dumps(good).encode())
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [4.0] * 16


def test_bytes_length_prefix_past_the_end_is_rejected(server):
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 6}}]}).encode()
    body = header + (100).to_bytes(4, "little") + b"ab"
    response = requests.post(f"{server.http_url}/v2/models/identity_bytes/infer", data=body,
                             headers={"Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 400 and "past the end" in response.json()["error"]


def test_grpc_stream_reports_errors_in_band(server):
    import queue

    import tritonclient.grpc as grpcclient
    c = grpcclient.InferenceServerClient(server.grpc_address)
    results = queue.Queue()
    c.start_stream(callback=lambda result, error: results.put((result, error)))
    good = [grpcclient.InferInput(n, [1, 16], "FP32") for n in ("INPUT0", "INPUT1")]
    for t in good:
        t.set_data_from_numpy(ONES)
    bad = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
    bad.set_data_from_numpy(ONES)
    c.async_stream_infer("add_sub", good, request_id="1")
    c.async_stream_infer("add_sub", [bad], request_id="2")
    c.async_stream_infer("add_sub", good, request_id="3")
    got = [results.get(timeout=10) for _ in range(3)]
    c.stop_stream()
    assert got[0][1] is None and np.array_equal(got[0][0].as_numpy("OUTPUT0"), ONES * 2)
    assert got[1][0] is None and "INPUT1" in got[1][1].message()
    assert got[2][1] is None and got[2][0].get_response().id == "3"


def test_broken_config_is_reported_and_other_models_load(server):
    response = requests.post(f"{server.http_url}/v2/repository/index", json={})
    index = {entry["name"]: entry for entry in response.json()}
    broken = index["broken_config"]
    assert broken["state"] == "UNAVAILABLE"
    assert "config.pbtxt:4" in broken["reason"] and "enum" in broken["reason"], broken["reason"]
    assert index["add_sub"]["state"] == "READY"
    assert requests.get(f"{server.http_url}/v2/models/broken_config").status_code == 404
    # Tern keeps serving the models that loaded: the failure is reported in the index, not by readiness.
    assert requests.get(f"{server.http_url}/v2/health/ready").status_code == 200
