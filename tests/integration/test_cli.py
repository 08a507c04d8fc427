"""`tern infer` and `tern perf` against a running server."""
import json
import os
import subprocess

import numpy as np
import requests
from sklearn.datasets import load_digits

from conftest import ROOT

BINARY = os.environ.get("TERN_BIN", os.path.join(ROOT, ".build/debug/tern"))


def test_tern_infer_prints_the_outputs(server, tmp_path):
    x, y = load_digits(return_X_y=True)
    path = tmp_path / "digits.npy"
    np.save(path, x[:3].astype(np.float32))
    for protocol, port in (("http", ["--http-port", str(server.http_port)]), ("grpc", ["--grpc-port", str(server.grpc_port)])):
        out = subprocess.run([BINARY, "infer", "-m", "digits_mlp", "--input", f"X={path}", "--output", "label",
                              "--protocol", protocol, "--host", "127.0.0.1", *port],
                             capture_output=True, text=True, check=True).stdout
        result = json.loads(out)
        assert result["outputs"][0]["name"] == "label" and result["outputs"][0]["shape"] == [3, 1]
        assert result["outputs"][0]["data"] == [int(v) for v in y[:3]]


def test_the_shipped_sample_input_and_classification_without_output(server):
    """`tern infer --help`'s own example works with the shipped input; `--classification` without
    `--output` classifies every output instead of being ignored."""
    sample = os.path.join(ROOT, "examples", "inputs", "digit.json")
    help_text = subprocess.run([BINARY, "infer", "--help"], capture_output=True, text=True, check=True).stdout
    assert "examples/inputs/digit.json" in help_text
    for protocol, port in (("http", ["--http-port", str(server.http_port)]), ("grpc", ["--grpc-port", str(server.grpc_port)])):
        out = subprocess.run([BINARY, "infer", "-m", "digits_mlp", "--input", f"X={sample}", "--classification", "2",
                              "--protocol", protocol, *port], capture_output=True, text=True, check=True).stdout
        outputs = {o["name"]: o for o in json.loads(out)["outputs"]}
        assert set(outputs) == {"label", "probabilities"}
        top = outputs["probabilities"]
        assert top["datatype"] == "BYTES" and top["shape"] == [1, 2], top
        assert top["data"][0].endswith(":0:0") or top["data"][0].split(":")[1] == "0", top  # the sample is a zero


