"""Model lifecycle against real `tern serve` processes: hot-swap under load, validation gates,
rollback, poll mode with atomically written and half-written versions, and the SQLite history."""
import os
import shutil
import sqlite3
import subprocess
import threading
import time

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import EXAMPLES, ROOT, TernServer

BINARY = os.environ.get("TERN_BIN", os.path.join(ROOT, ".build/debug/tern"))
FIXTURES = os.environ.get("TERN_FIXTURES", os.path.join(ROOT, ".cache", "fixtures"))

ADD_SUB_CONFIG = """name: "{name}"
backend: "onnxruntime"
max_batch_size: 8
version_policy: {{ latest: {{ num_versions: 1 }} }}
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] }}, {{ name: "INPUT1" data_type: TYPE_FP32 dims: [ 16 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] }}, {{ name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 16 ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
parameters {{ key: "intra_op_thread_count" value: {{ string_value: "1" }} }}
"""


def add_sub_repository(tmp_path, name):
    """A repository with one add_sub model called `name` (version 1, latest-version policy)."""
    repo = tmp_path / "models"
    os.makedirs(repo / name / "1")
    shutil.copy(os.path.join(FIXTURES, "add_sub", "1", "model.onnx"), repo / name / "1" / "model.onnx")
    (repo / name / "config.pbtxt").write_text(ADD_SUB_CONFIG.format(name=name))
    return repo


def place_version(model_dir, version, onnx_path):
    """Writes a version folder atomically: built beside the model folder, then renamed in."""
    staging = os.path.join(os.path.dirname(model_dir), f".staging-{os.path.basename(model_dir)}-{version}")
    os.makedirs(staging)
    shutil.copy(onnx_path, os.path.join(staging, "model.onnx"))
    os.rename(staging, os.path.join(model_dir, str(version)))


