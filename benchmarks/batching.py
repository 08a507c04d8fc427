#!/usr/bin/env python3
"""Dynamic batching on and off, measured with `tern perf` over gRPC in one run.

Two models (scripts/make_models.py benchmarks): a memory-bound 784-1024-1024-10 MLP
(max_batch_size 32, one instance, one ONNX Runtime thread) and a compute-bound conv net
(~8 ms per image on one core; max_batch_size 8, two instances of one thread). Each is served with
and without `dynamic_batching`, and loaded at each concurrency. For every point the script reads
the average executed batch size from the model's statistics and runs the same batch size through
ONNX Runtime directly in-process (`tern perf --protocol direct`, same session settings and
instance count), so the last column says how close serving comes to the model's own speed.
Served and direct runs alternate (--rounds, default 3) and the table shows medians, the ratio
being the median of the rounds' ratios: on a shared machine the speed drifts by ±10 % from one
minute to the next, which a single served run against a single direct run cannot tell apart.
With --triton it also serves the MLP from real Triton 2.51 (python backend running the batch
Triton's dynamic batcher forms as one onnxruntime call) and compares saturated throughput.
With --shared-memory system the client passes inputs and outputs through POSIX shared memory
registered with the server (Triton's system shared-memory extension, as perf_analyzer's
`--shared-memory system`): what a camera process on the same device would do, with no tensor
bytes on the socket. With --paired, the rows without batching are measured by `tern perf
--paired-with-direct` instead: served and direct calls alternate in half-second slices inside one
process (--pairs of them per point), and the ratio is the mean over pairs with its 95 % confidence
interval — separate runs of a few seconds cannot resolve 5 % on a machine that drifts by ±20 %.

  python3 benchmarks/batching.py [--seconds 3] [--rounds 3] [--concurrency 1,4,16,64] [--protocol grpc|http-binary]
                                 [--shared-memory none|system] [--paired [--pairs 30]] [--models mlp,conv] [--triton]
                                 [--out benchmarks/results/batching.md]
"""
import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_triton import triton_env, ROOT, Server, tern_binary, write_table, ensure_triton, free_port  # noqa: E402

MODELS = {
    # One ONNX Runtime thread for the MLP: the gRPC frontend needs the other core at these rates.
    "mlp": dict(file="mlp.onnx", max_batch=32, dims_in=[784], instances=1, threads=1),
    "conv": dict(file="conv.onnx", max_batch=8, dims_in=[3, 224, 224], instances=2, threads=1),
}


def config(name, model, dynamic):
    spec = MODELS[model]
    text = (f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: {spec["max_batch"]}\n'
            f'input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: {spec["dims_in"]} }} ]\n'
            'output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 10 ] } ]\n'
            f'instance_group [ {{ count: {spec["instances"]} kind: KIND_CPU }} ]\n'
            f'parameters {{ key: "intra_op_thread_count" value: {{ string_value: "{spec["threads"]}" }} }}\n')
    if dynamic:
        text += "dynamic_batching { max_queue_delay_microseconds: 100 }\n"
    return text


def stats(http_port, model):
    s = requests.get(f"http://127.0.0.1:{http_port}/v2/models/{model}/stats").json()["model_stats"][0]
    return int(s["inference_count"]), int(s["execution_count"])


def perf(tern, args, csv_path):
    subprocess.run([tern, "perf", *args, "--csv", csv_path], check=True, capture_output=True, text=True)
    with open(csv_path) as f:
        return list(csv.DictReader(f))[0]


