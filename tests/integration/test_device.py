"""Device telemetry, the thermal policy and memory admission, against real `tern serve` processes.

The Jetson-only parts read a recorded sysfs tree (`--device-root`), which the tests heat and cool
by rewriting a thermal zone's `temp` file; everything else is this machine's real telemetry.
"""
import json
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import EXAMPLES, ROOT, TernServer

BINARY = os.environ.get("TERN_BIN", os.path.join(ROOT, ".build/debug/tern"))
FIXTURES = os.environ.get("TERN_FIXTURES", os.path.join(ROOT, ".cache", "fixtures"))
SAMPLES = [
    "11-30-2025 13:26:01 RAM 2461/7620MB (lfb 3x2MB) SWAP 1243/3810MB (cached 5MB) CPU [19%@729,14%@729,22%@729,8%@729,15%@729,17%@729] EMC_FREQ 4%@2133 GR3D_FREQ 0%@[305] NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 cpu@46.531C soc2@47.312C soc0@46.593C gpu@48.218C tj@48.843C soc1@48.843C VDD_IN 5704mW/5704mW VDD_CPU_GPU_CV 831mW/831mW VDD_SOC 1624mW/1624mW",
    "RAM 2690/6854MB (lfb 6x1MB) SWAP 479/3427MB (cached 3MB) CPU [3%@1904,7%@1906,1%@1905,0%@1907,off,off] EMC_FREQ 0%@1600 GR3D_FREQ 0%@[510] VIC_FREQ 601 APE 150 AUX@39C CPU@39.5C AO@37.5C GPU@37.5C PMIC@50C VDD_IN 5079mW/5079mW VDD_CPU_GPU_CV 696mW/696mW VDD_SOC 1104mW/1104mW",
]