def add_sub_inputs(module, a, b):
    inputs = [module.InferInput("INPUT0", [1, 16], "FP32"), module.InferInput("INPUT1", [1, 16], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def expected(version, a, b):
    """Version 1 is add_sub (OUTPUT0 = a + b); version 2 is add_sub_swapped (OUTPUT0 = a - b)."""
    return a + b if version == 1 else a - b


# ---- hot-swap under sustained load --------------------------------------------------------------

def test_hot_swap_under_load_has_no_failed_request_and_every_answer_from_one_version(tmp_path):
    repo = add_sub_repository(tmp_path, "swap")
    server = TernServer(str(repo), "--model-control-mode", "explicit", "--load-model", "swap")
    results, errors = [], []
    lock = threading.Lock()
    stop = threading.Event()

    def worker(protocol, seed, rate=50.0):
        module = httpclient if protocol == "http" else grpcclient
        client = module.InferenceServerClient(server.http_address if protocol == "http" else server.grpc_address)
        rng = np.random.default_rng(seed)
        next_send = time.monotonic()
        while not stop.is_set():
            a = rng.random((1, 16), dtype=np.float32)
            b = rng.random((1, 16), dtype=np.float32)
            sent = time.monotonic()
            try:
                result = client.infer("swap", add_sub_inputs(module, a, b))
                response = result.get_response()
                version = int(response["model_version"] if protocol == "http" else response.model_version)
                ok = np.allclose(result.as_numpy("OUTPUT0"), expected(version, a, b))
                with lock:
                    results.append((sent, time.monotonic(), version, ok, protocol))
            except Exception as error:  # noqa: BLE001 - every failure counts
                with lock:
                    errors.append(f"{protocol}: {error}")
            next_send += 1 / rate
            time.sleep(max(0.0, next_send - time.monotonic()))

    try:
        threads = [threading.Thread(target=worker, args=(p, i)) for i, p in enumerate(["http", "http", "grpc", "grpc"])]
        for t in threads:
            t.start()
        time.sleep(10)
        place_version(str(repo / "swap"), 2, os.path.join(FIXTURES, "add_sub_swapped", "1", "model.onnx"))
        promote_started = time.monotonic()
        out = subprocess.run([BINARY, "model", "promote", "swap", "--http-port", str(server.http_port)],
                             capture_output=True, text=True, timeout=60)
        promoted = time.monotonic()
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("swap 1 → 2 accepted")
        time.sleep(10)
        stop.set()
        for t in threads:
            t.join()
    finally:
        server.stop()

    assert errors == []
    duration = results[-1][1] - results[0][0]
    assert len(results) >= 0.8 * 200 * duration, (len(results), duration)  # ~200 req/s held
    assert all(ok for _, _, _, ok, _ in results), "an answer did not match the version it claimed"
    versions = {v for _, _, v, _, _ in results}
    assert versions == {1, 2}
    # Before the promote began only version 1 answered; requests sent after it returned got version 2.
    assert all(v == 1 for sent, _, v, _, _ in results if sent < promote_started)
    assert all(v == 2 for sent, _, v, _, _ in results if sent > promoted + 0.05)
    assert {p for *_, p in results} == {"http", "grpc"}


# ---- gates, rollback and history ----------------------------------------------------------------

DIGITS_CONFIG = """name: "digits"
backend: "onnxruntime"
max_batch_size: 64
version_policy: { latest: { num_versions: 1 } }
parameters { key: "tern.gate.accuracy_min" value: { string_value: "0.9" } }
parameters { key: "tern.gate.agreement_min" value: { string_value: "0.8" } }
"""


def digits_rows():
    x = np.load(os.path.join(FIXTURES, "digits_validation", "X.npy"))[:32]
    inp = httpclient.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return [inp]


def digits_repository(tmp_path):
    """A repository with the digits MLP as version 1 of `digits`, gated on its validation set."""
    repo = tmp_path / "models"
    os.makedirs(repo / "digits" / "1")
    shutil.copy(os.path.join(EXAMPLES, "digits_mlp", "1", "model.onnx"), repo / "digits" / "1" / "model.onnx")
    shutil.copytree(os.path.join(FIXTURES, "digits_validation"), repo / "digits" / "validation")
    (repo / "digits" / "config.pbtxt").write_text(DIGITS_CONFIG)
    return repo


def test_a_failing_accuracy_gate_keeps_the_weak_candidate_away_and_rollback_restores_outputs(tmp_path):
    repo = digits_repository(tmp_path)
    history_db = str(tmp_path / "history.sqlite")
    server = TernServer(str(repo), "--model-control-mode", "explicit", "--load-model", "digits", "--history-db", history_db)
    try:
        client = httpclient.InferenceServerClient(server.http_address)
        first = client.infer("digits", digits_rows())
        assert first.get_response()["model_version"] == "1"
        v1_probabilities = first.as_numpy("probabilities")

        # The deliberately weak model (41 % on the validation set) as version 2: rejected.
        place_version(str(repo / "digits"), 2, os.path.join(FIXTURES, "digits_weak", "1", "model.onnx"))
        with pytest.raises(InferenceServerException) as rejected:
            client.load_model("digits")
        message = str(rejected.value)
        assert rejected.value.status() == "400"
        assert "rejected by its gates" in message and "accuracy 0.41" in message and "version 1 keeps serving" in message
        assert client.infer("digits", digits_rows()).get_response()["model_version"] == "1"
        assert not client.is_model_ready("digits", "2")
        stats = client.get_inference_statistics("digits")["model_stats"]
        assert [s["version"] for s in stats] == ["1"]  # version 2 never served a request

        # A good model (logistic regression, 97 %) as version 3 passes and takes the traffic.
        place_version(str(repo / "digits"), 3, os.path.join(EXAMPLES, "digits_logreg", "1", "model.onnx"))
        out = subprocess.run([BINARY, "model", "promote", "digits", "--version", "3", "--http-port", str(server.http_port)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "1 → 3 accepted" in out.stdout and "gate accuracy: pass" in out.stdout
        v3 = client.infer("digits", digits_rows())
        assert v3.get_response()["model_version"] == "3"
        assert not np.allclose(v3.as_numpy("probabilities"), v1_probabilities)

        # Rollback: instant (version 1 is still warm) and version 1's outputs again.
        out = subprocess.run([BINARY, "model", "rollback", "digits", "--http-port", str(server.http_port)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr and "3 → 1 accepted" in out.stdout
        back = client.infer("digits", digits_rows())
        assert back.get_response()["model_version"] == "1"
        assert np.array_equal(back.as_numpy("probabilities"), v1_probabilities)
        status = requests.get(f"{server.http_url}/v2/repository/models/digits/status").json()
        assert status["servingVersions"] == [1] and status["pinnedVersions"] == [1] and status["previousVersions"] == [3]

        history = subprocess.run([BINARY, "model", "history", "digits", "--http-port", str(server.http_port)],
                                 capture_output=True, text=True, timeout=60).stdout
        actions = [line.split()[2] for line in history.splitlines() if not line.startswith(" ")]
        assert actions == ["load", "swap_rejected", "promote", "rollback"]
        assert "gate accuracy: FAIL — accuracy 0.4111" in history
    finally:
        server.stop()

    # The history is in SQLite and survives a restart.
    with sqlite3.connect(history_db) as db:
        rows = db.execute("SELECT action, from_versions, to_versions FROM lifecycle_events ORDER BY id").fetchall()
    assert rows == [("load", "[]", "[1]"), ("swap_rejected", "[1]", "[2]"), ("promote", "[1]", "[3]"), ("rollback", "[3]", "[1]")]
    # The rollback's pin survives the restart too: version 1 serves again, not the policy's
    # newest version 3, and a rollback would still go back to 3.
    again = TernServer(str(repo), "--model-control-mode", "explicit", "--load-model", "digits", "--history-db", history_db)
    try:
        events = requests.get(f"{again.http_url}/v2/repository/models/digits/history").json()
        assert [e["action"] for e in events] == ["load", "swap_rejected", "promote", "rollback", "load"]
        assert events[-1]["toVersions"] == [1]
        client = httpclient.InferenceServerClient(again.http_address)
        assert client.infer("digits", digits_rows()).get_response()["model_version"] == "1"
        status = requests.get(f"{again.http_url}/v2/repository/models/digits/status").json()
        assert status["pinnedVersions"] == [1] and status["previousVersions"] == [3] and status["phase"] == "serving"
    finally:
        again.stop()


def test_a_restart_serves_the_last_good_version_instead_of_one_the_gates_rejected(tmp_path):
    """Version 2 fails its gates while version 1 serves. A restart must not pick version 2 by the
    version policy, fail it again and serve nothing: it serves version 1 (ungated: it passed before)
    until version 2's files change; then version 2 gets its chance again."""
    repo = digits_repository(tmp_path)
    history_db = str(tmp_path / "history.sqlite")
    flags = ("--model-control-mode", "explicit", "--load-model", "digits", "--history-db", history_db)
    server = TernServer(str(repo), *flags)
    try:
        place_version(str(repo / "digits"), 2, os.path.join(FIXTURES, "digits_weak", "1", "model.onnx"))
        with pytest.raises(InferenceServerException, match="rejected by its gates"):
            httpclient.InferenceServerClient(server.http_address).load_model("digits")
    finally:
        server.stop()

    server = TernServer(str(repo), *flags)
    try:
        client = httpclient.InferenceServerClient(server.http_address)
        assert client.is_model_ready("digits")
        assert client.infer("digits", digits_rows()).get_response()["model_version"] == "1"
        status = requests.get(f"{server.http_url}/v2/repository/models/digits/status").json()
        assert status["servingVersions"] == [1] and status["rejectedVersions"] == [2] and status.get("pinnedVersions") is None
        events = requests.get(f"{server.http_url}/v2/repository/models/digits/history").json()
        assert [e["action"] for e in events] == ["load", "swap_rejected", "restore"] and events[-1]["toVersions"] == [1]
    finally:
        server.stop()

    # A better version 2 replaces the rejected files: the next start tries it, and it passes.
    tmp = repo / "digits" / "2" / "model.onnx.tmp"
    shutil.copy(os.path.join(EXAMPLES, "digits_logreg", "1", "model.onnx"), tmp)
    os.replace(tmp, repo / "digits" / "2" / "model.onnx")
    server = TernServer(str(repo), *flags)
    try:
        client = httpclient.InferenceServerClient(server.http_address)
        assert client.infer("digits", digits_rows()).get_response()["model_version"] == "2"
        status = requests.get(f"{server.http_url}/v2/repository/models/digits/status").json()
        assert status["rejectedVersions"] == []
    finally:
        server.stop()


def test_rollback_without_history_and_promote_of_a_missing_version_are_clear_errors(tmp_path):
    repo = add_sub_repository(tmp_path, "swap")
    server = TernServer(str(repo), "--model-control-mode", "explicit", "--load-model", "swap")
    try:
        r = requests.post(f"{server.http_url}/v2/repository/models/swap/rollback")
        assert r.status_code == 400 and "no earlier versions" in r.json()["error"]
        r = requests.post(f"{server.http_url}/v2/repository/models/swap/promote", json={"version": 7})
        assert r.status_code == 404 and "no version folder 7" in r.json()["error"]
        r = requests.post(f"{server.http_url}/v2/repository/models/nope/promote", json={})
        assert r.status_code == 404
        assert httpclient.InferenceServerClient(server.http_address).is_model_ready("swap")
    finally:
        server.stop()


# ---- poll mode ------------------------------------------------------------------------------------

def test_poll_mode_loads_an_atomically_written_version_and_ignores_a_half_written_one(tmp_path):
    repo = add_sub_repository(tmp_path, "polled")
    server = TernServer(str(repo), "--model-control-mode", "poll", "--repository-poll-secs", "1")
    client = httpclient.InferenceServerClient(server.http_address)
    a = np.full((1, 16), 3, dtype=np.float32)
    b = np.full((1, 16), 1, dtype=np.float32)

    def answer():
        result = client.infer("polled", add_sub_inputs(httpclient, a, b))
        return int(result.get_response()["model_version"]), result.as_numpy("OUTPUT0")

    try:
        assert answer()[0] == 1
        # A version folder caught mid-copy: half of the model file.
        content = open(os.path.join(FIXTURES, "add_sub_swapped", "1", "model.onnx"), "rb").read()
        os.makedirs(repo / "polled" / "2")
        (repo / "polled" / "2" / "model.onnx").write_bytes(content[: len(content) // 2])
        time.sleep(3)  # at least two scans
        version, out = answer()
        assert version == 1 and np.allclose(out, a + b)
        assert "failed to load" in server.logs()
        # The same version written atomically (complete file renamed into place): picked up.
        tmp = repo / "polled" / "2" / "model.onnx.tmp"
        tmp.write_bytes(content)
        os.replace(tmp, repo / "polled" / "2" / "model.onnx")
        deadline = time.time() + 10
        while answer()[0] != 2 and time.time() < deadline:
            time.sleep(0.2)
        version, out = answer()
        assert version == 2 and np.allclose(out, a - b)
    finally:
        server.stop()


# ---- loads stay off the request path -----------------------------------------------------------

def test_a_long_load_does_not_block_inference_on_other_models(tmp_path):
    """A model whose warm-up takes seconds loads while another model answers: every request to the
    other model completes while the load is still running."""
    repo = tmp_path / "models"
    for name, source in (("quick", "add_sub"), ("heavy", "slow")):
        os.makedirs(repo / name / "1")
        shutil.copy(os.path.join(FIXTURES, source, "1", "model.onnx"), repo / name / "1" / "model.onnx")
    (repo / "quick" / "config.pbtxt").write_text(ADD_SUB_CONFIG.format(name="quick"))
    (repo / "heavy" / "config.pbtxt").write_text(
        'name: "heavy"\nbackend: "onnxruntime"\nmax_batch_size: 1\n'
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        # ~50 ms per warm-up run: the load takes about 3 s.
        'model_warmup [ { name: "w" batch_size: 1 count: 60 inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } } ]\n')
    server = TernServer(str(repo), "--model-control-mode", "explicit", "--load-model", "quick")
    try:
        client = httpclient.InferenceServerClient(server.http_address)
        loader = threading.Thread(target=lambda: httpclient.InferenceServerClient(server.http_address).load_model("heavy"))
        loader.start()
        time.sleep(0.3)
        answered = 0
        a = np.ones((1, 16), dtype=np.float32)
        for _ in range(20):
            assert np.allclose(client.infer("quick", add_sub_inputs(httpclient, a, a)).as_numpy("OUTPUT0"), 2)
            answered += 1
        assert loader.is_alive(), "the load finished first: make the warm-up longer"
        assert answered == 20 and not client.is_model_ready("heavy")
        loader.join()
        assert client.is_model_ready("heavy")
    finally:
        server.stop()


# ---- status of every model, and one state folder per repository --------------------------------

def test_model_status_lists_every_model_and_each_repository_keeps_its_own_history(tmp_path):
    """`tern model status` without a model prints a table of all of them. Two servers on two
    repositories, both with the default history database, keep apart: a pin made on one does not
    reach the other's model of the same name."""
    state = tmp_path / "state"
    flags = ("--model-control-mode", "explicit", "--state-dir", str(state))
    first = add_sub_repository(tmp_path / "a", "swap")
    os.makedirs(first / "other" / "1")
    shutil.copy(os.path.join(FIXTURES, "add_sub", "1", "model.onnx"), first / "other" / "1" / "model.onnx")
    (first / "other" / "config.pbtxt").write_text(ADD_SUB_CONFIG.format(name="other"))
    place_version(str(first / "swap"), 2, os.path.join(FIXTURES, "add_sub_swapped", "1", "model.onnx"))
    second = add_sub_repository(tmp_path / "b", "swap")
    place_version(str(second / "swap"), 2, os.path.join(FIXTURES, "add_sub_swapped", "1", "model.onnx"))

    server = TernServer(str(first), *flags, "--load-model", "*")
    try:
        out = subprocess.run([BINARY, "model", "status", "--http-port", str(server.http_port)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0].split() == ["MODEL", "STATE", "PHASE", "SERVING", "PINNED"]
        assert [line.split() for line in lines[1:]] == [["other", "READY", "serving", "1", "-"], ["swap", "READY", "serving", "2", "-"]]
        out = subprocess.run([BINARY, "model", "promote", "swap", "--version", "1", "--http-port", str(server.http_port)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    finally:
        server.stop()
    other = TernServer(str(second), *flags, "--load-model", "swap")
    try:
        status = requests.get(f"{other.http_url}/v2/repository/models/swap/status").json()
        assert status["servingVersions"] == [2] and status.get("pinnedVersions") is None, status
    finally:
        other.stop()
    again = TernServer(str(first), *flags, "--load-model", "swap")
    try:
        status = requests.get(f"{again.http_url}/v2/repository/models/swap/status").json()
        assert status["servingVersions"] == [1] and status["pinnedVersions"] == [1], status
    finally:
        again.stop()
    folders = sorted(os.listdir(state))
    assert len(folders) == 2 and all(f.startswith("models-") for f in folders), folders
    assert all({"history.sqlite", "experiments.sqlite"} <= set(os.listdir(state / f)) for f in folders)
