"""A/B experiments, shadows and canaries against real `tern serve` processes with two real digits
models (the MLP, 97 %, and the deliberately weak MLP, ~41 %), the real tritonclient, the SQLite
file the server writes, scipy for the statistics and Python's mmh3 for offline assignment."""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time

import mmh3
import numpy as np
import onnxruntime as ort
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from scipy import stats

from conftest import EXAMPLES, ROOT, TernServer

BINARY = os.environ.get("TERN_BIN", os.path.join(ROOT, ".build/debug/tern"))
FIXTURES = os.environ.get("TERN_FIXTURES", os.path.join(ROOT, ".cache", "fixtures"))
ROWS = np.load(os.path.join(FIXTURES, "digits_validation", "X.npy")).astype(np.float32)
LABELS = np.load(os.path.join(FIXTURES, "digits_validation", "labels.npy")).astype(np.int64)


def predictions(path):
    session = ort.InferenceSession(path)
    return session.run(["label"], {"X": ROWS})[0].ravel()


GOOD = predictions(os.path.join(EXAMPLES, "digits_mlp", "1", "model.onnx"))
WEAK = predictions(os.path.join(FIXTURES, "digits_weak", "1", "model.onnx"))

FILE_EXPERIMENT = """
variants:
  - { name: control, model: digits_mlp, weight: 50 }
  - { name: weak, model: digits_weak, weight: 50 }
guardrails: { min_samples: 100000 }   # this one only splits; no decision
"""


def repository(tmp_path):
    repo = tmp_path / "models"
    os.makedirs(repo)
    for name in ("digits_mlp", "digits_logreg"):
        shutil.copytree(os.path.join(EXAMPLES, name), repo / name)
    shutil.copytree(os.path.join(FIXTURES, "digits_weak"), repo / "digits_weak")
    config = open(os.path.join(EXAMPLES, "digits_mlp", "config.pbtxt")).read().replace('name: "digits_mlp"', 'name: "digits_weak"')
    (repo / "digits_weak" / "config.pbtxt").write_text(config.replace(' label_filename: "labels.txt"', ""))
    os.makedirs(repo / "experiments")
    (repo / "experiments" / "digits_ab.yaml").write_text(FILE_EXPERIMENT)
    return repo


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = repository(tmp_path_factory.mktemp("ab"))
    server = TernServer(str(repo), "--http-header-forward-pattern", "x-device-id", "--grpc-header-forward-pattern", "x-device-id")
    yield server
    server.stop()


def ask(client, model, row, request_id="", headers=None, **parameters):
    x = httpclient.InferInput("X", [1, 64], "FP32")
    x.set_data_from_numpy(ROWS[row:row + 1])
    result = client.infer(model, [x], request_id=request_id, headers=headers, parameters=parameters or None)
    response = result.get_response()
    return response["parameters"]["tern.variant"], int(result.as_numpy("label").ravel()[0]), response


def api(server, method, path, body=None):
    response = requests.request(method, f"{server.http_url}/v2/experiments{path}", data=body)
    return response.status_code, (response.json() if response.headers.get("Content-Type", "").startswith("application/json") else response.text)


def create(server, text):
    status, answer = api(server, "POST", "", text)
    assert status == 200, answer
    return answer


