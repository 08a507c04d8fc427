"""Tern's Flower-compatible coordinator (`tern fl server`) with real, unmodified Flower 1.42
NumPyClients, side by side with the real Flower server, and with clients that fail."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import free_port
from fl_helpers import FL, TERN, Coordinator, accuracies, flwr_python, initial_accuracy, start_client, wait_clients

sys.path.insert(0, FL)
from schedule import SCHEDULE_YAML  # noqa: E402

ROUNDS = 4


def run_tern(tmp_path, python, clients=3, faults=(), config="", args=(), client_extra=()):
    coordinator = Coordinator(tmp_path, "--rounds", str(ROUNDS), *args, config=config)
    procs = [start_client(python, coordinator.address, i, clients=clients, fault=(faults[i] if i < len(faults) else ""),
                          extra=client_extra)
             for i in range(clients)]
    summary = coordinator.finish()
    return summary, wait_clients(procs), coordinator


def test_flower_clients_train_against_tern_as_against_flower(tmp_path):
    python = flwr_python()
    config = f"min_fit_clients: 3\nmin_evaluate_clients: 3\nmin_available_clients: 3\n{SCHEDULE_YAML}"
    summary, outputs, _ = run_tern(tmp_path, python, config=config)
    assert all(code == 0 for code, _ in outputs), outputs
    assert all("Disconnect and shut down" in out for _, out in outputs)
    tern = accuracies(summary)
    start = initial_accuracy(python)
    assert len(tern) == ROUNDS and not summary["failures"]
    assert tern[-1] - start >= 0.15, (start, tern)
    # The per-round config reached the clients: 2 local epochs in rounds 1-2, then 1.
    epochs = [r["record"]["fitMetrics"]["config_epochs"] for r in summary["rounds"]]
    assert epochs == [2, 2, 1, 1]
    assert summary["shapes"] == [[64, 10], [10]]
    assert all(r["bytesSent"] > 6 * 64 * 10 * 4 for r in summary["rounds"])  # 3 fits + 3 evaluations of 2.6 KB

    # The same clients against the real Flower server.
    port = free_port()
    server = subprocess.Popen([python, os.path.join(FL, "flower_server.py"), "--address", f"127.0.0.1:{port}",
                               "--rounds", str(ROUNDS)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(2)
    procs = [start_client(python, f"127.0.0.1:{port}", i) for i in range(3)]
    out, _ = server.communicate(timeout=180)
    wait_clients(procs)
    import json
    flower = json.loads(out.strip().splitlines()[-1])["accuracy"]
    print("accuracy per round: start", round(start, 4), "tern", [round(a, 4) for a in tern], "flower", [round(a, 4) for a in flower])
    assert len(flower) == ROUNDS
    assert max(abs(a - b) for a, b in zip(tern, flower)) <= 0.01, (tern, flower)


def test_faulty_clients_are_dropped_counted_and_never_stall_a_round(tmp_path):
    python = flwr_python()
    # A Python NumPyClient whose fit raises exits (Flower 1.42 sends no error status), so its
    # failure is a disconnect; the error status itself is covered by FlowerReplyTests.
    faults = ["", "", "die", "shape", "slow"]
    config = "min_fit_clients: 4\nmin_evaluate_clients: 3\nmin_available_clients: 4\nround_timeout: 2\n" + SCHEDULE_YAML
    began = time.time()
    summary, outputs, coordinator = run_tern(tmp_path, python, clients=len(faults), faults=faults, config=config)
    assert len(summary["rounds"]) == ROUNDS
    failures = summary["failures"]
    for reason in ("disconnected", "bad_parameters", "timeout"):
        assert failures.get(reason, 0) >= 1, (reason, failures, coordinator.log()[-3000:])
    assert outputs[2][0] == 3  # the client that died
    # Every round still aggregated the good answers.
    assert all(r["record"]["aggregated"] for r in summary["rounds"]), summary["rounds"]
    assert time.time() - began < 90


def test_initial_weights_from_an_onnx_model(tmp_path):
    python = flwr_python()
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((64, 10)) * 0.01).astype(np.float32)
    b = np.full(10, 0.25, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["logits"]), helper.make_node("Softmax", ["logits"], ["probabilities"])],
        "softmax", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B"),
         numpy_helper.from_array(np.array([1, 64], dtype=np.int64), "shape_not_a_weight")])
    path = tmp_path / "softmax.onnx"
    onnx.save(helper.make_model(graph), str(path))
    global ROUNDS
    saved, ROUNDS = ROUNDS, 1
    try:
        summary, outputs, _ = run_tern(tmp_path, python, clients=2, args=(
            "--initial-model", str(path), "--min-fit-clients", "2", "--min-available-clients", "2",
            "--weights-dir", str(tmp_path / "weights"), "--fraction-evaluate", "0"))
    finally:
        ROUNDS = saved
    assert summary["shapes"] == [[64, 10], [10]]
    assert not any("get_parameters" in out for _, out in outputs)  # nobody was asked for weights
    final_b = np.load(tmp_path / "weights" / "1.npy")
    assert final_b.dtype == np.float32 and final_b.shape == (10,)
    assert abs(final_b.mean() - 0.25) < 0.05  # trained from 0.25, not from the clients' zeros


def test_tls(tmp_path):
    python = flwr_python()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    coordinator = Coordinator(tmp_path, "--rounds", "1", "--min-fit-clients", "2", "--min-available-clients", "2",
                              "--tls-certificate", str(cert), "--tls-private-key", str(key))
    assert "(TLS)" in coordinator.log()
    procs = [start_client(python, coordinator.address.replace("127.0.0.1", "localhost"), i, clients=2,
                          extra=("--root-cert", str(cert))) for i in range(2)]
    summary = coordinator.finish()
    assert all(code == 0 for code, _ in wait_clients(procs))
    assert summary["rounds"][0]["record"]["fitResults"] == 2


@pytest.mark.parametrize("strategy,floor", [("fedavg", None), ("fedmedian", 0.5), ("multikrum", 0.4)])
def test_a_byzantine_client_is_caught_by_median_and_krum(tmp_path, strategy, floor):
    """Four honest clients and one that answers with large random weights: FedAvg is ruined, the
    median and Multi-Krum (keeping 3; plain Krum keeps one non-IID client's model) are not."""
    python = flwr_python()
    faults = ["", "", "", "", "poison"]
    options = "{name: multikrum, num_malicious_clients: 1, num_clients_to_keep: 3}" if strategy == "multikrum" else strategy
    config = f"strategy: {options}\nmin_fit_clients: 5\nmin_available_clients: 5\nmin_evaluate_clients: 5\n" + SCHEDULE_YAML
    global ROUNDS
    saved, ROUNDS = ROUNDS, 2
    try:
        summary, _, _ = run_tern(tmp_path, python, clients=5, faults=faults, config=config)
    finally:
        ROUNDS = saved
    accuracy = accuracies(summary)[-1]
    if floor is None:
        assert accuracy < 0.3, (strategy, accuracies(summary))
    else:
        assert accuracy > floor, (strategy, accuracies(summary))


def test_edge_aware_selection_skips_hot_and_over_budget_devices(tmp_path):
    python = flwr_python()
    config = ("min_fit_clients: 2\nmin_available_clients: 4\nmin_evaluate_clients: 2\n"
              "selection: {max_temperature_c: 80, energy_budget_j: 100}\n" + SCHEDULE_YAML)
    coordinator = Coordinator(tmp_path, "--rounds", "2", config=config)
    reports = [("--temperature", "95"), ("--energy", "500"), ("--battery", "90"), ()]  # the last says nothing
    procs = [start_client(python, coordinator.address, i, clients=4, extra=extra) for i, extra in enumerate(reports)]
    summary = coordinator.finish()
    assert all(code == 0 for code, _ in wait_clients(procs))
    peers = {}
    for r in summary["rounds"]:
        record = r["record"]
        assert sorted(record["skipped"].values()) == ["hot", "over_energy_budget"], record
        assert len(record["fitClients"]) == 2 and not set(record["fitClients"]) & set(record["skipped"]), record
        assert record["aggregated"]
        peers.update(record["skipped"])
    assert len(peers) == 2


def test_malformed_answers_are_counted_and_the_coordinator_keeps_going(tmp_path):
    """Clients that speak the stream but answer with garbage: undecodable or absurd .npy files, an
    absurd example count, the wrong message kind, an empty message. Each is a counted failure;
    the good clients' rounds aggregate and the run ends normally."""
    python = flwr_python()
    modes = ["garbage-npy", "huge-examples", "wrong-kind", "empty", "huge-shape"]
    total = 2 + len(modes)
    config = f"min_fit_clients: {total}\nmin_available_clients: {total}\nmin_evaluate_clients: 2\nround_timeout: 10\n" + SCHEDULE_YAML
    coordinator = Coordinator(tmp_path, "--rounds", "2", "--initial-model", str(make_softmax_onnx(tmp_path)), config=config)
    good = [start_client(python, coordinator.address, i) for i in range(2)]
    rogues = [subprocess.Popen([python, os.path.join(FL, "rogue_client.py"), "--server", coordinator.address, "--mode", mode],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for mode in modes]
    summary = coordinator.finish()
    assert all(code == 0 for code, _ in wait_clients(good))
    wait_clients(rogues)
    assert len(summary["rounds"]) == 2 and all(r["record"]["aggregated"] for r in summary["rounds"])
    failures = summary["failures"]
    assert failures.get("bad_parameters", 0) >= 2 * 3 and failures.get("protocol_error", 0) >= 2 * 2, failures
    for r in summary["rounds"]:
        assert r["record"]["fitResults"] == 2, r["record"]


def make_softmax_onnx(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    sys.path.insert(0, FL)
    from digits_data import softmax_init
    w, b = softmax_init(seed=1234)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["logits"])], "softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    path = tmp_path / "init.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path
