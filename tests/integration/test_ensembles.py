"""Ensembles (platform "ensemble") over real ONNX models, driven with tritonclient HTTP and gRPC."""
import os
import shutil

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import ROOT, TernServer

FIXTURES = os.environ.get("TERN_FIXTURES", os.path.join(ROOT, ".cache", "fixtures"))

# Two branches that can run at once (a+b / a-b, and a+a), joined by a third step:
#   SUM3 = (a + b) + 2a = 3a + b,   BMINUSA = (a + b) - 2a = b - a.   "diff" is computed but unused.
PIPELINE = """name: "pipeline"
platform: "ensemble"
max_batch_size: 8
input [ { name: "A" data_type: TYPE_FP32 dims: [ 16 ] }, { name: "B" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "SUM3" data_type: TYPE_FP32 dims: [ 16 ] }, { name: "BMINUSA" data_type: TYPE_FP32 dims: [ 16 ] } ]
ensemble_scheduling { step [
  { model_name: "add_sub" model_version: -1
    input_map { key: "INPUT0" value: "A" } input_map { key: "INPUT1" value: "B" }
    output_map { key: "OUTPUT0" value: "sum" } output_map { key: "OUTPUT1" value: "diff" } },
  { model_name: "add_sub" model_version: -1
    input_map { key: "INPUT0" value: "A" } input_map { key: "INPUT1" value: "A" }
    output_map { key: "OUTPUT0" value: "double" } },
  { model_name: "add_sub" model_version: -1
    input_map { key: "INPUT0" value: "sum" } input_map { key: "INPUT1" value: "double" }
    output_map { key: "OUTPUT0" value: "SUM3" } output_map { key: "OUTPUT1" value: "BMINUSA" } }
] }
"""


@pytest.fixture(scope="module")
def ensemble_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("ensembles") / "models"
    os.makedirs(repo / "add_sub" / "1")
    shutil.copy(os.path.join(FIXTURES, "add_sub", "1", "model.onnx"), repo / "add_sub" / "1" / "model.onnx")
    os.makedirs(repo / "pipeline" / "1")  # an ensemble's version folder is empty
    (repo / "pipeline" / "config.pbtxt").write_text(PIPELINE)
    # Only the ensemble is named: loading it loads add_sub, as Triton does.
    server = TernServer(str(repo), "--model-control-mode", "explicit", "--load-model", "pipeline")
    yield server
    server.stop()


def run(module, address, a, b, outputs=None):
    client = module.InferenceServerClient(address)
    inputs = [module.InferInput("A", list(a.shape), "FP32"), module.InferInput("B", list(b.shape), "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    requested = [module.InferRequestedOutput(name) for name in outputs] if outputs else None
    return client.infer("pipeline", inputs, outputs=requested)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_dag_computes_and_returns_only_ensemble_outputs(ensemble_server, protocol):
    module = httpclient if protocol == "http" else grpcclient
    address = ensemble_server.http_address if protocol == "http" else ensemble_server.grpc_address
    a = np.random.rand(3, 16).astype(np.float32)
    b = np.random.rand(3, 16).astype(np.float32)
    result = run(module, address, a, b)
    assert np.allclose(result.as_numpy("SUM3"), 3 * a + b, atol=1e-6)
    assert np.allclose(result.as_numpy("BMINUSA"), b - a, atol=1e-6)
    names = ([o["name"] for o in result.get_response()["outputs"]] if protocol == "http"
             else [o.name for o in result.get_response().outputs])
    assert sorted(names) == ["BMINUSA", "SUM3"]  # sum, diff and double stay inside
    only = run(module, address, a, b, outputs=["BMINUSA"])
    assert only.as_numpy("SUM3") is None and np.allclose(only.as_numpy("BMINUSA"), b - a, atol=1e-6)


def test_metadata_statistics_and_composing_model_counts(ensemble_server):
    client = httpclient.InferenceServerClient(ensemble_server.http_address)
    assert client.is_model_ready("pipeline") and client.is_model_ready("add_sub")
    metadata = client.get_model_metadata("pipeline")
    assert metadata["platform"] == "ensemble"
    assert [i["name"] for i in metadata["inputs"]] == ["A", "B"]
    before = client.get_inference_statistics("add_sub")["model_stats"][0]
    ens_before = client.get_inference_statistics("pipeline")["model_stats"][0]
    a = np.ones((2, 16), dtype=np.float32)
    run(httpclient, ensemble_server.http_address, a, a)
    after = client.get_inference_statistics("add_sub")["model_stats"][0]
    ens_after = client.get_inference_statistics("pipeline")["model_stats"][0]
    # Three steps of two rows each on add_sub; one request of two rows on the ensemble.
    assert int(after["inference_count"]) - int(before["inference_count"]) == 6
    assert int(after["execution_count"]) - int(before["execution_count"]) == 3
    assert int(ens_after["inference_count"]) - int(ens_before["inference_count"]) == 2


def test_unavailable_while_a_composing_model_is_not_ready(ensemble_server):
    client = httpclient.InferenceServerClient(ensemble_server.http_address)
    client.unload_model("add_sub")
    try:
        assert not client.is_model_ready("pipeline")
        with pytest.raises(InferenceServerException) as error:
            run(httpclient, ensemble_server.http_address, np.ones((1, 16), np.float32), np.ones((1, 16), np.float32))
        assert error.value.status() == "503" and "composing model 'add_sub' is not ready" in str(error.value)
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert index["pipeline"]["state"] == "UNAVAILABLE"
    finally:
        client.load_model("add_sub")
    assert client.is_model_ready("pipeline")
    a = np.full((1, 16), 2, np.float32)
    assert np.allclose(run(httpclient, ensemble_server.http_address, a, a).as_numpy("SUM3"), 8)


def test_a_bad_graph_fails_to_load_with_the_field_named(ensemble_server):
    client = httpclient.InferenceServerClient(ensemble_server.http_address)
    folder = os.path.join(ensemble_server.repo, "broken_pipeline")
    os.makedirs(os.path.join(folder, "1"))
    # The second step's output is renamed, so the third step's "double" is produced by nobody.
    bad = PIPELINE.replace('value: "double" }', 'value: "dubble" }', 1).replace('"pipeline"', '"broken_pipeline"')
    with open(os.path.join(folder, "config.pbtxt"), "w") as f:
        f.write(bad)
    with pytest.raises(InferenceServerException) as error:
        client.load_model("broken_pipeline")
    assert error.value.status() == "400"
    assert "ensemble_scheduling.step[2].input_map['INPUT1']: tensor 'double'" in str(error.value)
    assert client.is_model_ready("pipeline")
