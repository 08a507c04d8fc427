"""Tern's on-device trainer and its Flower client: gradients and steps against NumPy on fixed data,
the trained weights served by ONNX Runtime, and `tern fl client` in a real Flower run beside
Python clients (and reconnecting when the server is not up yet)."""
import json
import os
import subprocess
import time

import numpy as np
import onnxruntime as ort
import pytest

from conftest import free_port
from fl_helpers import FL, TERN, Coordinator, flwr_python, start_client, wait_clients

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from digits_data import _data, client_share, softmax_init  # noqa: E402


def mlp(path, w1, b1, w2, b2):
    """x → MatMul W1 + b1 → Relu → Gemm(transB=1) W2, b2 → Softmax."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
         helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("Gemm", ["h2", "W2", "b2"], ["logits"], transB=1),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, w1.shape[0]])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, w2.shape[0]])],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "W2"),
         numpy_helper.from_array(b2, "b2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def numpy_steps(params, x, y, steps, lr, optimizer, momentum=0.0):
    w1, b1, w2, b2 = (p.astype(np.float64) for p in params)
    x = x.astype(np.float64)
    state = [np.zeros_like(p) for p in (w1, b1, w2, b2)]
    second = [np.zeros_like(p) for p in (w1, b1, w2, b2)]
    for t in range(1, steps + 1):
        h = x @ w1 + b1
        a = np.maximum(h, 0)
        logits = a @ w2.T + b2
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        d = p / len(y)
        g_w2, g_b2 = d.T @ a, d.sum(axis=0)
        dh = (d @ w2) * (h > 0)
        g_w1, g_b1 = x.T @ dh, dh.sum(axis=0)
        params64 = [w1, b1, w2, b2]
        for i, g in enumerate((g_w1, g_b1, g_w2, g_b2)):
            if optimizer == "sgd":
                state[i] = momentum * state[i] + g
                params64[i] = params64[i] - lr * state[i]
            else:
                state[i] = 0.9 * state[i] + 0.1 * g
                second[i] = 0.999 * second[i] + 0.001 * g * g
                params64[i] = params64[i] - lr * (state[i] / (1 - 0.9 ** t)) / (np.sqrt(second[i] / (1 - 0.999 ** t)) + 1e-8)
        w1, b1, w2, b2 = params64
    return [w1, b1, w2, b2]


@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.0), ("sgd", 0.9), ("adam", 0.0)])
def test_training_steps_equal_numpy(tmp_path, optimizer, momentum):
    rng = np.random.default_rng(1)
    params = [rng.standard_normal((6, 8)).astype(np.float32) * 0.5, rng.standard_normal(8).astype(np.float32) * 0.1,
              rng.standard_normal((4, 8)).astype(np.float32) * 0.5, rng.standard_normal(4).astype(np.float32) * 0.1]
    mlp(tmp_path / "mlp.onnx", *params)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    y = rng.integers(0, 4, 40).astype(np.int64)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    lr = 0.05 if optimizer == "adam" else 0.3
    # One batch of all 40 rows: each epoch is one full-batch step, whatever the shuffle.
    out = subprocess.run([TERN, "fl", "train", "--model", str(tmp_path / "mlp.onnx"), "--data", str(tmp_path / "data.npz"),
                          "--out", str(tmp_path / "trained.onnx"), "--epochs", "3", "--batch-size", "64",
                          "--learning-rate", str(lr), "--optimizer", optimizer, "--momentum", str(momentum)],
                         capture_output=True, text=True, check=True).stdout
    trained = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "trained.onnx")).graph.initializer}
    expected = numpy_steps(params, x, y, 3, lr, optimizer, momentum)
    for name, want in zip(["W1", "b1", "W2", "b2"], expected):
        assert trained[name].dtype == np.float32
        np.testing.assert_allclose(trained[name], want, rtol=1e-5, atol=1e-6, err_msg=name)
    # The trained file is an ordinary ONNX model: ONNX Runtime serves it with the new weights.
    session = ort.InferenceSession(str(tmp_path / "trained.onnx"))
    probabilities = session.run(None, {"x": x})[0]
    h = np.maximum(x.astype(np.float64) @ trained["W1"] + trained["b1"], 0)
    logits = h @ trained["W2"].T.astype(np.float64) + trained["b2"]
    reference = np.exp(logits - logits.max(axis=1, keepdims=True))
    reference /= reference.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, reference, rtol=1e-4, atol=1e-5)
    assert "loss" in out
    # CSV gives the same data.
    np.savetxt(tmp_path / "data.csv", np.column_stack([x, y]), delimiter=",", header="f0,f1,f2,f3,f4,f5,label", comments="")
    subprocess.run([TERN, "fl", "train", "--model", str(tmp_path / "mlp.onnx"), "--data", str(tmp_path / "data.csv"),
                    "--out", str(tmp_path / "trained_csv.onnx"), "--epochs", "3", "--batch-size", "64",
                    "--learning-rate", str(lr), "--optimizer", optimizer, "--momentum", str(momentum)], check=True, capture_output=True)
    from_csv = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "trained_csv.onnx")).graph.initializer}
    for name in trained:
        np.testing.assert_allclose(from_csv[name], trained[name], rtol=1e-6, atol=1e-7)


def digits_model(path):
    w, b = softmax_init(seed=1234)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["logits"]), helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "digits", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 10])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def tern_client(tmp_path, address, index, clients=3, extra=()):
    x, y = client_share(index, clients)
    data = tmp_path / f"share{index}.npz"
    np.savez(data, x=x, y=y)
    _, _, test_x, test_y = _data()
    np.savez(tmp_path / "test.npz", x=test_x, y=test_y)
    digits_model(tmp_path / "digits.onnx")
    return subprocess.Popen([TERN, "fl", "client", "--server", address, "--model", str(tmp_path / "digits.onnx"),
                             "--data", str(data), "--eval-data", str(tmp_path / "test.npz"), "--out", str(tmp_path / f"final{index}.onnx"),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_swift_client_joins_a_real_flower_server_beside_python_clients(tmp_path):
    python = flwr_python()
    port = free_port()
    # The Tern client starts first: the server is not up yet, so it retries with backoff.
    tern = tern_client(tmp_path, f"127.0.0.1:{port}", 2)
    time.sleep(2.5)
    server = subprocess.Popen([python, os.path.join(FL, "flower_server.py"), "--address", f"127.0.0.1:{port}", "--rounds", "4"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    python_clients = []
    time.sleep(1.5)
    python_clients = [start_client(python, f"127.0.0.1:{port}", i) for i in range(2)]
    out, _ = server.communicate(timeout=180)
    history = json.loads(out.strip().splitlines()[-1])
    tern_out, tern_err = tern.communicate(timeout=60)
    assert tern.returncode == 0, tern_err[-3000:]
    summary = json.loads(tern_out)
    assert summary["completed"] and summary["fits"] == 4 and summary["evaluations"] == 4, summary
    assert summary["failedAttempts"] >= 1  # it tried before the server was up
    assert all(code == 0 for code, _ in wait_clients(python_clients))
    assert len(history["accuracy"]) == 4 and history["accuracy"][-1] > 0.4, history
    # The Tern client's last evaluation is of the final global model, as the Python clients' are.
    assert abs(summary["accuracy"] - history["accuracy"][-1]) < 0.2
    final = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "final2.onnx")).graph.initializer}
    assert final["W"].shape == (64, 10) and final["W"].dtype == np.float32


def test_a_tern_client_that_cannot_train_is_a_client_error_at_the_coordinator(tmp_path):
    python = flwr_python()
    coordinator = Coordinator(tmp_path, "--rounds", "2", "--min-fit-clients", "3", "--min-available-clients", "3",
                              "--fraction-evaluate", "0")
    # Labels out of the model's range: the device reports a failed fit (a non-OK status), not a crash.
    x, _ = client_share(0, 3)
    np.savez(tmp_path / "bad.npz", x=x, y=np.full(len(x), 12, dtype=np.int64))
    digits_model(tmp_path / "digits.onnx")
    bad = subprocess.Popen([TERN, "fl", "client", "--server", coordinator.address, "--model", str(tmp_path / "digits.onnx"),
                            "--data", str(tmp_path / "bad.npz")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    good = [start_client(python, coordinator.address, i) for i in range(2)]
    summary = coordinator.finish()
    bad.communicate(timeout=60)
    assert all(code == 0 for code, _ in wait_clients(good))
    assert summary["failures"].get("client_error") == 2, summary["failures"]
    assert all(r["record"]["aggregated"] for r in summary["rounds"])


def run_tern_clients(tmp_path, compression, python_clients=0, tern_clients=3):  # noqa: D103
    folder = tmp_path / f"{compression}-{python_clients}"
    folder.mkdir()
    total = tern_clients + python_clients
    config = f"compression: {compression}\nmin_fit_clients: {total}\nmin_available_clients: {total}\nmin_evaluate_clients: {total}\n"
    config += "fit_config: {local_epochs: 2, learning_rate: 0.3, batch_size: 32}\n"
    coordinator = Coordinator(folder, "--rounds", "3", config=config)
    terns = [tern_client(folder, coordinator.address, i, clients=total) for i in range(tern_clients)]
    pythons = [start_client(python, coordinator.address, tern_clients + i, clients=total)
               for i, python in enumerate([flwr_python()] * python_clients)]
    summary = coordinator.finish()
    for process in terns:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err[-2000:]
    assert all(code == 0 for code, _ in wait_clients(pythons))
    return summary


def test_update_compression_between_tern_peers(tmp_path):
    flwr_python()
    results = {c: run_tern_clients(tmp_path, c) for c in ("none", "fp16", "int8")}
    received = {c: sum(r["bytesReceived"] for r in s["rounds"][1:]) for c, s in results.items()}  # round 1 has get_parameters
    sent = {c: sum(r["bytesSent"] for r in s["rounds"]) for c, s in results.items()}
    accuracy = {c: s["rounds"][-1]["record"]["metrics"]["accuracy"] for c, s in results.items()}
    print("bytes received", received, "sent", sent, "accuracy", accuracy)
    # A 2.6 KB model: the .npy headers (128 bytes an array) weigh; a 4 MB one gets close to 1/2 and 1/4.
    assert received["fp16"] < 0.56 * received["none"] and received["int8"] < 0.36 * received["none"]
    assert sent["fp16"] < 0.55 * sent["none"] and sent["int8"] < 0.55 * sent["none"]
    assert abs(accuracy["fp16"] - accuracy["none"]) < 0.02 and abs(accuracy["int8"] - accuracy["none"]) < 0.05
    # A Flower client in the same run is not affected: it gets float32 and answers as usual.
    mixed = run_tern_clients(tmp_path, "int8", python_clients=1, tern_clients=2)
    assert all(r["record"]["aggregated"] and r["record"]["fitResults"] == 3 for r in mixed["rounds"]), mixed["rounds"]
    assert not mixed["failures"]


def test_a_head_trains_on_embeddings_of_a_frozen_backbone(tmp_path):
    """The typical on-device fine-tuning: ONNX Runtime computes a frozen backbone's embeddings of
    the local data once, and the federated run trains only the head on them."""
    rng = np.random.default_rng(4)
    projection = (rng.standard_normal((64, 32)) * 0.3).astype(np.float32)
    backbone = helper.make_graph(
        [helper.make_node("MatMul", ["x", "P"], ["z"]), helper.make_node("Relu", ["z"], ["embedding"])],
        "backbone", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [None, 32])], [numpy_helper.from_array(projection, "P")])
    model = helper.make_model(backbone, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    repo = tmp_path / "repo" / "backbone"
    (repo / "1").mkdir(parents=True)
    onnx.save(model, str(repo / "1" / "model.onnx"))
    (repo / "config.pbtxt").write_text('name: "backbone"\nbackend: "onnxruntime"\nmax_batch_size: 256\n'
                                       'input [ { name: "x" data_type: TYPE_FP32 dims: [ 64 ] } ]\n'
                                       'output [ { name: "embedding" data_type: TYPE_FP32 dims: [ 32 ] } ]\n')
    w = (rng.standard_normal((32, 10)) * 0.01).astype(np.float32)
    head = helper.make_graph(
        [helper.make_node("Gemm", ["e", "W", "B"], ["logits"]), helper.make_node("Softmax", ["logits"], ["p"], axis=1)],
        "head", [helper.make_tensor_value_info("e", TensorProto.FLOAT, [None, 32])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, 10])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.zeros(10, np.float32), "B")])
    head_model = helper.make_model(head, opset_imports=[helper.make_opsetid("", 13)])
    head_model.ir_version = 8
    onnx.save(head_model, str(tmp_path / "head.onnx"))
    _, _, test_x, test_y = _data()
    np.savez(tmp_path / "test.npz", x=test_x, y=test_y)
    coordinator = Coordinator(tmp_path, "--rounds", "3", "--min-fit-clients", "2", "--min-available-clients", "2",
                              "--min-evaluate-clients", "2", config="fit_config: {local_epochs: 3, learning_rate: 0.2}\n")
    clients = []
    for i in range(2):
        x, y = client_share(i, 2, main_share=0.5)
        np.savez(tmp_path / f"c{i}.npz", x=x, y=y)
        clients.append(subprocess.Popen(
            [TERN, "fl", "client", "--server", coordinator.address, "--model", str(tmp_path / "head.onnx"), "--data", str(tmp_path / f"c{i}.npz"),
             "--eval-data", str(tmp_path / "test.npz"), "--backbone-repository", str(tmp_path / "repo"), "--backbone-model", "backbone",
             "--out", str(tmp_path / f"head{i}.onnx")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    summary = coordinator.finish()
    for client in clients:
        _, err = client.communicate(timeout=60)
        assert client.returncode == 0, err[-2000:]
        assert "embedded by backbone into 32 features" in err
    reported = summary["rounds"][-1]["record"]["metrics"]["accuracy"]
    # The clients' reported accuracy is the NumPy accuracy of backbone + final head on the test set.
    trained = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "head0.onnx")).graph.initializer}
    embedding = np.maximum(test_x @ projection, 0)
    mine = ((embedding @ trained["W"] + trained["B"]).argmax(axis=1) == test_y).mean()
    assert abs(mine - reported) < 0.01, (mine, reported)
    assert reported > 0.5