def send_all(server, model, ids, rows, threads=4):
    """Sends row rows[i] with id ids[i] from `threads` clients; returns {id: (variant, label)}."""
    out, lock = {}, threading.Lock()

    def work(part):
        client = httpclient.InferenceServerClient(server.http_address)
        for i in part:
            variant, label, _ = ask(client, model, rows[i], request_id=ids[i])
            with lock:
                out[ids[i]] = (variant, label)

    workers = [threading.Thread(target=work, args=(range(k, len(ids), threads),)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return out


def feedback(server, pairs):
    status, answer = api(server, "POST", "/feedback", json.dumps({"labels": [{"id": i, "label": int(l)} for i, l in pairs]}))
    assert status == 200, answer
    return answer


# ---- splitting and stickiness --------------------------------------------------------------------

def test_experiment_from_a_file_splits_by_weight_and_reproducibly(server):
    client = httpclient.InferenceServerClient(server.http_address)
    # The virtual model looks like a model: ready, metadata of the control.
    assert client.is_model_ready("digits_ab")
    assert [i["name"] for i in client.get_model_metadata("digits_ab")["inputs"]] == ["X"]
    ids = [f"req-{i}" for i in range(1200)]
    seen = send_all(server, "digits_ab", ids, [i % len(ROWS) for i in range(1200)])
    counts = {v: sum(1 for x in seen.values() if x[0] == v) for v in ("control", "weak")}
    # Within 4 standard deviations of 600 (binomial, p = 0.5).
    assert abs(counts["control"] - 600) < 4 * (1200 * 0.25) ** 0.5, counts
    for request_id, (variant, label) in seen.items():
        # An analyst reproduces every assignment offline: murmur3_x86_32("salt:key") mod 10000.
        bucket = mmh3.hash(f"digits_ab:{request_id}", 0, signed=False) % 10000
        assert variant == ("control" if bucket < 5000 else "weak"), request_id
        row = int(request_id.split("-")[1]) % len(ROWS)
        assert label == (GOOD[row] if variant == "control" else WEAK[row])
    # The same key always gets the same variant.
    for request_id in ids[:30]:
        assert ask(client, "digits_ab", 0, request_id=request_id)[0] == seen[request_id][0]


def test_routing_by_a_header_keeps_each_device_on_one_variant(server):
    create(server, """
name: digits_devices
routing_key: header:X-Device-Id
hash: fnv1a
variants: [ { name: a, model: digits_mlp, weight: 50 }, { name: b, model: digits_logreg, weight: 50 } ]
""")
    client = httpclient.InferenceServerClient(server.http_address)
    chosen = {}
    for device in range(40):
        variants = {ask(client, "digits_devices", i, request_id=f"d{device}-{i}", headers={"X-Device-Id": f"device-{device}"})[0] for i in range(5)}
        assert len(variants) == 1
        chosen[device] = variants.pop()
        # FNV-1a 32 of "salt:key", as GrowthBook-style tools compute it.
        h = 0x811C9DC5
        for byte in f"digits_devices:device-{device}".encode():
            h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
        assert chosen[device] == ("a" if h % 10000 < 5000 else "b")
    assert set(chosen.values()) == {"a", "b"}
    # Over gRPC the metadata key does the same.
    grpc = grpcclient.InferenceServerClient(server.grpc_address)
    for device in range(10):
        x = grpcclient.InferInput("X", [1, 64], "FP32")
        x.set_data_from_numpy(ROWS[:1])
        result = grpc.infer("digits_devices", [x], request_id=f"g{device}", headers={"x-device-id": f"device-{device}"})
        assert result.get_response().parameters["tern.variant"].string_param == chosen[device]
    # Without the key, requests are still served (assigned at random).
    assert ask(client, "digits_devices", 0)[0] in ("a", "b")


def test_bad_experiments_and_requests_get_clear_errors(server):
    status, answer = api(server, "POST", "", "name: x\nvariants: [ { name: a, model: digits_mlp, weight: 1 } ]")
    assert status == 400 and "two or more variants" in answer["error"]
    status, answer = api(server, "POST", "", "name: y\nvariants: [ { name: a, model: digits_mlp, weight: 1 }, { name: b, model: nope, weight: 1 } ]")
    assert status == 400 and "nope" in answer["error"]
    status, answer = api(server, "POST", "", "name: digits_mlp\nvariants: [ { name: a, model: digits_mlp, weight: 1 }, { name: b, model: digits_weak, weight: 1 } ]")
    assert status == 400 and "repository" in answer["error"]
    status, answer = api(server, "POST", "", FILE_EXPERIMENT.replace("variants", "name: digits_ab\nvariants"))
    assert status == 400 and "exists" in answer["error"]
    assert api(server, "GET", "/nope")[0] == 404
    status, answer = api(server, "POST", "/feedback", "{}")
    assert status == 400
    # A bad tensor sent to the experiment is the variant's 400; the server keeps serving.
    client = httpclient.InferenceServerClient(server.http_address)
    bad = httpclient.InferInput("X", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(Exception) as error:
        client.infer("digits_ab", [bad])
    assert "400" in str(error.value) or "expected" in str(error.value)
    assert ask(client, "digits_ab", 1, request_id="after-bad")[0] in ("control", "weak")


# ---- feedback, statistics, guardrails ------------------------------------------------------------

def test_feedback_accuracy_report_and_guardrail_stop(server, tmp_path):
    create(server, """
name: digits_guarded
variants: [ { name: control, model: digits_mlp, weight: 50 }, { name: weak, model: digits_weak, weight: 50 } ]
guardrails: { alpha: 0.01, min_samples: 150, min_labels: 150, max_accuracy_drop: 0.05, check_interval_s: 0.5 }
""")
    n = len(ROWS)
    ids = [f"g-{i}" for i in range(n)]
    seen = send_all(server, "digits_guarded", ids, list(range(n)))
    answer = feedback(server, [(ids[i], LABELS[i]) for i in range(n)])
    assert answer["matched"] == n
    report = api(server, "GET", "/digits_guarded/report")[1]
    variants = {v["name"]: v for v in report["variants"]}
    for name, predicted in (("control", GOOD), ("weak", WEAK)):
        mine = [i for i in range(n) if seen[ids[i]][0] == name]
        expected = float(np.mean(predicted[mine] == LABELS[mine]))
        assert variants[name]["labelled"] == len(mine)
        assert abs(variants[name]["accuracy"] - expected) < 1e-9, (name, variants[name]["accuracy"], expected)
        low, high = stats.binomtest(int(round(expected * len(mine))), len(mine)).proportion_ci(method="wilson")
        assert abs(variants[name]["accuracyCI95"][0] - low) < 1e-9 and abs(variants[name]["accuracyCI95"][1] - high) < 1e-9
    assert variants["control"]["accuracy"] > 0.9 and variants["weak"]["accuracy"] < 0.6
    comparison = report["comparisons"][0]
    assert comparison["accuracy"]["p"] < 0.01
    # The same numbers from scipy, on the rows the server wrote to its SQLite file.
    database = sqlite3.connect(os.path.join(server.repo, "..", f"experiments-{server.http_port}.sqlite"))
    latency = {v: [r[0] / 1000 for r in database.execute(
        "SELECT latency_us FROM ab_requests WHERE experiment = 'digits_guarded' AND variant = ? AND error IS NULL", (v,))] for v in ("control", "weak")}
    u = stats.mannwhitneyu(latency["weak"], latency["control"], method="asymptotic")
    assert abs(comparison["latency"]["p"] - u.pvalue) < 1e-9 and comparison["latency"]["u"] == u.statistic
    correct = {v: sum(1 for i in range(n) if seen[ids[i]][0] == v and seen[ids[i]][1] == LABELS[i]) for v in ("control", "weak")}
    total = {v: variants[v]["labelled"] for v in ("control", "weak")}
    chi2 = stats.chi2_contingency([[correct[v], total[v] - correct[v]] for v in ("control", "weak")], correction=False)
    assert abs(comparison["accuracy"]["p"] - chi2.pvalue) < 1e-9
    srm = stats.chisquare([report["sampleRatio"]["observed"][v] for v in ("control", "weak")])
    assert abs(report["sampleRatio"]["p"] - srm.pvalue) < 1e-9
    # The guardrail stops the experiment: all traffic to the control.
    deadline = time.time() + 10
    while time.time() < deadline and api(server, "GET", "/digits_guarded")[1]["status"] != "stopped":
        time.sleep(0.2)
    status = api(server, "GET", "/digits_guarded")[1]
    assert status["status"] == "stopped" and "accuracy" in status["reason"], status
    client = httpclient.InferenceServerClient(server.http_address)
    assert {ask(client, "digits_guarded", i, request_id=f"after-{i}")[0] for i in range(20)} == {"control"}
    # The HTML report is a self-contained page with the variants and the charts.
    page = requests.get(f"{server.http_url}/v2/experiments/digits_guarded/report?format=html").text
    assert "<svg" in page and "weak" in page and "http" not in page.split("<body>")[1].replace("http://www.w3.org/2000/svg", "")


def test_an_a_a_experiment_rarely_flags_a_difference(server):
    """Twenty A/A experiments (one model, different salts): the accuracy test at alpha = 0.05
    should fire about once; five or more would happen with probability 0.003."""
    n = len(ROWS)
    flagged, stopped = 0, 0
    for seed in range(20):
        name = f"digits_aa_{seed}"
        create(server, f"""
name: {name}
salt: seed-{seed}
variants: [ {{ name: a, model: digits_logreg, weight: 50 }}, {{ name: b, model: digits_logreg, weight: 50 }} ]
guardrails: {{ alpha: 0.01, min_samples: 100, min_labels: 100, max_accuracy_drop: 0.0, max_error_rate_increase: 0.0, check_interval_s: 0.2 }}
""")
        ids = [f"aa{seed}-{i}" for i in range(n)]
        send_all(server, name, ids, list(range(n)))
        feedback(server, [(ids[i], LABELS[i]) for i in range(n)])
        report = api(server, "GET", f"/{name}/report")[1]
        flagged += report["comparisons"][0]["accuracy"]["p"] < 0.05
    time.sleep(1)
    for seed in range(20):
        stopped += api(server, "GET", f"/digits_aa_{seed}")[1]["status"] == "stopped"
        api(server, "DELETE", f"/digits_aa_{seed}")
    assert flagged <= 4, flagged
    assert stopped <= 2, stopped


# ---- shadows, promotion, canaries ----------------------------------------------------------------

def test_shadow_sees_every_request_and_never_answers(server):
    create(server, """
name: digits_shadowed
variants:
  - { name: live, model: digits_mlp, weight: 100 }
  - { name: next, model: digits_logreg, shadow: true }
""")
    n = 200
    ids = [f"s-{i}" for i in range(n)]
    seen = send_all(server, "digits_shadowed", ids, list(range(n)))
    assert {v for v, _ in seen.values()} == {"live"}
    assert all(seen[ids[i]][1] == GOOD[i] for i in range(n))
    feedback(server, [(ids[i], LABELS[i]) for i in range(n)])
    time.sleep(0.3)
    report = api(server, "GET", "/digits_shadowed/report")[1]
    variants = {v["name"]: v for v in report["variants"]}
    assert variants["next"]["shadow"] and variants["next"]["requests"] == n and variants["next"]["labelled"] == n
    logreg = predictions(os.path.join(EXAMPLES, "digits_logreg", "1", "model.onnx"))
    assert abs(variants["next"]["accuracy"] - float(np.mean(logreg[:n] == LABELS[:n]))) < 1e-9


def test_promote_a_version_through_the_lifecycle(tmp_path):
    repo = tmp_path / "models"
    os.makedirs(repo / "digits" / "1")
    os.makedirs(repo / "digits" / "2")
    shutil.copy(os.path.join(FIXTURES, "digits_weak", "1", "model.onnx"), repo / "digits" / "1" / "model.onnx")
    shutil.copy(os.path.join(EXAMPLES, "digits_mlp", "1", "model.onnx"), repo / "digits" / "2" / "model.onnx")
    config = open(os.path.join(EXAMPLES, "digits_mlp", "config.pbtxt")).read().replace('name: "digits_mlp"', 'name: "digits"')
    (repo / "digits" / "config.pbtxt").write_text(config.replace(' label_filename: "labels.txt"', "") + "version_policy: { all: {} }\n")
    server = TernServer(str(repo), "--model-control-mode", "explicit", "--load-model", "digits")
    try:
        create(server, """
name: digits_versions
variants: [ { name: v1, model: digits, version: 1, weight: 50 }, { name: v2, model: digits, version: 2, weight: 50 } ]
""")
        n = 300
        ids = [f"p-{i}" for i in range(n)]
        send_all(server, "digits_versions", ids, list(range(n)))
        feedback(server, [(ids[i], LABELS[i]) for i in range(n)])
        status, answer = api(server, "POST", "/digits_versions/promote", "{}")
        assert status == 200 and answer["status"] == "promoted" and answer["winner"] == "v2", answer
        assert "now serves versions [2]" in answer["reason"]
        # The model itself now serves version 2 (the hot-swap), and the experiment sends everything there.
        client = httpclient.InferenceServerClient(server.http_address)
        x = httpclient.InferInput("X", [1, 64], "FP32")
        x.set_data_from_numpy(ROWS[:1])
        assert client.infer("digits", [x]).get_response()["model_version"] == "2"
        assert {ask(client, "digits_versions", i, request_id=f"after-{i}")[0] for i in range(10)} == {"v2"}
    finally:
        server.stop()


def test_canary_steps_up_while_healthy_and_rolls_back_when_not(server):
    create(server, """
name: digits_canary_good
variants: [ { name: stable, model: digits_mlp, weight: 100 }, { name: canary, model: digits_logreg } ]
guardrails: { min_samples: 20, min_labels: 1000000, check_interval_s: 0.3 }
canary: { step_weight: 20, max_weight: 60, interval_s: 0.6, threshold: 1 }
""")
    create(server, """
name: digits_canary_bad
variants: [ { name: stable, model: digits_mlp, weight: 100 }, { name: canary, model: digits_weak } ]
guardrails: { min_samples: 30, min_labels: 30, max_accuracy_drop: 0.05, check_interval_s: 0.3 }
canary: { step_weight: 30, max_weight: 60, interval_s: 0.6, threshold: 2 }
""")
    stop = threading.Event()
    counter = [0]

    def traffic(name):
        client = httpclient.InferenceServerClient(server.http_address)
        while not stop.is_set():
            i = counter[0] = counter[0] + 1
            row = i % len(ROWS)
            request_id = f"{name}-{i}"
            ask(client, name, row, request_id=request_id)
            feedback(server, [(request_id, LABELS[row])])

    workers = [threading.Thread(target=traffic, args=(name,)) for name in ("digits_canary_good", "digits_canary_bad")]
    for w in workers:
        w.start()
    try:
        weights = []
        deadline = time.time() + 25
        while time.time() < deadline:
            good = api(server, "GET", "/digits_canary_good")[1]
            bad = api(server, "GET", "/digits_canary_bad")[1]
            weights.append(next(v["weight"] for v in good["variants"] if v["name"] == "canary"))
            if good["status"] == "promoted" and bad["status"] == "stopped":
                break
            time.sleep(0.2)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert good["status"] == "promoted" and good["winner"] == "canary", good
    assert sorted(set(weights))[:3] == [20, 40, 60], weights  # stepped 20 → 40 → 60, then promoted
    assert bad["status"] == "stopped" and "rolled back" in bad["reason"], bad
    assert next(v["weight"] for v in bad["variants"] if v["name"] == "canary") == 0
    events = [e["kind"] for e in api(server, "GET", "/digits_canary_bad/report")[1]["events"]]
    assert events.count("canary_check_failed") >= 2


# ---- the metrics store survives kill -9 ----------------------------------------------------------

def test_records_survive_kill_9_with_at_most_the_buffer_lost(tmp_path):
    repo = repository(tmp_path)
    database = str(tmp_path / "ab.sqlite")
    server = TernServer(str(repo), "--experiments-db", database)
    try:
        client = httpclient.InferenceServerClient(server.http_address)
        for i in range(300):
            ask(client, "digits_ab", i % len(ROWS), request_id=f"k-{i}")
        time.sleep(0.5)  # more than the writer's 100 ms interval
        for i in range(300, 400):
            ask(client, "digits_ab", i % len(ROWS), request_id=f"k-{i}")
    finally:
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        server.log.close()
    connection = sqlite3.connect(database)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    written = connection.execute("SELECT COUNT(*) FROM ab_requests WHERE experiment = 'digits_ab'").fetchone()[0]
    # Everything written before the pause is there; of the last burst at most the buffer is lost.
    assert 300 <= written <= 400, written
    ids = {r[0] for r in connection.execute("SELECT request_id FROM ab_requests")}
    assert {f"k-{i}" for i in range(300)} <= ids


# ---- the CLI and the HTML report in a real browser ------------------------------------------------

def test_cli_and_html_report_in_headless_chromium(server, tmp_path):
    port = ["--http-port", str(server.http_port)]
    out = subprocess.run([BINARY, "ab", "list", *port], capture_output=True, text=True, check=True).stdout
    assert "digits_ab: running" in out
    ids = [f"c-{i}" for i in range(200)]
    send_all(server, "digits_ab", ids, list(range(200)))
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\n" + "".join(f"{ids[i]},{LABELS[i]}\n" for i in range(200)))
    out = subprocess.run([BINARY, "ab", "feedback", "--file", str(labels), *port], capture_output=True, text=True, check=True).stdout
    assert "200 labels received, 200" in out
    out = subprocess.run([BINARY, "ab", "report", "digits_ab", *port], capture_output=True, text=True, check=True).stdout
    assert "control" in out and "weak" in out and "accuracy" in out
    page = tmp_path / "report.html"
    subprocess.run([BINARY, "ab", "report", "digits_ab", "--html", str(page), *port], check=True, capture_output=True)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None, "chromium is not installed (make test installs it)"
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", f"file://{page}"],
                         capture_output=True, text=True, timeout=120).stdout
    assert dom.count('<tr class="variant">') == 2 and ">control<" in dom and ">weak<" in dom
    assert 'id="latency-chart"' in dom and 'id="accuracy-chart"' in dom
    shot = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}", "--window-size=1200,900",
                    f"file://{page}"], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000


