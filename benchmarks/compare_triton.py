#!/usr/bin/env python3
"""Tern against real NVIDIA Triton 2.51 on this machine, same model, same load tools.

Triton comes from the `nvidia-pytriton==0.7.0` wheel (CPU build, python backend only), so it serves
add_sub/model.onnx from a python-backend model.py running onnxruntime on one thread. Tern serves the
same file with its onnxruntime backend (one instance, one intra-op thread, as in examples/). Load:
`wrk` with a Lua script for HTTP binary, `h2load` for gRPC unary ModelInfer. For each server the
script reports saturated throughput, the server's CPU-seconds per 1000 requests (all its processes),
idle RSS and start-to-ready time, then the ratios.

  python3 benchmarks/compare_triton.py [--seconds 10] [--connections 8] [--rounds 3] [--out benchmarks/results/triton.md]
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache")
TRITON_DIR = os.path.join(CACHE, "triton")


_handed_out = set()


def free_port():
    """A free port not handed out before in this run (two calls may get the same one from the kernel)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def tern_binary(path=None):
    """The tern binary to benchmark: `path`, else the release build (built if needed)."""
    if path:
        return path
    subprocess.run(["swift", "build", "-c", "release", "--product", "tern"], cwd=ROOT, check=True)
    bin_dir = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.strip()
    return os.path.join(bin_dir, "tern")


def write_table(lines, out):
    """Prints the markdown table and writes it to `out`."""
    table = "\n".join(lines)
    print()
    print(table)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(table + "\n")


def ensure_tools():
    missing = [p for p, tool in (("wrk", "wrk"), ("nghttp2-client", "h2load")) if shutil.which(tool) is None]
    if missing:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True)


def ensure_triton():
    server = os.path.join(TRITON_DIR, "pytriton/tritonserver/bin/tritonserver")
    if os.path.exists(server):
        return os.path.dirname(os.path.dirname(server))
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, "nvidia-pytriton==0.7.0"], check=True)
        wheel = next(f for f in os.listdir(tmp) if f.endswith(".whl"))
        with zipfile.ZipFile(os.path.join(tmp, wheel)) as z:
            for member in z.namelist():
                if member.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/")):
                    z.extract(member, TRITON_DIR)
    root = os.path.join(TRITON_DIR, "pytriton/tritonserver")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copy(os.path.join(root, "python_backend_stubs", version, "triton_python_backend_stub"), os.path.join(root, "backends/python/"))
    for path in (os.path.join(root, "bin/tritonserver"), os.path.join(root, "backends/python/triton_python_backend_stub")):
        os.chmod(path, 0o755)
    return root


def triton_env():
    """The environment tritonserver runs in (its python backend needs this Python's libpython).

    Its python backend stub predates numpy 2: `as_numpy()` and `pb_utils.Tensor(name, ndarray)`
    silently give garbage or empty tensors with the numpy 2 installed here, and the stub ignores
    PYTHONPATH, so the Triton models exchange tensors through DLPack (`np.from_dlpack`,
    `pb_utils.Tensor.from_dlpack`), which is correct with both; `check_answer` verifies it."""
    return dict(os.environ, LD_LIBRARY_PATH=os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))) + "/lib")


def process_tree(pid):
    pids, frontier = [pid], [pid]
    while frontier:
        children = []
        for p in frontier:
            try:
                with open(f"/proc/{p}/task/{p}/children") as f:
                    children += [int(c) for c in f.read().split()]
            except OSError:
                pass
        pids += children
        frontier = children
    return pids


def cpu_seconds(pid):
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / ticks


def rss_mb(pid):
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024, len(process_tree(pid))


