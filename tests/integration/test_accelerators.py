"""Execution providers asked for by Triton's config fields, against a real `tern serve` on the
CPU-only ONNX Runtime wheel: a model that asks for the GPU fails to load with a message naming
the provider and the library (the others keep serving), unless its config allows the CPU; then it
serves there and says so in its config and in a metric."""
import os
import shutil

import numpy as np
import requests
import tritonclient.http as httpclient

from conftest import ROOT, TernServer

FIXTURES = os.environ.get("TERN_FIXTURES", os.path.join(ROOT, ".cache", "fixtures"))

CONFIG = """name: "{name}"
backend: "onnxruntime"
max_batch_size: 8
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] }}, {{ name: "INPUT1" data_type: TYPE_FP32 dims: [ 16 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] }}, {{ name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 16 ] }} ]
instance_group [ {{ count: 1 kind: {kind} }} ]
optimization {{ execution_accelerators {{ gpu_execution_accelerator: [ {{ name: "tensorrt" parameters {{ key: "precision_mode" value: "FP16" }} }} ] }} }}
{extra}
"""


def model(repo, name, kind, extra=""):
    os.makedirs(repo / name / "1")
    shutil.copy(os.path.join(FIXTURES, "add_sub", "1", "model.onnx"), repo / name / "1" / "model.onnx")
    (repo / name / "config.pbtxt").write_text(CONFIG.format(name=name, kind=kind, extra=extra))


def test_a_gpu_model_fails_clearly_or_falls_back_to_the_cpu_when_allowed(tmp_path):
    repo = tmp_path / "models"
    model(repo, "strict_gpu", "KIND_GPU")
    model(repo, "lenient_gpu", "KIND_GPU", 'parameters { key: "tern.accelerator.fallback" value: { string_value: "cpu" } }')
    model(repo, "plain_cpu", "KIND_CPU")  # GPU accelerators do not apply to CPU instances
    server = TernServer(str(repo))
    try:
        client = httpclient.InferenceServerClient(server.http_address)
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert index["strict_gpu"]["state"] == "UNAVAILABLE"
        reason = index["strict_gpu"]["reason"]
        assert "TensorrtExecutionProvider" in reason and "libonnxruntime" in reason and "CPUExecutionProvider" in reason, reason
        assert "tern.accelerator.fallback" in reason, reason
        x = httpclient.InferInput("INPUT0", [1, 16], "FP32")
        x.set_data_from_numpy(np.ones((1, 16), np.float32))
        y = httpclient.InferInput("INPUT1", [1, 16], "FP32")
        y.set_data_from_numpy(np.ones((1, 16), np.float32))
        for name in ("lenient_gpu", "plain_cpu"):
            assert client.is_model_ready(name), name
            assert (client.infer(name, [x, y]).as_numpy("OUTPUT0") == 2).all()
        parameters = client.get_model_config("lenient_gpu")["parameters"]
        assert parameters["tern.execution_providers"]["string_value"] == "CPUExecutionProvider"
        assert parameters["tern.accelerator.fell_back_from"]["string_value"] == "TensorrtExecutionProvider,CUDAExecutionProvider"
        assert client.get_model_config("plain_cpu")["parameters"]["tern.execution_providers"]["string_value"] == "CPUExecutionProvider"
        metrics = requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).text
        fallback = [line for line in metrics.splitlines() if line.startswith("tern_execution_provider_fallback{")]
        assert any('model="lenient_gpu"' in line and 'provider="TensorrtExecutionProvider"' in line and float(line.rsplit(" ", 1)[1]) == 1 for line in fallback), fallback
        assert not any('model="plain_cpu"' in line for line in fallback), fallback
        assert "execution providers missing from the ONNX Runtime library" in server.logs()
    finally:
        server.stop()