def test_store_bench_measures_both_shares_of_a_record():
    """`tern ab store-bench` writes every record (queued ones at shutdown, batches of a size that
    leaves a partial INSERT statement) and prints the cost per record of each side."""
    for ids in ([], ["--random-ids"]):
        out = subprocess.run([BINARY, "ab", "store-bench", "--records", "5000", "--batch", "700", *ids],
                             capture_output=True, text=True, check=True, timeout=120).stdout
        assert "written at shutdown: 5000" in out, out
        lines = {line.split(":")[0].strip(): line for line in out.splitlines()}
        for key in ("queue (request path)", "insert (writer)", "feedback"):
            assert float(lines[key].split(":")[1].split("µs")[0]) > 0, out
        # Labels for ids spread over the whole table all find their record.
        assert "(1000 labels, 1000 matched)" in lines["feedback"], out


def test_tern_perf_sends_a_fresh_random_id_with_every_call(server):
    """`tern perf --request-ids random` (the load of clients that set their own ids): every call
    carries a new 32-hex-digit id, and the experiment records each under it."""
    create(server, "name: perf_ids\nvariants: [ { name: a, model: digits_mlp, weight: 50 }, { name: b, model: digits_logreg, weight: 50 } ]")
    subprocess.run([BINARY, "perf", "-m", "perf_ids", "--protocol", "http-binary", "--http-port", str(server.http_port),
                    "--request-ids", "random", "--concurrency-range", "2", "--warmup-seconds", "0", "--measurement-seconds", "0.5",
                    "--input-data", "zero"], capture_output=True, text=True, check=True, timeout=120)
    status, report = api(server, "GET", "/perf_ids/report")
    assert status == 200, report
    database = sqlite3.connect(os.path.join(server.repo, "..", f"experiments-{server.http_port}.sqlite"))
    ids = [r[0] for r in database.execute("SELECT request_id FROM ab_requests WHERE experiment = 'perf_ids'")]
    assert len(ids) > 50 and len(set(ids)) == len(ids), len(ids)
    assert all(len(i) == 32 and all(c in "0123456789abcdef" for c in i) for i in ids), ids[:3]
    assert api(server, "DELETE", "/perf_ids")[0] == 200
    bad = subprocess.run([BINARY, "perf", "-m", "perf_ids", "--protocol", "grpc", "--request-ids", "random"], capture_output=True, text=True)
    assert bad.returncode != 0 and "http-binary or http-json" in bad.stderr, bad.stderr