class Server:
    def __init__(self, name, argv, http_port, grpc_port, env=None):
        self.name, self.http_port, self.grpc_port = name, http_port, grpc_port
        self.log = tempfile.NamedTemporaryFile("w", suffix=f"-{name}.log", delete=False)
        start = time.perf_counter()
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{name} exited: see {self.log.name}")
            try:
                if requests.get(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=0.2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.01)
        self.start_to_ready = time.perf_counter() - start
        time.sleep(1.0)
        self.idle_rss, self.processes = rss_mb(self.process.pid)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def http_body():
    import json
    import numpy as np
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    header = json.dumps({"inputs": [
        {"name": n, "datatype": "FP32", "shape": [1, 16], "parameters": {"binary_data_size": 64}} for n in ("INPUT0", "INPUT1")],
        "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in ("OUTPUT0", "OUTPUT1")]}).encode()
    return header + a.tobytes() * 2, len(header)


def grpc_body():
    import numpy as np
    from tritonclient.grpc import service_pb2
    request = service_pb2.ModelInferRequest(model_name="add_sub")
    for n in ("INPUT0", "INPUT1"):
        request.inputs.add(name=n, datatype="FP32", shape=[1, 16])
        request.raw_input_contents.append(np.arange(16, dtype=np.float32).tobytes())
    payload = request.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def check_answer(server):
    """The server's answer to the benchmark request is right (a + b, a − b): a throughput number for
    a server that answers wrongly (or with empty tensors) means nothing."""
    import numpy as np
    import tritonclient.http as httpclient
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    inputs = [httpclient.InferInput(n, [1, 16], "FP32") for n in ("INPUT0", "INPUT1")]
    for inp in inputs:
        inp.set_data_from_numpy(a)
    result = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}").infer("add_sub", inputs)
    if not (np.array_equal(result.as_numpy("OUTPUT0"), a + a) and np.array_equal(result.as_numpy("OUTPUT1"), a - a)):
        raise RuntimeError(f"{server.name} answers the benchmark request wrongly")


def run_wrk(server, seconds, connections, workdir):
    body, header_length = http_body()
    body_path = os.path.join(workdir, "body.bin")
    with open(body_path, "wb") as f:
        f.write(body)
    script = os.path.join(workdir, "infer.lua")
    with open(script, "w") as f:
        f.write(f'wrk.method = "POST"\nlocal f = io.open("{body_path}", "rb")\nwrk.body = f:read("*all")\nf:close()\n'
                f'wrk.headers["Content-Type"] = "application/octet-stream"\n'
                f'wrk.headers["Inference-Header-Content-Length"] = "{header_length}"\n'
                'function response(status, headers, body) if status ~= 200 then wrk.thread:stop() end end\n')
    cpu0 = cpu_seconds(server.process.pid)
    out = subprocess.run(["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "-s", script,
                          f"http://127.0.0.1:{server.http_port}/v2/models/add_sub/infer"], capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(server.process.pid) - cpu0
    requests_done = int(next(l for l in out.splitlines() if "requests in" in l).split()[0])
    errors = sum(int(l.split(":")[-1].split()[0]) for l in out.splitlines() if "Non-2xx" in l)
    return requests_done / seconds, cpu / max(requests_done, 1) * 1000, errors


def run_h2load(server, seconds, connections, workdir):
    path = os.path.join(workdir, "grpc.bin")
    with open(path, "wb") as f:
        f.write(grpc_body())
    cpu0 = cpu_seconds(server.process.pid)
    out = subprocess.run(["h2load", "-c", "1", "-m", str(connections), "-D", str(seconds), "-d", path,
                          "-H", "content-type: application/grpc", "-H", "te: trailers",
                          f"http://127.0.0.1:{server.grpc_port}/inference.GRPCInferenceService/ModelInfer"],
                         capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(server.process.pid) - cpu0
    line = next(l for l in out.splitlines() if l.startswith("requests:"))
    succeeded = int(line.split("succeeded,")[0].split()[-1]) if "succeeded" in line else 0
    failed = int(line.split("failed,")[0].split()[-1])
    return succeeded / seconds, cpu / max(succeeded, 1) * 1000, failed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3,
                        help="tern and triton alternately this many times; the table shows each round and the medians")
    parser.add_argument("--tern", default=None, help="tern binary (default: release build)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks/results/triton.md"))
    args = parser.parse_args()
    ensure_tools()
    triton_root = ensure_triton()
    tern = tern_binary(args.tern)
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts/make_models.py"), "examples", os.path.join(ROOT, "examples/models")], check=True)

    work = tempfile.mkdtemp(prefix="tern-vs-triton-")
    triton_repo = os.path.join(work, "triton")
    os.makedirs(os.path.join(triton_repo, "add_sub/1"))
    shutil.copy(os.path.join(ROOT, "benchmarks/triton_model/config.pbtxt"), os.path.join(triton_repo, "add_sub"))
    shutil.copy(os.path.join(ROOT, "benchmarks/triton_model/model.py"), os.path.join(triton_repo, "add_sub/1"))
    shutil.copy(os.path.join(ROOT, "examples/models/add_sub/1/model.onnx"), os.path.join(triton_repo, "add_sub/1"))

    rows = []
    for round_number in range(args.rounds):
        for name in ("tern", "triton"):
            h, g, m = free_port(), free_port(), free_port()
            if name == "tern":
                argv = [tern, "serve", "--model-repository", os.path.join(ROOT, "examples/models"), "--host", "127.0.0.1",
                        "--http-port", str(h), "--grpc-port", str(g), "--metrics-port", str(m)]
                env = None
            else:
                argv = [os.path.join(triton_root, "bin/tritonserver"), "--model-repository", triton_repo,
                        "--backend-directory", os.path.join(triton_root, "backends"),
                        "--http-port", str(h), "--grpc-port", str(g), "--metrics-port", str(m)]
                env = triton_env()
            server = Server(name, argv, h, g, env)
            try:
                check_answer(server)
                http_rps, http_cpu, http_err = run_wrk(server, args.seconds, args.connections, work)
                grpc_rps, grpc_cpu, grpc_err = run_h2load(server, args.seconds, args.connections, work)
            finally:
                server.stop()
            rows.append((name, server.start_to_ready, server.idle_rss, server.processes, http_rps, http_cpu, http_err, grpc_rps, grpc_cpu, grpc_err))
            print(f"round {round_number + 1} {name}: ready {server.start_to_ready:.2f}s, idle RSS {server.idle_rss:.0f} MB over {server.processes} processes, "
                  f"HTTP {http_rps:.0f} req/s ({http_cpu:.2f} CPU-s/1000, {http_err} errors), gRPC {grpc_rps:.0f} req/s ({grpc_cpu:.2f} CPU-s/1000, {grpc_err} errors)")

    def median(values):
        values = sorted(values)
        return values[len(values) // 2] if len(values) % 2 else (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2

    lines = [
        f"Same add_sub model.onnx, this 2-core machine, wrk -t1 -c{args.connections} (HTTP binary) and "
        f"h2load -c1 -m{args.connections} (gRPC unary), {args.seconds}s each, {args.rounds} rounds alternating the servers.",
        "",
        "| round | server | start-to-ready s | idle RSS MB (processes) | HTTP req/s | HTTP CPU-s/1000 req | gRPC req/s | gRPC CPU-s/1000 req |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for index, r in enumerate(rows):
        lines.append(f"| {index // 2 + 1} | {r[0]} | {r[1]:.2f} | {r[2]:.0f} ({r[3]}) | {r[4]:.0f} | {r[5]:.3f} | {r[7]:.0f} | {r[8]:.3f} |")
    ratios = []
    for index in range(0, len(rows), 2):
        t, x = rows[index], rows[index + 1]
        ratios.append((t[1] / x[1], t[2] / x[2], t[4] / max(x[4], 1e-9), t[5] / max(x[5], 1e-9), t[7] / max(x[7], 1e-9), t[8] / max(x[8], 1e-9)))
    medians = [median([r[i] for r in ratios]) for i in range(6)]
    lines.append(f"| median | Tern ÷ Triton | {medians[0]:.2f}× | {medians[1]:.2f}× | {medians[2]:.2f}× | {medians[3]:.2f}× | {medians[4]:.2f}× | {medians[5]:.2f}× |")
    write_table(lines, args.out)


if __name__ == "__main__":
    main()
