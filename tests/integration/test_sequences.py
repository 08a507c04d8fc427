"""The sequence batcher with implicit state, driven with tritonclient against `tern serve`."""
import os
import queue
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import ROOT, TernServer

FIXTURES = os.environ.get("TERN_FIXTURES", os.path.join(ROOT, ".cache", "fixtures"))

CONTROLS = """
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY fp32_false_true: [ 0, 1 ] } ] }
  ]
  state [ { input_name: "STATE_IN" output_name: "STATE_OUT" data_type: TYPE_FP32 dims: [ 1 ]
            initial_state { data_type: TYPE_FP32 dims: [ 1 ] zero_data: true name: "zero" } } ]
"""
CORRID = """
  control_input [ { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] } ]
"""


def config(name, idle_us, strategy="", corrid=True, instances=2):
    outputs = '{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ 1 ] }'
    if corrid:
        outputs += ', { name: "CORRID_ECHO" data_type: TYPE_UINT64 dims: [ 1 ] }'
    return (f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: 2\n'
            f'input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ 1 ] }} ]\noutput [ {outputs} ]\n'
            f'instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n'
            f'sequence_batching {{\n  max_sequence_idle_microseconds: {idle_us}\n{strategy}\n{CONTROLS}{CORRID if corrid else ""}}}\n')


MODELS = {
    # 2 instances × max_batch_size 2 = 4 slots.
    # Waits up to 5 ms for both rows of a batch to be ready.
    "running_sum": ("sequence_sum", config("running_sum", 5_000_000,
                                           "  direct { max_queue_delay_microseconds: 5000 minimum_slot_utilization: 1.0 }")),
    "running_sum_oldest": ("sequence_sum", config("running_sum_oldest", 5_000_000,
                                                  "  oldest { max_candidate_sequences: 4 preferred_batch_size: [ 2 ] "
                                                  "max_queue_delay_microseconds: 5000 }")),
    "idle_sum": ("sequence_sum", config("idle_sum", 200_000, instances=1)),
    "named_sum": ("sequence_sum_nocorrid", config("named_sum", 5_000_000, corrid=False)),
}


@pytest.fixture(scope="module")
def sequence_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("sequences") / "models"
    for name, (source, text) in MODELS.items():
        os.makedirs(repo / name / "1")
        shutil.copy(os.path.join(FIXTURES, source, "1", "model.onnx"), repo / name / "1" / "model.onnx")
        (repo / name / "config.pbtxt").write_text(text)
    server = TernServer(str(repo))
    yield server
    server.stop()


def send(client, model, value, sequence_id, start=False, end=False):
    inp = httpclient.InferInput("INPUT", [1, 1], "FP32")
    inp.set_data_from_numpy(np.array([[value]], dtype=np.float32))
    return client.infer(model, [inp], sequence_id=sequence_id, sequence_start=start, sequence_end=end)


def run_sequence(address, model, sequence_id, values, pause=0.0):
    client = httpclient.InferenceServerClient(address)
    sums = []
    for i, value in enumerate(values):
        result = send(client, model, value, sequence_id, start=i == 0, end=i == len(values) - 1)
        sums.append(float(result.as_numpy("OUTPUT")[0][0]))
        if "CORRID_ECHO" in [o["name"] for o in result.get_response()["outputs"]]:
            assert int(result.as_numpy("CORRID_ECHO")[0][0]) == sequence_id
        time.sleep(pause)
    return sums


@pytest.mark.parametrize("model", ["running_sum", "running_sum_oldest"])
def test_eight_sequences_on_four_slots_keep_their_own_state(sequence_server, model):
    values = {seq: [float(seq * 10 + k) for k in range(1, 6)] for seq in range(1, 9)}
    with ThreadPoolExecutor(8) as pool:
        futures = {seq: pool.submit(run_sequence, sequence_server.http_address, model, seq, vals)
                   for seq, vals in values.items()}
        results = {seq: f.result(timeout=60) for seq, f in futures.items()}
    for seq, vals in values.items():
        assert results[seq] == list(np.cumsum(vals)), (seq, results[seq])
    stats = requests.get(f"{sequence_server.http_url}/v2/models/{model}/stats").json()["model_stats"][0]
    assert int(stats["inference_count"]) == 40
    assert sum(int(b["batch_size"]) * int(b["compute_infer"]["count"]) for b in stats["batch_stats"]) == 40
    # Some executions served two sequences at once.
    assert int(stats["execution_count"]) < 40


