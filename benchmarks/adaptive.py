#!/usr/bin/env python3
"""Adaptive batching against fixed dynamic-batching settings on one bursty trace.

The MLP of benchmarks/batching.py is served three ways: "small" (max_batch_size 4, no queue delay),
"large" (max_batch_size 32, 2 ms queue delay) and "adaptive" (tern.adaptive_batching with a p95
target). Each gets the same open-loop gRPC trace from `tern perf --request-rate-schedule`
(quiet and busy phases in turn) and the script prints throughput and latency percentiles.

  python3 benchmarks/adaptive.py [--trace 300:2,4000:2,300:2,4000:2] [--target-ms 8] [--out benchmarks/results/adaptive.md]
"""
import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_triton import ROOT, Server, tern_binary, write_table, free_port  # noqa: E402

BASE = ('max_batch_size: 32\ninput [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 784 ] } ]\n'
        'output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 10 ] } ]\n'
        'instance_group [ { count: 1 kind: KIND_CPU } ]\n'
        'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n')


def configs(target_ms):
    return {
        "small": BASE.replace("max_batch_size: 32", "max_batch_size: 4") + "dynamic_batching { }\n",
        "large": BASE + "dynamic_batching { max_queue_delay_microseconds: 2000 }\n",
        "adaptive": BASE + "dynamic_batching { max_queue_delay_microseconds: 2000 }\n"
        + f'parameters {{ key: "tern.adaptive_batching.target_latency_ms" value: {{ string_value: "{target_ms}" }} }}\n',
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trace", default="300:2,4000:2,300:2,4000:2")
    parser.add_argument("--target-ms", type=float, default=8)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--tern", default=None)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks/results/adaptive.md"))
    args = parser.parse_args()
    tern = tern_binary(args.tern)
    models_dir = os.path.join(ROOT, ".cache", "bench")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts/make_models.py"), "benchmarks", models_dir], check=True)
    work = tempfile.mkdtemp(prefix="tern-adaptive-")
    repo = os.path.join(work, "models")
    for name, text in configs(args.target_ms).items():
        os.makedirs(os.path.join(repo, name, "1"))
        shutil.copy(os.path.join(models_dir, "mlp.onnx"), os.path.join(repo, name, "1", "model.onnx"))
        with open(os.path.join(repo, name, "config.pbtxt"), "w") as f:
            f.write(f'name: "{name}"\nbackend: "onnxruntime"\n' + text)
    h, g, m = free_port(), free_port(), free_port()
    server = Server("tern", [tern, "serve", "--model-repository", repo, "--host", "127.0.0.1", "--http-port", str(h),
                             "--grpc-port", str(g), "--metrics-port", str(m)], h, g)
    rows = []
    try:
        for name in ("small", "large", "adaptive"):
            path = os.path.join(work, f"{name}.csv")
            subprocess.run([tern, "perf", "-m", name, "--protocol", "grpc", "--grpc-port", str(g), "--http-port", str(h),
                            "--request-rate-schedule", args.trace, "--max-outstanding", str(args.workers),
                            "--warmup-seconds", "1", "--csv", path], check=True, capture_output=True, text=True)
            with open(path) as f:
                row = list(csv.DictReader(f))[0]
            rows.append((name, row))
            print(name, row, flush=True)
    finally:
        server.stop()
    lines = [f"MLP, open-loop gRPC trace `{args.trace}` (requests/s : seconds), {args.workers} workers, "
             f"adaptive target p95 {args.target_ms:g} ms.", "",
             "| settings | completed req/s | p50 µs | p95 µs | p99 µs | errors |", "|---|---|---|---|---|---|"]
    for name, r in rows:
        lines.append(f"| {name} | {float(r['requests_per_second']):.0f} | {r['p50_us']} | {r['p95_us']} | {r['p99_us']} | {r['errors']} |")
    write_table(lines, args.out)


if __name__ == "__main__":
    main()