def meminfo(key):
    for line in open("/proc/meminfo"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def metric(text, name, labels=""):
    match = re.search(r"^" + re.escape(name + labels) + r" (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def wait_for(condition, timeout=10.0, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


# ---- tern device stats ------------------------------------------------------------------------

def test_device_stats_reads_this_machine():
    out = subprocess.run([BINARY, "device", "stats", "--json"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    online = [c for c in stats["cpus"] if c["online"]]
    assert len(online) == os.cpu_count()
    assert all(0 <= c["loadPercent"] <= 100 for c in online)
    assert stats["memory"]["totalBytes"] == meminfo("MemTotal")
    assert abs(stats["memory"]["availableBytes"] - meminfo("MemAvailable")) < 512 << 20
    zones = os.path.isdir("/sys/devices/virtual/thermal") and any(
        z.startswith("thermal_zone") for z in os.listdir("/sys/devices/virtual/thermal"))
    assert bool(stats["temperatures"]) == zones
    if not os.path.exists("/sys/devices/gpu.0/load"):
        assert any(reason.startswith("gpu:") for reason in stats["unavailable"])
    # The human view says the same.
    text = subprocess.run([BINARY, "device", "stats"], capture_output=True, text=True, timeout=30).stdout
    assert text.startswith("cpu ") and "memory " in text


def test_tegrastats_log_prints_every_reading_and_numbers_bad_lines(tmp_path):
    log = tmp_path / "tegrastats.log"
    log.write_text(SAMPLES[0] + "\n\n" + SAMPLES[1] + "\nRAM 1/2MB GR3D_FREQ 5%@[x]\n")
    out = subprocess.run([BINARY, "device", "stats", "--tegrastats-log", str(log), "--json"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert f"{log}:4: column 21" in out.stderr and "5%@[x]" in out.stderr
    readings = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["line"] for r in readings] == [1, 3]
    first, second = readings[0]["reading"], readings[1]["reading"]
    assert first["timestamp"] == "11-30-2025 13:26:01"
    assert [c["loadPercent"] for c in first["cpus"]] == [19, 14, 22, 8, 15, 17]
    assert first["gpu"]["frequenciesMHz"] == [305]
    assert [r["milliwatts"] for r in first["rails"]] == [5704, 831, 1624]
    assert [c["online"] for c in second["cpus"]] == [True] * 4 + [False] * 2
    human = subprocess.run([BINARY, "device", "stats", "--tegrastats-log", str(log)],
                           capture_output=True, text=True, timeout=30)
    assert human.stdout.splitlines()[0].startswith("line 1  11-30-2025 13:26:01  cpu 16% (6/6 on)")
    assert "hottest tj 48.8°C" in human.stdout and "power 5704mW" in human.stdout


def test_power_mode_without_jetson_tools_says_so(tmp_path):
    out = subprocess.run([BINARY, "device", "power-mode", "list", "--nvpmodel-conf", str(tmp_path / "none.conf")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "not a Jetson" in out.stderr
    conf = tmp_path / "nvpmodel.conf"
    conf.write_text("< POWER_MODEL ID=0 NAME=MAXN >\n< POWER_MODEL ID=1 NAME=15W >\n< PM_CONFIG DEFAULT=1 >\n")
    listed = subprocess.run([BINARY, "device", "power-mode", "list", "--nvpmodel-conf", str(conf)],
                            capture_output=True, text=True, timeout=30)
    assert listed.stdout.splitlines() == ["0\tMAXN", "1\t15W\t(default)"]
    if shutil.which("nvpmodel") is None:
        got = subprocess.run([BINARY, "device", "power-mode", "get"], capture_output=True, text=True, timeout=30)
        assert got.returncode == 1 and "nvpmodel is not installed" in got.stderr


# ---- metrics and JSON from the server ---------------------------------------------------------

def test_metrics_port_exports_device_telemetry(server):
    base = f"http://127.0.0.1:{server.metrics_port}"
    # CPU load needs two readings (2 s apart by default).
    def scrape():
        text = requests.get(base + "/metrics").text
        return text if 'tern_device_cpu_utilization{core="0"}' in text else None
    text = wait_for(scrape)
    assert metric(text, "tern_device_memory_total_bytes") == meminfo("MemTotal")
    assert 0 <= metric(text, "tern_device_cpu_utilization", '{core="0"}') <= 1
    assert metric(text, "tern_device_cpu_online", '{core="0"}') == 1
    snapshot = requests.get(base + "/device/stats").json()
    assert snapshot["stats"]["memory"]["totalBytes"] == meminfo("MemTotal")
    assert "policy" not in snapshot or snapshot["policy"] is None


# ---- the thermal policy -----------------------------------------------------------------------

def write_temp(tree, millicelsius):
    path = tree / "sys/devices/virtual/thermal/thermal_zone0/temp"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{millicelsius}\n")
    os.replace(tmp, path)


@pytest.fixture
def hot_device(tmp_path):
    tree = tmp_path / "device"
    (tree / "sys/devices/virtual/thermal/thermal_zone0").mkdir(parents=True)
    (tree / "sys/devices/virtual/thermal/thermal_zone0/type").write_text("cpu-thermal\n")
    write_temp(tree, 50000)
    repo = tmp_path / "models"
    for name in ("add_sub", "digits_logreg"):
        shutil.copytree(os.path.join(EXAMPLES, name), repo / name)
    # A batching model: up to 8 rows, 300 ms to gather them, so a burst fills whole batches.
    os.makedirs(repo / "batched" / "1")
    shutil.copy(os.path.join(FIXTURES, "add_sub", "1", "model.onnx"), repo / "batched" / "1" / "model.onnx")
    (repo / "batched" / "config.pbtxt").write_text(
        'name: "batched"\nbackend: "onnxruntime"\nmax_batch_size: 8\n'
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [ 16 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] }, { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 16 ] } ]\n'
        'dynamic_batching { max_queue_delay_microseconds: 300000 }\n')
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({
        "throttleAboveCelsius": 80, "recoverBelowCelsius": 70, "recoveryReadings": 2,
        "batchScales": [0.5], "shedModels": ["digits_logreg"],
    }))
    server = TernServer(str(repo), "--device-root", str(tree), "--device-policy", str(policy), "--device-interval", "0.2")
    yield server, tree
    server.stop()


def logreg_inputs():
    x = np.zeros((1, 64), dtype=np.float32)
    inp = httpclient.InferInput("X", [1, 64], "FP32")
    inp.set_data_from_numpy(x)
    return [inp]


def burst(client_url, rows=16):
    def one(i):
        client = httpclient.InferenceServerClient(client_url)
        a = np.full((1, 16), i, dtype=np.float32)
        inputs = [httpclient.InferInput("INPUT0", [1, 16], "FP32"), httpclient.InferInput("INPUT1", [1, 16], "FP32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(a)
        result = client.infer("batched", inputs).as_numpy("OUTPUT0")
        assert np.allclose(result, 2 * a)
    with ThreadPoolExecutor(rows) as pool:
        list(pool.map(one, range(rows)))


def batch_sizes(client):
    stats = client.get_inference_statistics("batched")["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


def test_heat_scales_batches_then_sheds_low_priority_models_and_cooling_undoes_it(hot_device):
    server, tree = hot_device
    client = httpclient.InferenceServerClient(server.http_address)
    metrics = f"http://127.0.0.1:{server.metrics_port}"
    assert client.infer("digits_logreg", logreg_inputs()).as_numpy("label") is not None

    burst(server.http_address)
    before = batch_sizes(client)
    assert max(before) > 4, before  # unthrottled, a burst fills batches beyond half of 8

    # Heat: one step per hot reading — batches halved, then digits_logreg shed with 503.
    write_temp(tree, 90000)
    error = wait_for(lambda: shed_error(client), timeout=10)
    assert error.status() == "503" and "thermal policy" in str(error)
    snapshot = requests.get(metrics + "/device/stats").json()
    assert snapshot["policy"]["step"] == 2 and snapshot["policy"]["batchScale"] == 0.5
    assert snapshot["policy"]["pausedModels"] == ["digits_logreg"]
    assert [d["toStep"] for d in snapshot["policy"]["decisions"]] == [1, 2]
    assert snapshot["policy"]["decisions"][0]["reason"].startswith("throttle: 90.0")
    text = requests.get(metrics + "/metrics").text
    assert metric(text, "tern_device_temperature_celsius", '{sensor="cpu-thermal"}') == 90
    assert metric(text, "tern_device_policy_step") == 2

    # Other models keep serving, and the batching model now runs batches of at most 4.
    burst(server.http_address)
    after = batch_sizes(client)
    new = {size: after[size] - before.get(size, 0) for size in after if after[size] > before.get(size, 0)}
    assert new and max(new) <= 4, new

    # Cool: after two readings at or below 70 °C, step 1 (digits_logreg back), then step 0.
    write_temp(tree, 60000)
    wait_for(lambda: shed_error(client) is None, timeout=10)
    wait_for(lambda: requests.get(metrics + "/device/stats").json()["policy"]["step"] == 0, timeout=10)
    snapshot = requests.get(metrics + "/device/stats").json()
    assert snapshot["policy"]["batchScale"] == 1 and snapshot["policy"]["pausedModels"] == []
    assert "device policy decision" in server.logs()


def shed_error(client):
    """The error digits_logreg is refused with, or None when it answers."""
    try:
        client.infer("digits_logreg", logreg_inputs())
        return None
    except InferenceServerException as error:
        return error


def test_a_bad_policy_file_is_refused_at_start(tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text('{"throttleAboveCelsius": 70, "recoverBelowCelsius": 80}')
    out = subprocess.run([BINARY, "serve", "--model-repository", EXAMPLES, "--device-policy", str(policy)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "recoverBelowCelsius" in out.stderr


# ---- memory admission ---------------------------------------------------------------------------

def estimated_repo(tmp_path, megabytes):
    repo = tmp_path / "models"
    for name in ("add_sub", "digits_mlp", "digits_logreg"):
        shutil.copytree(os.path.join(EXAMPLES, name), repo / name)
        with open(repo / name / "config.pbtxt", "a") as f:
            f.write(f'\nparameters {{ key: "tern.memory_estimate_mb" value: {{ string_value: "{megabytes}" }} }}\n')
    return repo


def test_a_load_over_the_memory_budget_is_refused_and_the_others_keep_serving(tmp_path):
    server = TernServer(str(estimated_repo(tmp_path, 60)), "--model-control-mode", "explicit",
                        "--load-model", "add_sub", "--memory-budget", "100MB")
    try:
        client = httpclient.InferenceServerClient(server.http_address)
        assert client.is_model_ready("add_sub")
        with pytest.raises(InferenceServerException) as refused:
            client.load_model("digits_mlp")
        assert refused.value.status() == "503"
        assert "not enough memory to load 'digits_mlp'" in str(refused.value) and "100 MB" in str(refused.value)
        assert client.is_model_ready("add_sub") and not client.is_model_ready("digits_mlp")
        # Unloading gives the budget back.
        client.unload_model("add_sub")
        wait_for(lambda: not client.is_model_ready("add_sub"))
        client.load_model("digits_mlp")
        assert client.is_model_ready("digits_mlp")
    finally:
        server.stop()


def test_lru_eviction_unloads_the_least_recently_used_model(tmp_path):
    server = TernServer(str(estimated_repo(tmp_path, 40)), "--model-control-mode", "explicit",
                        "--load-model", "add_sub", "--load-model", "digits_logreg",
                        "--memory-budget", "100MB", "--model-eviction", "lru")
    try:
        client = httpclient.InferenceServerClient(server.http_address)
        assert client.infer("digits_logreg", logreg_inputs()) is not None  # add_sub: never used
        client.load_model("digits_mlp")
        assert client.is_model_ready("digits_mlp") and client.is_model_ready("digits_logreg")
        assert not client.is_model_ready("add_sub")
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert "evicted to make room for 'digits_mlp'" in index["add_sub"].get("reason", "")
    finally:
        server.stop()


def test_free_ram_reserve_refuses_loads_that_would_eat_into_it(tmp_path):
    server = TernServer(str(estimated_repo(tmp_path, 1)), "--model-control-mode", "explicit",
                        "--memory-reserve", "100000GB")
    try:
        client = httpclient.InferenceServerClient(server.http_address)
        with pytest.raises(InferenceServerException) as refused:
            client.load_model("add_sub")
        assert "must stay free" in str(refused.value)
    finally:
        server.stop()