def test_string_sequence_ids(sequence_server):
    client = httpclient.InferenceServerClient(sequence_server.http_address)
    assert float(send(client, "named_sum", 2, "alpha", start=True).as_numpy("OUTPUT")[0][0]) == 2
    assert float(send(client, "named_sum", 5, "beta", start=True).as_numpy("OUTPUT")[0][0]) == 5
    assert float(send(client, "named_sum", 3, "alpha", end=True).as_numpy("OUTPUT")[0][0]) == 5
    assert float(send(client, "named_sum", 1, "beta", end=True).as_numpy("OUTPUT")[0][0]) == 6
    # A string id cannot fill a UINT64 CORRID control.
    with pytest.raises(InferenceServerException) as e:
        send(client, "running_sum", 1, "alpha", start=True)
    assert e.value.status() == "400" and "string" in e.value.message()


def test_sequence_errors_are_invalid_arguments(sequence_server):
    client = httpclient.InferenceServerClient(sequence_server.http_address)
    inp = httpclient.InferInput("INPUT", [1, 1], "FP32")
    inp.set_data_from_numpy(np.array([[1]], dtype=np.float32))
    with pytest.raises(InferenceServerException) as e:
        client.infer("running_sum", [inp])  # no sequence id
    assert e.value.status() == "400" and "correlation ID" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        send(client, "running_sum", 1, 777)  # first request without START
    assert e.value.status() == "400" and "must specify the START flag" in e.value.message()
    send(client, "running_sum", 1, 778, start=True, end=True)
    with pytest.raises(InferenceServerException) as e:
        send(client, "running_sum", 1, 778)  # after END
    assert e.value.status() == "400" and "START" in e.value.message()
    # The server keeps serving.
    assert run_sequence(sequence_server.http_address, "running_sum", 779, [1, 2]) == [1, 3]


def test_an_idle_sequence_is_released(sequence_server):
    client = httpclient.InferenceServerClient(sequence_server.http_address)
    assert float(send(client, "idle_sum", 4, 55, start=True).as_numpy("OUTPUT")[0][0]) == 4
    time.sleep(0.7)  # idle limit 0.2 s
    with pytest.raises(InferenceServerException) as e:
        send(client, "idle_sum", 1, 55)
    assert e.value.status() == "400" and "START" in e.value.message()
    # Its slot (the only one) is free again for a new sequence.
    assert run_sequence(sequence_server.http_address, "idle_sum", 56, [1, 1, 1]) == [1, 2, 3]


def test_grpc_stream_carries_sequences_with_errors_in_band(sequence_server):
    results = queue.Queue()
    client = grpcclient.InferenceServerClient(sequence_server.grpc_address)
    client.start_stream(callback=lambda result, error: results.put((result, error)))

    def stream(value, sequence_id, start=False, end=False):
        inp = grpcclient.InferInput("INPUT", [1, 1], "FP32")
        inp.set_data_from_numpy(np.array([[value]], dtype=np.float32))
        client.async_stream_infer("running_sum", [inp], sequence_id=sequence_id, sequence_start=start, sequence_end=end)

    stream(1, 901, start=True)
    stream(1, 999)  # never started: an error in the stream, which goes on
    stream(2, 901)
    stream(3, 901, end=True)
    outcomes = [results.get(timeout=10) for _ in range(4)]
    client.stop_stream()
    errors = [e for _, e in outcomes if e is not None]
    sums = [float(r.as_numpy("OUTPUT")[0][0]) for r, e in outcomes if e is None]
    assert len(errors) == 1 and "START" in str(errors[0])
    assert sums == [1, 3, 6]
