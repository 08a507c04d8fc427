#!/usr/bin/env python3
"""Tern on ONNX Runtime's CUDA execution provider against in-process ONNX Runtime on the same GPU,
side by side in one run (scripts/gpu-check.sh brings everything to the GPU machine and calls this).

Checks, each printed PASS / FAIL / SKIP with why:
1. the benchmark models (conv, mlp) load on the CUDA provider from a config.pbtxt with
   `instance_group { kind: KIND_GPU gpus: [0] }` (the model's config says which providers it got);
2. Tern's answers equal in-process ONNX Runtime's on the same provider, within tolerance;
3. CUDA shared memory with a real CUDA IPC handle (CuPy allocates on the GPU, Tern opens the handle);
4. NVML's nv_gpu_* families on the metrics endpoint, with the GPU's UUID;
then the performance table: `tern perf` over gRPC against the server, `tern perf --protocol direct`
(Tern's own in-process binding), and ONNX Runtime's Python API in this process with as many threads
as the client has requests in flight, with the ratios served / in-process.

    python3 benchmarks/gpu_check.py --tern TERN --ort-package DIR --models DIR [--provider cuda|cpu]
"""
import argparse
import base64
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_builds import perf, serve_with  # noqa: E402

RESULTS = []


def report(name, ok, detail=""):
    state = "PASS" if ok is True else "FAIL" if ok is False else "SKIP"
    RESULTS.append((name, state))
    print(f"[{state}] {name}" + (f": {detail}" if detail else ""), flush=True)


def import_onnxruntime(package, provider):
    """ONNX Runtime's Python API from the same wheel Tern's library comes from; on a machine without
    the wheel's Python (a test of this script on the CPU) the installed onnxruntime instead."""
    if package:
        sys.path.insert(0, package)
    try:
        import onnxruntime
        return onnxruntime, "the same wheel" if package else "the installed package"
    except ImportError as error:
        if provider != "cpu" or not package:
            raise
        sys.path.remove(package)
        for name in [m for m in sys.modules if m.startswith("onnxruntime")]:
            del sys.modules[name]
        import onnxruntime
        return onnxruntime, f"the installed onnxruntime {onnxruntime.__version__} ({error})"


def cuda_library_folders():
    """The folders of the CUDA libraries pip installed (nvidia-* packages), which the CUDA provider
    and libcudart need on the loader's path."""
    folders = set()
    for root in sys.path:
        for lib in glob.glob(os.path.join(root, "nvidia", "**", "lib*.so*"), recursive=True):
            folders.add(os.path.dirname(lib))
    return sorted(folders)


def write_repository(models, repo, provider):
    kind = "KIND_GPU gpus: [ 0 ]" if provider == "cuda" else "KIND_CPU"
    shapes = {"conv": ("INPUT", [3, 224, 224], "OUTPUT", [10]), "mlp": ("INPUT", [784], "OUTPUT", [10])}
    for name, (inp, ishape, out, oshape) in shapes.items():
        os.makedirs(os.path.join(repo, name, "1"))
        shutil.copy(os.path.join(models, f"{name}.onnx"), os.path.join(repo, name, "1", "model.onnx"))
        with open(os.path.join(repo, name, "config.pbtxt"), "w") as f:
            f.write(f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: 32\n'
                    f'input [ {{ name: "{inp}" data_type: TYPE_FP32 dims: {ishape} }} ]\n'
                    f'output [ {{ name: "{out}" data_type: TYPE_FP32 dims: {oshape} }} ]\n'
                    f'instance_group [ {{ count: 1 kind: {kind} }} ]\n')
    return shapes


def http(ports, method, path, body=None):
    import urllib.request
    request = urllib.request.Request(f"http://127.0.0.1:{ports[0]}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read().decode()
            return response.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read().decode() or "null")