def check_mlp_answer(server, onnx_path):
    """Triton's MLP answer equals onnxruntime's (its python stub and numpy 2 disagree otherwise)."""
    import numpy as np
    import onnxruntime as ort
    import tritonclient.http as httpclient
    session = ort.InferenceSession(onnx_path)
    name = session.get_inputs()[0].name
    x = np.random.rand(2, 784).astype(np.float32)
    expected = session.run(None, {name: x})[0]
    inp = httpclient.InferInput("INPUT", [2, 784], "FP32")
    inp.set_data_from_numpy(x)
    got = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}").infer("mlp", [inp]).as_numpy("OUTPUT")
    if got is None or not np.allclose(got, expected, atol=1e-4):
        raise RuntimeError(f"{server.name} answers the MLP wrongly")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="served/direct alternations per point (medians)")
    parser.add_argument("--protocol", default="grpc", choices=["grpc", "http-binary"])
    parser.add_argument("--shared-memory", default="none", choices=["none", "system"])
    parser.add_argument("--models", default="mlp,conv", help="which of mlp, conv to measure")
    parser.add_argument("--paired", action="store_true", help="rows without batching: served and direct in alternating slices")
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--triton", action="store_true", help="also serve the MLP from real Triton 2.51")
    parser.add_argument("--tern", default=None)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks/results/batching.md"))
    args = parser.parse_args()
    tern = tern_binary(args.tern)
    models_dir = os.path.join(ROOT, ".cache", "bench")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts/make_models.py"), "benchmarks", models_dir], check=True)

    work = tempfile.mkdtemp(prefix="tern-batching-")
    repo = os.path.join(work, "models")
    for model, spec in MODELS.items():
        for dynamic in (False, True):
            name = f"{model}_{'dynamic' if dynamic else 'none'}"
            os.makedirs(os.path.join(repo, name, "1"))
            shutil.copy(os.path.join(models_dir, spec["file"]), os.path.join(repo, name, "1", "model.onnx"))
            with open(os.path.join(repo, name, "config.pbtxt"), "w") as f:
                f.write(config(name, model, dynamic))

    concurrencies = [int(c) for c in args.concurrency.split(",")]
    timing = ["--warmup-seconds", "1", "--measurement-seconds", str(args.seconds)]
    h, g, m = free_port(), free_port(), free_port()
    server = Server("tern", [tern, "serve", "--model-repository", repo, "--host", "127.0.0.1", "--http-port", str(h),
                             "--grpc-port", str(g), "--metrics-port", str(m),
                             # tern perf --shared-memory registers regions: the server must allow it.
                             *(["--allow-client-shm"] if args.shared_memory == "system" else [])], h, g)
    rows, saturated = [], {}
    measured = [m for m in MODELS if m in args.models.split(",")]
    shm = ["--shared-memory", "system"] if args.shared_memory == "system" else []
    median = statistics.median
    try:
        for model in measured:
            spec = MODELS[model]
            for mode in ("none", "dynamic"):
                name = f"{model}_{mode}"
                for c in concurrencies:
                    if args.paired and mode == "none":
                        row = perf(tern, ["-m", name, "--protocol", args.protocol, "--grpc-port", str(g), "--http-port", str(h),
                                          "--model-repository", repo, "--paired-with-direct", "--pairs", str(args.pairs),
                                          "--concurrency-range", str(c), *shm, "--warmup-seconds", "1"], os.path.join(work, "p.csv"))
                        served, direct = float(row["served_per_second"]), float(row["direct_per_second"])
                        ratio = f"{float(row['ratio_mean']):.3f} ± {float(row['ratio_ci95']):.3f}"
                        rows.append((model, mode, c, served, int(row["served_p50_us"]), int(row["served_p99_us"]), int(row["errors"]), 1.0, direct, ratio))
                        saturated[(model, mode)] = max(saturated.get((model, mode), 0), served)
                        print(f"{name} c={c}: {served:.0f} infer/s, direct {direct:.0f} infer/s, ratio {ratio} "
                              f"(median {float(row['ratio_median']):.3f}, {row['pairs']} pairs)", flush=True)
                        continue
                    rounds = []
                    for _ in range(args.rounds):
                        before = stats(h, name)
                        row = perf(tern, ["-m", name, "--protocol", args.protocol, "--grpc-port", str(g), "--http-port", str(h),
                                          "--concurrency-range", str(c), *shm, *timing], os.path.join(work, "p.csv"))
                        after = stats(h, name)
                        executions = max(after[1] - before[1], 1)
                        batch = (after[0] - before[0]) / executions
                        b = max(1, round(batch))
                        # ONNX Runtime with as many calls at once as the server could run (its instances).
                        k = min(c, spec["instances"])
                        d = perf(tern, ["-m", name, "--protocol", "direct", "--model-repository", repo, "-b", str(b),
                                        "--concurrency-range", str(k), *timing], os.path.join(work, "d.csv"))
                        served, direct = float(row["inferences_per_second"]), float(d["inferences_per_second"])
                        rounds.append((served, int(row["p50_us"]), int(row["p99_us"]), int(row["errors"]), batch, direct, served / direct))
                    served = median(r[0] for r in rounds)
                    direct = median(r[5] for r in rounds)
                    ratio = median(r[6] for r in rounds)
                    batch = median(r[4] for r in rounds)
                    rows.append((model, mode, c, served, int(median(r[1] for r in rounds)), int(median(r[2] for r in rounds)),
                                 sum(r[3] for r in rounds), batch, direct, ratio))
                    saturated[(model, mode)] = max(saturated.get((model, mode), 0), served)
                    print(f"{name} c={c}: {served:.0f} infer/s, mean batch {batch:.1f}, direct {direct:.0f} infer/s, "
                          f"ratio {ratio:.2f} (rounds: {', '.join(f'{r[6]:.2f}' for r in rounds)})", flush=True)
    finally:
        server.stop()

    triton_rps = None
    if args.triton:
        triton_root = ensure_triton()
        triton_repo = os.path.join(work, "triton")
        os.makedirs(os.path.join(triton_repo, "mlp", "1"))
        shutil.copy(os.path.join(models_dir, "mlp.onnx"), os.path.join(triton_repo, "mlp", "1", "model.onnx"))
        shutil.copy(os.path.join(ROOT, "benchmarks/triton_batching_model.py"), os.path.join(triton_repo, "mlp", "1", "model.py"))
        with open(os.path.join(triton_repo, "mlp", "config.pbtxt"), "w") as f:
            f.write(config("mlp", "mlp", True).replace('backend: "onnxruntime"', 'backend: "python"'))
        h, g, m = free_port(), free_port(), free_port()
        env = dict(triton_env(), TERN_BENCH_THREADS=str(MODELS["mlp"]["threads"]))
        triton = Server("triton", [os.path.join(triton_root, "bin/tritonserver"), "--model-repository", triton_repo,
                                   "--backend-directory", os.path.join(triton_root, "backends"), "--http-port", str(h),
                                   "--grpc-port", str(g), "--metrics-port", str(m)], h, g, env)
        try:
            check_mlp_answer(triton, os.path.join(models_dir, "mlp.onnx"))
            c = max(concurrencies)
            row = perf(tern, ["-m", "mlp", "--protocol", args.protocol, "--grpc-port", str(g), "--http-port", str(h),
                              "--concurrency-range", str(c), *timing], os.path.join(work, "t.csv"))
            triton_rps = float(row["inferences_per_second"])
            print(f"triton mlp c={c}: {triton_rps:.0f} infer/s p50 {row['p50_us']} µs p99 {row['p99_us']} µs", flush=True)
        finally:
            triton.stop()

    lines = [f"`tern perf` over {'gRPC' if args.protocol == 'grpc' else 'HTTP with binary tensors'}"
             f"{', tensors in system shared memory' if shm else ''}, {args.seconds:g} s per run, "
             f"{args.rounds} rounds of served and direct runs in turn (medians; ÷ direct is the median of the rounds' ratios), "
             "this 2-core machine; direct = the same batch size through ONNX Runtime in-process with the same sessions."
             + (f" Rows without batching: {args.pairs} pairs of half-second served and direct slices in turn "
                "(`tern perf --paired-with-direct`, one session per direct thread as per instance in the server); "
                "÷ direct = mean ratio ± 95 % CI; latencies are those of the served slices." if args.paired else ""), "",
             "| model | batching | conc | infer/s | p50 µs | p99 µs | errors | mean batch | direct infer/s | ÷ direct |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for model, mode, c, served, p50, p99, errors, batch, direct, ratio in rows:
        shown = ratio if isinstance(ratio, str) else f"{ratio:.2f}"
        lines.append(f"| {model} | {mode} | {c} | {served:.0f} | {p50} | {p99} | {errors} | {batch:.1f} | {direct:.0f} | {shown} |")
    lines.append("")
    for model in measured:
        lines.append(f"- {model}: saturated throughput with dynamic batching ÷ without: "
                     f"{saturated[(model, 'dynamic')] / saturated[(model, 'none')]:.2f}×")
    if triton_rps and "mlp" in measured:
        top = max(concurrencies)
        tern_top = next(r[3] for r in rows if r[0] == "mlp" and r[1] == "dynamic" and r[2] == top)
        lines.append(f"- mlp, dynamic batching, concurrency {top}: Tern ÷ Triton 2.51 (python backend, same batching and "
                     f"load) = {tern_top / triton_rps:.2f}× ({tern_top:.0f} vs {triton_rps:.0f} infer/s)")
    write_table(lines, args.out)


if __name__ == "__main__":
    main()
