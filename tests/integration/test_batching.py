"""Dynamic batching, queue policies and priorities, driven with tritonclient against `tern serve`."""
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import ROOT, TernServer

FIXTURES = os.environ.get("TERN_FIXTURES", os.path.join(ROOT, ".cache", "fixtures"))

ADD_SUB_IO = """
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] }, { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 16 ] } ]
"""
SLOW_IO = """
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""
MODELS = {
    # add_sub, merged by the dynamic batcher: up to 8 rows, 20 ms to gather them.
    "batched": ("add_sub", 'max_batch_size: 8\n' + ADD_SUB_IO
                + 'instance_group [ { count: 1 kind: KIND_CPU } ]\n'
                + 'dynamic_batching { max_queue_delay_microseconds: 20000 }\n'),
    # One request per execution (rows never fit together), at most 2 waiting.
    "queue_limited": ("slow", 'max_batch_size: 1\n' + SLOW_IO
                      + 'dynamic_batching { default_queue_policy { max_queue_size: 2 } }\n'),
    # Two priority levels; requests without a priority are level 2.
    "prioritized": ("slow", 'max_batch_size: 1\n' + SLOW_IO
                    + 'dynamic_batching { priority_levels: 2 default_priority_level: 2 }\n'),
    # Requests may shorten the 10 s default timeout; a timed-out request is rejected.
    "timed": ("slow", 'max_batch_size: 1\n' + SLOW_IO
              + 'dynamic_batching { default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 10000000 '
              + 'allow_timeout_override: true } }\n'),
    # As "timed", but a timed-out request is delayed behind the others instead.
    "delayed": ("slow", 'max_batch_size: 1\n' + SLOW_IO
                + 'dynamic_batching { default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 10000000 '
                + 'allow_timeout_override: true } }\n'),
}


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("batching") / "models"
    for name, (source, config) in MODELS.items():
        os.makedirs(repo / name / "1")
        shutil.copy(os.path.join(FIXTURES, source, "1", "model.onnx"), repo / name / "1" / "model.onnx")
        (repo / name / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "onnxruntime"\n' + config)
    server = TernServer(str(repo))
    yield server
    server.stop()


def stats(server, model):
    return requests.get(f"{server.http_url}/v2/models/{model}/stats").json()["model_stats"][0]


def slow_request(value):
    x = np.full((1, 4), value, dtype=np.float32)
    inp = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    return [inp]


def test_concurrent_requests_share_executions(batching_server):
    def call(i):
        client = httpclient.InferenceServerClient(batching_server.http_address)  # one per thread (gevent)
        a = np.full((1, 16), i, dtype=np.float32)
        b = np.arange(16, dtype=np.float32).reshape(1, 16)
        inputs = [httpclient.InferInput("INPUT0", [1, 16], "FP32"), httpclient.InferInput("INPUT1", [1, 16], "FP32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        result = client.infer("batched", inputs)
        # Every request gets exactly its own rows back.
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(call, range(16)))
    s = stats(batching_server, "batched")
    assert int(s["inference_count"]) == 16
    executions = int(s["execution_count"])
    assert executions < 16, s
    batch_stats = s["batch_stats"]
    assert sum(int(b["compute_infer"]["count"]) for b in batch_stats) == executions
    assert sum(int(b["batch_size"]) * int(b["compute_infer"]["count"]) for b in batch_stats) == 16
    assert int(s["inference_stats"]["success"]["count"]) == 16
    assert max(int(b["batch_size"]) for b in batch_stats) > 1
    # Prometheus counts the same events.
    metrics = requests.get(f"http://127.0.0.1:{batching_server.metrics_port}/metrics").text
    assert f'nv_inference_exec_count{{model="batched",version="1"}} {executions}' in metrics
    assert 'nv_inference_count{model="batched",version="1"} 16' in metrics


def test_requests_over_the_queue_limit_are_refused(batching_server):
    outcomes = []
    lock = threading.Lock()

    def call(i):
        client = httpclient.InferenceServerClient(batching_server.http_address)
        try:
            result = client.infer("queue_limited", slow_request(i))
            ok = np.array_equal(result.as_numpy("OUTPUT0"), np.full((1, 4), 2 * i, dtype=np.float32))
            outcome = ("ok", ok)
        except InferenceServerException as e:
            outcome = ("error", e.status(), e.message())
        with lock:
            outcomes.append(outcome)

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(call, range(12)))
    answered = [o for o in outcomes if o[0] == "ok"]
    refused = [o for o in outcomes if o[0] == "error"]
    assert answered and refused, outcomes
    assert all(o[1] for o in answered), outcomes
    assert all(o[1] == "503" and "Exceeds maximum queue size" in o[2] for o in refused), refused
    # gRPC: UNAVAILABLE with the same message.
    grpc = grpcclient.InferenceServerClient(batching_server.grpc_address)
    errors = []

    def grpc_call(i):
        inp = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
        inp.set_data_from_numpy(np.full((1, 4), i, dtype=np.float32))
        try:
            grpc.infer("queue_limited", [inp])
        except InferenceServerException as e:
            errors.append((e.status(), e.message()))

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(grpc_call, range(12)))
    assert errors and all(s == "StatusCode.UNAVAILABLE" and "Exceeds maximum queue size" in m for s, m in errors), errors
    metrics = requests.get(f"http://127.0.0.1:{batching_server.metrics_port}/metrics").text
    rejected = [line for line in metrics.splitlines()
                if line.startswith("nv_inference_request_failure{") and 'model="queue_limited"' in line and 'reason="REJECTED"' in line]
    assert len(rejected) == 1 and int(rejected[0].split()[-1]) == len(refused) + len(errors), (rejected, metrics)


def ordered_completions(server, model, sends):
    """Starts one blocking request, then sends `sends` (label, parameters) in order while it runs;
    returns the labels in the order their answers came back."""
    done = []
    lock = threading.Lock()
    labels = ["blocker"] + [label for label, _ in sends]
    # Each thread makes its client (gevent-based: one per thread) and connects first, then waits
    # for its turn, so sending is not delayed by client set-up on a busy machine.
    ready = {label: threading.Event() for label in labels}
    go = {label: threading.Event() for label in labels}

    def call(label, params):
        client = httpclient.InferenceServerClient(server.http_address)
        client.is_server_live()
        ready[label].set()
        go[label].wait()
        try:
            client.infer(model, slow_request(1), **params)
            outcome = label
        except InferenceServerException as e:
            outcome = f"{label}:{e.status()}:{e.message()}"
        with lock:
            done.append(outcome)

    params = dict([("blocker", {})] + sends)
    threads = [threading.Thread(target=call, args=(label, params[label])) for label in labels]
    for t in threads:
        t.start()
    for label in labels:
        ready[label].wait()
    go["blocker"].set()
    time.sleep(0.005)
    for label, _ in sends:
        go[label].set()
        time.sleep(0.002)
    for t in threads:
        t.join()
    return done


def test_a_priority_one_request_overtakes_queued_ones(batching_server):
    # While one execution runs, four default (level 2) requests queue, then a level-1 one.
    sends = [(f"low{i}", {}) for i in range(4)] + [("high", {"priority": 1})]
    done = ordered_completions(batching_server, "prioritized", sends)
    assert sorted(done) == sorted(["blocker", "high", "low0", "low1", "low2", "low3"]), done
    assert done.index("high") < done.index("low3"), done
    assert done.index("high") < done.index("low2"), done


def test_a_request_timeout_rejects_or_delays(batching_server):
    # A request that may wait 1 ms behind a ~50 ms execution times out: REJECT answers 503 ...
    done = ordered_completions(batching_server, "timed", [("short", {"timeout": 1000}), ("normal", {})])
    assert "normal" in done and any(d.startswith("short:503:Request timeout expired") for d in done), done
    # ... and DELAY runs it after the requests that have not timed out.
    done = ordered_completions(batching_server, "delayed", [("short", {"timeout": 1000}), ("normal", {})])
    assert done.index("short") > done.index("normal"), done
    # A request cannot lengthen the default: 20 s > 10 s is ignored, the request still answers.
    client = httpclient.InferenceServerClient(batching_server.http_address)
    client.infer("timed", slow_request(1), timeout=20_000_000)
    metrics = requests.get(f"http://127.0.0.1:{batching_server.metrics_port}/metrics").text
    rejected = [line for line in metrics.splitlines()
                if line.startswith("nv_inference_request_failure{") and 'model="timed"' in line and 'reason="REJECTED"' in line]
    assert len(rejected) == 1 and rejected[0].endswith(" 1"), rejected
