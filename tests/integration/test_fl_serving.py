"""From training to serving: `tern serve --fl-port` coordinates real Flower clients that train the
served model; the global model becomes the model's next version and goes through its validation
gates before the hot-swap, and a worse one is rejected while the current version keeps serving."""
import json
import os
import time

import numpy as np
import pytest
import requests

from conftest import TernServer, free_port
from fl_helpers import flwr_python, start_client, wait_clients
from schedule import SCHEDULE_YAML

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from digits_data import _data, softmax_eval, softmax_init, softmax_train  # noqa: E402

CONFIG = """name: "digits_fl"
backend: "onnxruntime"
max_batch_size: 1024
input [ { name: "x" data_type: TYPE_FP32 dims: [ 64 ] } ]
output [ { name: "probabilities" data_type: TYPE_FP32 dims: [ 10 ] } ]
parameters { key: "tern.gate.accuracy_min" value: { string_value: "0.35" } }
"""


def make_repository(root):
    train_x, train_y, test_x, test_y = _data()
    # Version 1: a weak start (about 0.41 on the validation set), above the 0.35 gate.
    w, b = softmax_train(softmax_init(seed=1234), train_x[:50], train_y[:50], epochs=2, lr=0.2, batch_size=32, seed=0)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["logits"]), helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "digits", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 10])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    folder = root / "digits_fl"
    (folder / "1").mkdir(parents=True)
    onnx.save(model, str(folder / "1" / "model.onnx"))
    (folder / "config.pbtxt").write_text(CONFIG)
    (folder / "validation").mkdir()
    np.save(folder / "validation" / "x.npy", test_x.astype(np.float32))
    np.save(folder / "validation" / "labels.npy", test_y.astype(np.int64))
    return softmax_eval([w, b], test_x, test_y)[1]


def run(tmp_path, faults, *extra):
    python = flwr_python()
    repo = tmp_path / "repo"
    start_accuracy = make_repository(repo)
    fl_port = free_port()
    config = tmp_path / "fl.yaml"
    config.write_text("num_rounds: 3\nmin_fit_clients: 3\nmin_evaluate_clients: 3\nmin_available_clients: 3\n" + SCHEDULE_YAML)
    server = TernServer(str(repo), "--state-dir", str(tmp_path / "state"), "--model-control-mode", "explicit", "--load-model", "digits_fl",
                        "--fl-port", str(fl_port), "--fl-model", "digits_fl", "--fl-config", str(config), *extra)
    try:
        clients = [start_client(python, f"127.0.0.1:{fl_port}", i, fault=faults[i]) for i in range(3)]
        deadline = time.time() + 120
        status = {}
        while time.time() < deadline:
            status = requests.get(f"http://127.0.0.1:{server.metrics_port}/fl/status", timeout=5).json()
            if status["finished"]:
                break
            time.sleep(0.2)
        assert status.get("finished"), server.logs()[-3000:]
        wait_clients(clients)
        lifecycle = requests.get(f"{server.http_url}/v2/models/digits_fl/lifecycle", timeout=5)
        return server, repo, status, start_accuracy, lifecycle
    except Exception:
        server.stop()
        raise


def test_the_trained_global_model_is_promoted_through_the_gates(tmp_path):
    server, repo, status, start_accuracy, _ = run(tmp_path, ["", "", ""], "--fl-publish-every", "2")
    try:
        # Every 2 rounds and after the last: round 2 became version 2, round 3 version 3.
        assert [(p["round"], p["version"], p["accepted"]) for p in status["publications"]] == [(2, 2, True), (3, 3, True)], status
        publication = status["publications"][-1]
        assert "accuracy: passed" in publication["detail"]
        final = status["rounds"][-1]["record"]["metrics"]["accuracy"]
        assert final > start_accuracy + 0.05, (start_accuracy, final)
        # Version 3 serves, and it is the coordinator's global model: the served answers give the
        # accuracy the clients measured for the last round.
        ready = requests.get(f"{server.http_url}/v2/models/digits_fl/versions/3/ready", timeout=5)
        assert ready.status_code == 200
        _, _, test_x, test_y = _data()
        body = {"inputs": [{"name": "x", "shape": list(test_x.shape), "datatype": "FP32", "data": test_x.flatten().tolist()}]}
        answer = requests.post(f"{server.http_url}/v2/models/digits_fl/infer", json=body, timeout=30).json()
        assert answer["model_version"] == "3"
        probabilities = np.array(answer["outputs"][0]["data"]).reshape(-1, 10)
        assert abs((probabilities.argmax(axis=1) == test_y).mean() - final) < 1e-9
        trained = onnx.load(str(repo / "digits_fl" / "3" / "model.onnx"))
        assert [i.name for i in trained.graph.initializer] == ["W", "B"]
        assert [n.op_type for n in trained.graph.node] == ["Gemm", "Softmax"]  # the graph is untouched
        assert not [p for p in os.listdir(repo / "digits_fl") if p.startswith(".fl-")]
    finally:
        server.stop()


def test_a_worse_global_model_is_rejected_and_the_current_version_keeps_serving(tmp_path):
    server, repo, status, _, _ = run(tmp_path, ["poison", "poison", "poison"])
    try:
        publication = status["publications"][-1]
        assert not publication["accepted"] and "rejected by its gates: accuracy" in publication["detail"], status
        assert not (repo / "digits_fl" / "2").exists()
        assert sorted(os.listdir(repo / "digits_fl")) == ["1", "config.pbtxt", "validation"]
        body = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}
        answer = requests.post(f"{server.http_url}/v2/models/digits_fl/infer", json=body, timeout=30).json()
        assert answer["model_version"] == "1"
        kept = [name for root, _, files in os.walk(tmp_path / "state") for name in files if name.startswith("digits_fl-v2-round3")]
        assert kept, "the rejected model is kept outside the repository"
    finally:
        server.stop()