def served_answer(ports, model, shapes, x):
    inp, _, out, _ = shapes[model]
    status, body = http(ports, "POST", f"/v2/models/{model}/infer", {
        "inputs": [{"name": inp, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
        "outputs": [{"name": out}]})
    if status != 200:
        raise RuntimeError(f"{model}: HTTP {status}: {body}")
    import numpy as np
    return np.array(body["outputs"][0]["data"], dtype=np.float32).reshape(body["outputs"][0]["shape"])


def in_process_rate(session, feed, threads, seconds):
    """Requests per second and p50 in microseconds of `threads` threads calling session.run."""
    stop = time.perf_counter() + seconds
    latencies = [[] for _ in range(threads)]

    def work(mine):
        while time.perf_counter() < stop:
            start = time.perf_counter()
            session.run(None, feed)
            mine.append(time.perf_counter() - start)

    for _ in range(20):
        session.run(None, feed)  # warm-up: arenas, cuDNN's algorithm search
    workers = [threading.Thread(target=work, args=(latencies[i],)) for i in range(threads)]
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    every = [v for mine in latencies for v in mine]
    return len(every) / elapsed, statistics.median(every) * 1e6


def direct_rate(tern, repo, model, concurrency, seconds, out, env):
    path = os.path.join(out, f"direct-{model}-{concurrency}.csv")
    subprocess.run([tern, "perf", "-m", model, "--protocol", "direct", "--model-repository", repo, *env["library_args"],
                    "--concurrency-range", f"{concurrency}:{concurrency}:1", "--warmup-seconds", "1",
                    "--measurement-seconds", str(seconds), "--csv", path], check=True, stdout=subprocess.DEVNULL, env=env["env"])
    import csv
    with open(path) as f:
        row = next(csv.DictReader(f))
    return float(row["requests_per_second"]), float(row["p50_us"])


def cuda_shared_memory_check(ports, session, shapes):
    try:
        import cupy
    except ImportError as error:
        report("CUDA shared memory with a real IPC handle", None, f"no CuPy here ({error})")
        return
    import numpy as np
    x = np.random.default_rng(3).random((2, 784), dtype=np.float32)
    device_in = cupy.asarray(x)
    device_out = cupy.zeros((2, 10), dtype=cupy.float32)
    for name, array in (("gpu_in", device_in), ("gpu_out", device_out)):
        handle = cupy.cuda.runtime.ipcGetMemHandle(array.data.ptr)
        status, body = http(ports, "POST", f"/v2/cudasharedmemory/region/{name}/register",
                            {"raw_handle": {"b64": base64.b64encode(bytes(handle)).decode()}, "device_id": 0, "byte_size": array.nbytes})
        if status != 200:
            report("CUDA shared memory with a real IPC handle", False, f"register {name}: HTTP {status} {body}")
            return
    status, body = http(ports, "POST", "/v2/models/mlp/infer", {
        "inputs": [{"name": "INPUT", "shape": [2, 784], "datatype": "FP32",
                    "parameters": {"shared_memory_region": "gpu_in", "shared_memory_byte_size": int(device_in.nbytes)}}],
        "outputs": [{"name": "OUTPUT", "parameters": {"shared_memory_region": "gpu_out", "shared_memory_byte_size": int(device_out.nbytes)}}]})
    cupy.cuda.runtime.deviceSynchronize()
    expected = session.run(None, {"INPUT": x})[0]
    got = cupy.asnumpy(device_out)
    ok = status == 200 and np.allclose(got, expected, rtol=1e-3, atol=1e-4)
    report("CUDA shared memory with a real IPC handle", ok, f"HTTP {status}; max difference {float(np.abs(got - expected).max()):.2e}")
    http(ports, "POST", "/v2/cudasharedmemory/unregister")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tern", required=True)
    parser.add_argument("--ort-package", help="the folder holding the onnxruntime package of the wheel Tern's library comes from")
    parser.add_argument("--models", required=True, help="the folder make_models.py benchmarks wrote conv.onnx and mlp.onnx to")
    parser.add_argument("--provider", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--out", default=tempfile.gettempdir())
    args = parser.parse_args()
    import numpy as np
    onnxruntime, source = import_onnxruntime(args.ort_package, args.provider)
    if args.provider == "cuda" and hasattr(onnxruntime, "preload_dlls"):
        onnxruntime.preload_dlls()
    print(f"in-process ONNX Runtime {onnxruntime.__version__} from {source}: {onnxruntime.get_available_providers()}")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if args.provider == "cuda" else ["CPUExecutionProvider"]
    if providers[0] not in onnxruntime.get_available_providers():
        report(f"{providers[0]} in the wheel", False, "not offered")
        sys.exit(1)
    if args.provider == "cuda":
        print(subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip())
    folders = cuda_library_folders()
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(folders + [os.environ.get("LD_LIBRARY_PATH", "")]))
    libraries = glob.glob(os.path.join(args.ort_package or "", "onnxruntime", "capi", "libonnxruntime.so.*")) if args.ort_package else []
    library_args = ["--onnxruntime-library", libraries[0]] if libraries else []
    cudart = sorted(glob.glob(os.path.join(f, "libcudart.so.*")) for f in folders)
    cudart = [path for paths in cudart for path in paths]
    serve_extra = library_args + ["--allow-client-shm"] + (["--cuda-runtime-library", cudart[0]] if cudart else [])
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as state:
        repo = os.path.join(state, "models")
        shapes = write_repository(args.models, repo, args.provider)
        os.environ["LD_LIBRARY_PATH"] = env["LD_LIBRARY_PATH"]  # serve_with starts tern with this environment
        process, ports = serve_with(args.tern, repo, state, serve_extra)
        try:
            sessions = {}
            for model in shapes:
                options = onnxruntime.SessionOptions()
                sessions[model] = onnxruntime.InferenceSession(os.path.join(args.models, f"{model}.onnx"), options, providers=providers)
                status, config = http(ports, "GET", f"/v2/models/{model}/config")
                got = (config or {}).get("parameters", {}).get("tern.execution_providers", {}).get("string_value", "")
                report(f"{model} loads on {providers[0]}", status == 200 and got.split(",")[0] == providers[0], f"tern.execution_providers = {got!r}")
                inp, ishape, _, _ = shapes[model]
                x = np.random.default_rng(1).random([2] + ishape, dtype=np.float32)
                served = served_answer(ports, model, shapes, x)
                expected = sessions[model].run(None, {inp: x})[0]
                report(f"{model}: Tern's answer equals in-process ONNX Runtime's", bool(np.allclose(served, expected, rtol=1e-3, atol=1e-4)),
                       f"max difference {float(np.abs(served - expected).max()):.2e}")
            if args.provider == "cuda":
                cuda_shared_memory_check(ports, sessions["mlp"], shapes)
                status, _ = http(ports, "GET", "/v2")
                import urllib.request
                metrics = urllib.request.urlopen(f"http://127.0.0.1:{ports[2]}/metrics", timeout=30).read().decode()
                lines = [line for line in metrics.splitlines() if line.startswith("nv_gpu_memory_used_bytes{")]
                report("NVML's nv_gpu_* families on /metrics", bool(lines) and "gpu_uuid=\"GPU-" in lines[0], lines[0] if lines else "none")
            else:
                report("CUDA shared memory with a real IPC handle", None, "the CPU provider was asked for")
            for model in shapes:
                inp, ishape, _, _ = shapes[model]
                feed = {inp: np.random.default_rng(2).random([1] + ishape, dtype=np.float32)}
                for concurrency in concurrencies:
                    served_rps, served_p50 = perf(args.tern, ports, "grpc", concurrency, args.seconds, state, model=model)
                    python_rps, python_p50 = in_process_rate(sessions[model], feed, concurrency, args.seconds)
                    rows.append((model, concurrency, served_rps, served_p50, python_rps, python_p50))
        finally:
            process.terminate()
            process.wait(timeout=60)
        direct = {}
        for model in shapes:
            for concurrency in concurrencies:
                direct[(model, concurrency)] = direct_rate(args.tern, repo, model, concurrency, args.seconds, state,
                                                           {"env": env, "library_args": library_args})
    print(f"\nprovider {providers[0]}, batch 1 per request, {args.seconds:g} s per point")
    print("| model | concurrency | served (gRPC) req/s | p50 µs | tern direct req/s | ORT in-process req/s | p50 µs | served ÷ in-process | direct ÷ in-process |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model, concurrency, served_rps, served_p50, python_rps, python_p50 in rows:
        direct_rps, _ = direct[(model, concurrency)]
        print(f"| {model} | {concurrency} | {served_rps:.0f} | {served_p50:.0f} | {direct_rps:.0f} | {python_rps:.0f} | {python_p50:.0f} | "
              f"{served_rps / python_rps:.2f} | {direct_rps / python_rps:.2f} |")
    failed = [name for name, state in RESULTS if state == "FAIL"]
    print(f"\n{len(RESULTS) - len(failed)} of {len(RESULTS)} checks passed or were skipped" + (f"; failed: {failed}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
