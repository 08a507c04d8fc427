"""`--rate-limit execution_count`: a high-priority model is not starved by a busy background one."""
import os
import shutil
import statistics
import threading
import time

import numpy as np
import pytest
import tritonclient.http as httpclient

from conftest import ROOT, TernServer

FIXTURES = os.environ.get("TERN_FIXTURES", os.path.join(ROOT, ".cache", "fixtures"))


def config(name, count, priority):
    return (f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: 1\n'
            'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
            'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
            f'instance_group [ {{ count: {count} kind: KIND_CPU rate_limiter {{ resources [ {{ name: "cpu" count: 1 }} ] '
            f'priority: {priority} }} }} ]\n'
            'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n')


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("ratelimit") / "models"
    for name, count, priority in (("detector", 1, 1), ("classifier", 3, 10)):
        os.makedirs(repo / name / "1")
        shutil.copy(os.path.join(FIXTURES, "slow", "1", "model.onnx"), repo / name / "1" / "model.onnx")
        (repo / name / "config.pbtxt").write_text(config(name, count, priority))
    # One "cpu": one execution at a time across both models.
    server = TernServer(str(repo), "--rate-limit", "execution_count", "--rate-limit-resource", "cpu:1")
    yield server
    server.stop()


def timed_call(client, model):
    inp = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    inp.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    start = time.perf_counter()
    result = client.infer(model, [inp])
    assert np.array_equal(result.as_numpy("OUTPUT0"), np.full((1, 4), 2, dtype=np.float32))
    return time.perf_counter() - start


def test_high_priority_model_keeps_its_latency_under_background_load(limited_server):
    client = httpclient.InferenceServerClient(limited_server.http_address)
    alone = statistics.median(timed_call(client, "detector") for _ in range(5))
    stop = time.perf_counter() + 3.0
    background = []

    def flood():
        own = httpclient.InferenceServerClient(limited_server.http_address)
        while time.perf_counter() < stop:
            background.append(timed_call(own, "classifier"))

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    detector = []
    while time.perf_counter() < stop - 0.2:
        detector.append(timed_call(client, "detector"))
    for t in threads:
        t.join()
    detector.sort()
    # Stated bound: at most one background execution ahead of it, plus its own — for the typical
    # call (median), and for all but a few calls that a noisy 2-core machine may delay (without
    # priorities a call waits behind up to three queued executions: ~4× alone). A CI run saw one
    # call of ~30 at 3.8× alone, which the earlier p99 bound turned into a red build.
    median = statistics.median(detector)
    slow = [d for d in detector if d > 3 * alone + 0.05]
    assert median <= 2.5 * alone + 0.05, (alone, detector)
    assert len(slow) <= max(1, len(detector) // 10), (alone, detector)
    # The background model absorbs the wait: 4 callers share what the detector leaves.
    assert statistics.median(background) > 2 * statistics.median(detector), (background, detector)