def test_cli_errors_are_one_clear_line(server):
    """A refused connection names the address and asks whether a server runs there; a usage error
    found while running points at the subcommand's help; every message starts with `Error:`."""
    for args in (["infer", "-m", "x", "--http-port", "1"], ["infer", "-m", "x", "--protocol", "grpc", "--grpc-port", "1"],
                 ["model", "status", "--http-port", "1"], ["perf", "-m", "x", "--http-port", "1"]):
        out = subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode != 0
        assert out.stderr.strip().splitlines()[-1] == "Error: cannot connect to 127.0.0.1:1 (Connection refused) — is `tern serve` running there?", out.stderr
    out = subprocess.run([BINARY, "infer", "-m", "x", "--protocol", "smoke-signals"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 64 and "See 'tern infer --help'" in out.stderr and out.stderr.startswith("Error: "), out.stderr
    out = subprocess.run([BINARY, "model", "status", "nope", "--http-port", str(server.http_port)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stderr.startswith("Error: ") and "(HTTP 404)" in out.stderr, out.stderr


def test_tern_perf_measures_every_protocol(server, tmp_path):
    csv = tmp_path / "perf.csv"
    out = subprocess.run([BINARY, "perf", "-m", "add_sub", "--model-repository", server.repo, "--host", "127.0.0.1",
                          "--http-port", str(server.http_port), "--grpc-port", str(server.grpc_port),
                          "--concurrency-range", "1:2:1", "--warmup-seconds", "0.2", "--measurement-seconds", "0.5",
                          "--csv", str(csv)], capture_output=True, text=True, check=True).stdout
    rows = [line.split(",") for line in csv.read_text().splitlines()[1:]]
    modes = {(r[0], int(r[1])) for r in rows}
    assert modes == {(m, c) for m in ("direct", "in-process", "http-binary", "http-json", "grpc") for c in (1, 2)}
    for row in rows:
        assert float(row[3]) > 0 and int(row[9]) == 0, row      # throughput measured, no errors
        assert int(row[5]) <= int(row[6]) <= int(row[7]) <= int(row[8])  # p50 <= p90 <= p95 <= p99
    assert "| http-binary | 1 |" in out


def test_tern_perf_fixed_request_rate(server, tmp_path):
    csv = tmp_path / "rate.csv"
    subprocess.run([BINARY, "perf", "-m", "add_sub", "--protocol", "http-binary", "--host", "127.0.0.1",
                    "--http-port", str(server.http_port), "--request-rate", "100", "--max-outstanding", "2",
                    "--warmup-seconds", "0.2", "--measurement-seconds", "1", "--csv", str(csv)],
                   capture_output=True, text=True, check=True)
    (row,) = [line.split(",") for line in csv.read_text().splitlines()[1:]]
    assert row[0] == "http-binary" and int(row[9]) == 0
    # An open loop sends what was scheduled, never more: at most the rate (plus the last tick).
    assert 0 < float(row[3]) <= 102


def test_tern_perf_large_tensors_over_every_wire(server, tmp_path):
    # 20 MB each way: more than one HTTP/2 frame and more than the server's 16 MiB flow-control
    # window, so perf's gRPC client must wait for WINDOW_UPDATE frames.
    csv = tmp_path / "large.csv"
    subprocess.run([BINARY, "perf", "-m", "identity_fp32", "--shape", "INPUT0:5000000", "--host", "127.0.0.1",
                    "--protocol", "grpc", "--protocol", "http-binary",
                    "--http-port", str(server.http_port), "--grpc-port", str(server.grpc_port),
                    "--warmup-seconds", "0", "--measurement-seconds", "1", "--csv", str(csv)],
                   capture_output=True, text=True, check=True, timeout=120)
    rows = [line.split(",") for line in csv.read_text().splitlines()[1:]]
    assert {r[0] for r in rows} == {"grpc", "http-binary"}
    for row in rows:
        assert int(row[9]) == 0 and float(row[3]) > 0, row


def test_tern_perf_counts_rejected_requests(server, tmp_path):
    # add_sub takes FP32[16]: a shape of 17 is answered 400 / INVALID_ARGUMENT every time.
    csv = tmp_path / "errors.csv"
    out = subprocess.run([BINARY, "perf", "-m", "add_sub", "--shape", "INPUT0:17", "--shape", "INPUT1:17",
                          "--host", "127.0.0.1", "--protocol", "grpc", "--protocol", "http-binary",
                          "--http-port", str(server.http_port), "--grpc-port", str(server.grpc_port),
                          "--warmup-seconds", "0", "--measurement-seconds", "0.5", "--csv", str(csv)],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split(",") for line in csv.read_text().splitlines()[1:]]
    for row in rows:
        assert int(row[9]) > 0 and float(row[3]) == 0, row
    assert "grpc-status 3" in out and "HTTP 400" in out
    assert "unexpected shape for input 'INPUT0'" in out


def test_tern_perf_rejects_shape_of_unknown_input(server):
    result = subprocess.run([BINARY, "perf", "-m", "add_sub", "--shape", "NOPE:3", "--protocol", "http-binary",
                             "--host", "127.0.0.1", "--http-port", str(server.http_port)],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "no such input" in result.stderr


def test_tern_perf_multiplexes_grpc_calls_and_replays_a_rate_schedule(server, tmp_path):
    # 6 gRPC calls in flight over 2 connections (3 HTTP/2 streams each).
    csv = tmp_path / "mux.csv"
    subprocess.run([BINARY, "perf", "-m", "add_sub", "--protocol", "grpc", "--host", "127.0.0.1",
                    "--grpc-port", str(server.grpc_port), "--concurrency-range", "6", "--grpc-connections", "2",
                    "--warmup-seconds", "0.2", "--measurement-seconds", "0.5", "--csv", str(csv)],
                   capture_output=True, text=True, check=True)
    (row,) = [line.split(",") for line in csv.read_text().splitlines()[1:]]
    assert row[1] == "6" and float(row[3]) > 0 and int(row[9]) == 0
    # A two-phase open-loop trace: 40/s for 0.5 s then 120/s for 0.5 s = 20 + 60 requests in 1 s.
    csv = tmp_path / "schedule.csv"
    subprocess.run([BINARY, "perf", "-m", "add_sub", "--protocol", "http-binary", "--host", "127.0.0.1",
                    "--http-port", str(server.http_port), "--request-rate-schedule", "40:0.5,120:0.5",
                    "--max-outstanding", "2", "--warmup-seconds", "0", "--csv", str(csv)],
                   capture_output=True, text=True, check=True)
    (row,) = [line.split(",") for line in csv.read_text().splitlines()[1:]]
    assert int(row[9]) == 0 and 70 <= float(row[3]) <= 82, row


def test_tern_perf_through_system_shared_memory(shm_server, tmp_path):
    """Inputs and outputs travel through shared memory on every wire (gRPC at 6 also over the
    multiplexed connections); the regions are unregistered and removed afterwards. (Client shared
    memory is off unless the server is started with --allow-client-shm.)"""
    server = shm_server
    csv = tmp_path / "shm.csv"
    common = [BINARY, "perf", "-m", "add_sub", "--host", "127.0.0.1", "--http-port", str(server.http_port),
              "--grpc-port", str(server.grpc_port), "--shared-memory", "system", "--warmup-seconds", "0.1",
              "--measurement-seconds", "0.4"]
    subprocess.run([*common, "--protocol", "http-binary", "--protocol", "http-json", "--protocol", "grpc",
                    "--concurrency-range", "1:6:5", "--csv", str(csv)], capture_output=True, text=True, check=True, timeout=120)
    rows = [line.split(",") for line in csv.read_text().splitlines()[1:]]
    assert {(r[0], int(r[1])) for r in rows} == {(m, c) for m in ("http-binary", "http-json", "grpc") for c in (1, 6)}
    for row in rows:
        assert float(row[3]) > 0 and int(row[9]) == 0, row
    # Outputs really go to the region: one too small for add_sub's 64-byte outputs is refused.
    out = subprocess.run([*common, "--protocol", "grpc", "--output-shared-memory-size", "32"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert "should be at least 64 bytes" in out
    assert [k for k in os.listdir("/dev/shm") if k.startswith("tern-perf-")] == []
    assert requests.get(f"{server.http_url}/v2/systemsharedmemory/status").json() == []


def test_tern_perf_paired_runs(server, tmp_path):
    for option in (["--paired-with-direct", "--model-repository", server.repo], ["--paired-with-model", "add_sub"]):
        csv = tmp_path / "paired.csv"
        subprocess.run([BINARY, "perf", "-m", "add_sub", "--protocol", "http-binary", "--host", "127.0.0.1",
                        "--http-port", str(server.http_port), *option, "--pairs", "3", "--slice-seconds", "0.2",
                        "--warmup-seconds", "0.1", "--concurrency-range", "2", "--csv", str(csv)],
                       capture_output=True, text=True, check=True, timeout=120)
        (row,) = [dict(zip(csv.read_text().splitlines()[0].split(","), line.split(","))) for line in csv.read_text().splitlines()[1:]]
        assert int(row["pairs"]) == 3 and int(row["errors"]) == 0, row
        assert float(row["served_per_second"]) > 0 and float(row["direct_per_second"]) > 0, row
        assert 0 < float(row["ratio_mean"]) and int(row["served_p50_us"]) <= int(row["served_p99_us"]), row


def test_tern_perf_paired_runs_count_server_cpu_per_call(server, tmp_path):
    """--server-pid reads the server's CPU time around each slice (after a settle period, so the
    work a slice leaves behind is counted in it): both sides cost the server some CPU per call."""
    csv = tmp_path / "paired.csv"
    out = subprocess.run([BINARY, "perf", "-m", "add_sub", "--protocol", "http-binary", "--host", "127.0.0.1",
                          "--http-port", str(server.http_port), "--paired-with-model", "add_sub", "--pairs", "3",
                          "--slice-seconds", "0.2", "--settle-seconds", "0.05", "--warmup-seconds", "0.1", "--concurrency-range", "2",
                          "--server-pid", str(server.process.pid), "--csv", str(csv)],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    (row,) = [dict(zip(csv.read_text().splitlines()[0].split(","), line.split(","))) for line in csv.read_text().splitlines()[1:]]
    served, base = float(row["served_cpu_us"]), float(row["base_cpu_us"])
    # The same model on both sides: tens of µs per call each, within a factor of two of each other.
    assert 1 < served < 5000 and 1 < base < 5000 and 0.5 < served / base < 2, row
    assert "server CPU per call" in out
    missing = subprocess.run([BINARY, "perf", "-m", "add_sub", "--http-port", str(server.http_port), "--paired-with-model", "add_sub",
                              "--server-pid", "999999999"], capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "999999999" in missing.stderr
    direct = subprocess.run([BINARY, "perf", "-m", "add_sub", "--http-port", str(server.http_port), "--paired-with-direct",
                             "--model-repository", server.repo, "--server-pid", str(server.process.pid)],
                            capture_output=True, text=True, timeout=60)
    assert direct.returncode != 0 and "--paired-with-model" in direct.stderr