# ---- the experiments API over gRPC -----------------------------------------------------------------

def experiment_service_messages(tmp_path):
    """The message classes of Protos/experiments.proto, compiled by protoc into a descriptor set (the
    test speaks the published proto, not a copy of it)."""
    from google.protobuf import descriptor_pb2, message_factory
    out = tmp_path / "experiments.desc"
    subprocess.run(["protoc", "-I", os.path.join(ROOT, "Protos"), f"--descriptor_set_out={out}", "experiments.proto"], check=True)
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return {name.split(".")[-1]: cls for name, cls in message_factory.GetMessages(files).items() if name.count(".") == 3}


def test_experiments_api_over_grpc(server, tmp_path):
    import grpc
    messages = experiment_service_messages(tmp_path)
    channel = grpc.insecure_channel(server.grpc_address)

    def call(method, request, reply, **fields):
        stub = channel.unary_unary(f"/tern.experiments.v1.ExperimentService/{method}",
                                   request_serializer=lambda m: m.SerializeToString(), response_deserializer=messages[reply].FromString)
        return stub(messages[request](**fields), timeout=30)

    def code_of(method, request, reply, **fields):
        with pytest.raises(grpc.RpcError) as failure:
            call(method, request, reply, **fields)
        return failure.value.code(), failure.value.details()

    listed = call("ListExperiments", "ListExperimentsRequest", "ListExperimentsResponse").experiments
    file_experiment = next(e for e in listed if e.name == "digits_ab")
    assert [(v.name, v.model, v.weight, v.shadow) for v in file_experiment.variants] == [
        ("control", "digits_mlp", 50, False), ("weak", "digits_weak", 50, False)]
    assert file_experiment.status == "running" and file_experiment.hash == "murmur3" and file_experiment.routing_key == "id"
    assert json.loads(file_experiment.json)["guardrails"]["min_samples"] == 100000

    definition = "name: grpc_ab\nvariants: [ { name: a, model: digits_mlp, weight: 70 }, { name: b, model: digits_logreg, weight: 30 } ]\n"
    created = call("CreateExperiment", "CreateExperimentRequest", "Experiment", definition=definition)
    assert created.name == "grpc_ab" and created.status == "running" and [v.weight for v in created.variants] == [70, 30]
    assert call("GetExperiment", "ExperimentRequest", "Experiment", name="grpc_ab") == created

    # Traffic through the KServe service on the same port, then labels through the experiments service.
    client = grpcclient.InferenceServerClient(server.grpc_address)
    ids = [f"grpc-{i}" for i in range(60)]
    for i, request_id in enumerate(ids):
        x = grpcclient.InferInput("X", [1, 64], "FP32")
        x.set_data_from_numpy(ROWS[i:i + 1])
        client.infer("grpc_ab", [x], request_id=request_id)
    Label = messages["AddFeedbackRequest"].Label
    answer = call("AddFeedback", "AddFeedbackRequest", "AddFeedbackResponse",
                  labels=[Label(id=i, label=str(LABELS[k])) for k, i in enumerate(ids)] + [Label(id="nobody", label="1")])
    assert (answer.received, answer.matched) == (61, 60)

    deadline = time.time() + 10
    while True:  # records reach the store within the writer's flush interval
        report = json.loads(call("GetExperimentReport", "ExperimentReportRequest", "ExperimentReportResponse", name="grpc_ab").json)
        variants = {v["name"]: v for v in report["variants"]}
        if sum(v["requests"] for v in variants.values()) == 60 and sum(v["labelled"] for v in variants.values()) == 60 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert sum(v["requests"] for v in variants.values()) == 60 and sum(v["labelled"] for v in variants.values()) == 60, report
    page = call("GetExperimentReport", "ExperimentReportRequest", "ExperimentReportResponse", name="grpc_ab", format="html").html
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "digits_logreg" in page

    stopped = call("StopExperiment", "StopExperimentRequest", "Experiment", name="grpc_ab", reason="enough data")
    assert stopped.status == "stopped" and stopped.reason == "enough data"
    promoted = call("PromoteExperiment", "PromoteExperimentRequest", "Experiment", name="grpc_ab", variant="b")
    assert promoted.status == "promoted" and promoted.winner == "b"
    assert call("DeleteExperiment", "ExperimentRequest", "DeleteExperimentResponse", name="grpc_ab").name == "grpc_ab"

    # Errors keep their kind; the server keeps serving both services.
    assert code_of("GetExperiment", "ExperimentRequest", "Experiment", name="grpc_ab")[0] == grpc.StatusCode.NOT_FOUND
    assert code_of("CreateExperiment", "CreateExperimentRequest", "Experiment", definition="variants: [")[0] == grpc.StatusCode.INVALID_ARGUMENT
    code, details = code_of("CreateExperiment", "CreateExperimentRequest", "Experiment",
                            definition=definition.replace("grpc_ab", "digits_ab"))
    assert code == grpc.StatusCode.ALREADY_EXISTS, details
    assert code_of("GetExperimentReport", "ExperimentReportRequest", "ExperimentReportResponse", name="digits_ab",
                   format="pdf")[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of("AddFeedback", "AddFeedbackRequest", "AddFeedbackResponse")[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of("Nonsense", "ExperimentRequest", "Experiment")[0] == grpc.StatusCode.UNIMPLEMENTED
    garbage = channel.unary_unary("/tern.experiments.v1.ExperimentService/GetExperiment")
    with pytest.raises(grpc.RpcError) as failure:
        garbage(b"\xff\xff\xff", timeout=30)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert client.is_server_live() and len(call("ListExperiments", "ListExperimentsRequest", "ListExperimentsResponse").experiments) >= 1
