#!/usr/bin/env python3
"""Edge-cloud routing compared on one workload: the 450 held-out digits (a natural mix of easy
and hard inputs), sent one per request by 4 client threads to an "edge" Tern whose cloud is a
second Tern behind an emulated WAN link (each request delayed 20-80 ms, uniform jitter).

  python3 benchmarks/hybrid.py [--tern PATH] [--delay-ms 50] [--jitter-ms 30]

Prints, per route choice (all-edge, all-cloud, cascade, complexity, latency): p50/p99 latency,
accuracy against the labels, requests and bytes sent to the cloud. Writes
benchmarks/results/hybrid.md.
"""
import argparse
import os
import re
import sys
import tempfile
import threading
import time

import numpy as np
import requests
import tritonclient.http as httpclient

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
from compare_triton import ROOT, Server, free_port, tern_binary, write_table  # noqa: E402
from hybrid_helpers import DelayProxy, cloud_repository, edge_repository  # noqa: E402

FIXTURES = os.path.join(ROOT, ".cache", "fixtures")
MODES = [("all-edge", "digits_edge_route"), ("all-cloud", "digits_cloud_route"), ("cascade (max p < 0.9)", "digits_cascade_route"),
         ("complexity (median score)", "digits_complexity_route"), ("latency", "digits_latency_route")]


def start(tern, repo):
    h, g, m = free_port(), free_port(), free_port()
    server = Server("tern", [tern, "serve", "--model-repository", repo, "--host", "127.0.0.1", "--http-port", str(h),
                             "--grpc-port", str(g), "--metrics-port", str(m), "--history-db", "none", "--device-interval", "0"], h, g)
    server.metrics_port = m
    return server


def offloaded_bytes(server, model):
    text = requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
    match = re.search(r'^tern_hybrid_offloaded_bytes_total\{model="' + model + r'"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def run_mode(edge, model, rows, labels, threads=4):
    latencies, correct, clouds = [], [], []
    lock = threading.Lock()
    chunks = np.array_split(np.arange(len(rows)), threads)

    def worker(indices):
        client = httpclient.InferenceServerClient(f"127.0.0.1:{edge.http_port}")
        for i in indices:
            inp = httpclient.InferInput("X", [1, 64], "FP32")
            inp.set_data_from_numpy(rows[i:i + 1])
            start = time.perf_counter()
            result = client.infer(model, [inp])
            elapsed = time.perf_counter() - start
            route = result.get_response().get("parameters", {}).get("tern.route")
            with lock:
                latencies.append(elapsed * 1000)
                correct.append(int(result.as_numpy("label").ravel()[0]) == int(labels[i]))
                clouds.append(route == "cloud")

    before = offloaded_bytes(edge, model)
    workers = [threading.Thread(target=worker, args=(chunk,)) for chunk in chunks]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return dict(p50=float(np.percentile(latencies, 50)), p99=float(np.percentile(latencies, 99)),
                accuracy=100 * float(np.mean(correct)), cloud=int(np.sum(clouds)), bytes=offloaded_bytes(edge, model) - before)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tern")
    parser.add_argument("--delay-ms", type=float, default=50)
    parser.add_argument("--jitter-ms", type=float, default=30)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "hybrid.md"))
    args = parser.parse_args()
    tern = tern_binary(args.tern)
    rows = np.load(os.path.join(FIXTURES, "digits_validation", "X.npy"))
    labels = np.load(os.path.join(FIXTURES, "digits_validation", "labels.npy"))
    work = tempfile.mkdtemp(prefix="tern-hybrid-")
    cloud = start(tern, cloud_repository(os.path.join(work, "cloud")))
    proxy = DelayProxy(cloud.http_port, args.delay_ms, args.jitter_ms)
    # The complexity heuristic's threshold: the workload's median score, so it splits the traffic.
    scores = np.var(rows.astype(np.float64), axis=1) * np.log2(rows.shape[1])
    complexity = float(np.median(scores))
    edge = start(tern, edge_repository(os.path.join(work, "edge"), proxy.port, timeout_ms=2000, complexity=complexity, probe_every=20))
    results = {}
    try:
        run_mode(edge, "digits_latency_route", rows[:40], labels[:40])  # warm both routes and the estimates
        for label, model in MODES:
            results[label] = run_mode(edge, model, rows, labels)
            print(label, results[label], flush=True)
    finally:
        edge.stop()
        proxy.close()
        cloud.stop()
    cloud_bytes = results["all-cloud"]["bytes"] or 1
    lines = [f"{len(rows)} digits, 4 client threads, WAN delay {args.delay_ms:.0f} ± {args.jitter_ms:.0f} ms on the way to the cloud; "
             "edge = logistic regression, cloud = MLP (another Tern).", "",
             "| route choice | p50 ms | p99 ms | accuracy % | to the cloud | bytes to the cloud | ÷ all-cloud bytes |",
             "|---|---|---|---|---|---|---|"]
    for label, _ in MODES:
        r = results[label]
        lines.append(f"| {label} | {r['p50']:.1f} | {r['p99']:.1f} | {r['accuracy']:.1f} | {r['cloud']} | {r['bytes']:.0f} | {r['bytes'] / cloud_bytes:.2f} |")
    cascade, everything = results["cascade (max p < 0.9)"], results["all-cloud"]
    lines += ["", f"Cascade vs all-cloud: accuracy {cascade['accuracy'] - everything['accuracy']:+.1f} points (target ≥ −1), "
              f"bytes {cascade['bytes'] / cloud_bytes:.2f}× (target ≤ 0.30), p99 {cascade['p99']:.1f} vs {everything['p99']:.1f} ms (target lower)."]
    write_table(lines, args.out)


if __name__ == "__main__":
    main()
