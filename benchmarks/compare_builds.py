#!/usr/bin/env python3
"""Two builds of `tern` side by side in one run: the same `tern perf` client measures a server of
each build in turn (A B B A ... so drift falls on both), on the tiny `add_sub` model, and prints
each build's median and the ratio HEAD/BASE.

Measured: HTTP (binary tensors) and gRPC throughput at concurrency 64, and the p50 latency of
both at concurrency 1. A refactor passes when the ratios stay within the noise of the machine
(the spread of the rounds is printed too).

    python3 benchmarks/compare_builds.py --base /tmp/base/.build/release/tern \\
        --head .build/release/tern [--rounds 4] [--seconds 3]
"""
import argparse
import csv
import os
import socket
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(binary, repository, state):
    return serve_with(binary, repository, state, [])


def serve_with(binary, repository, state, extra):
    """`tern serve` on free ports with `extra` options; returns once it is ready."""
    ports = [free_port() for _ in range(3)]
    log = open(os.path.join(state, f"serve-{ports[0]}.log"), "w")
    process = subprocess.Popen(
        [binary, "serve", "--model-repository", repository, "--host", "127.0.0.1", "--http-port", str(ports[0]),
         "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]), "--history-db", "none", "--experiments-db", "none",
         "--device-interval", "0", *extra],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        if "server ready" in open(log.name).read():
            return process, ports
        if process.poll() is not None:
            raise RuntimeError(open(log.name).read())
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("the server did not start:\n" + open(log.name).read())


def perf(client, ports, protocol, concurrency, seconds, out, model="add_sub"):
    path = os.path.join(out, f"perf-{protocol}-{concurrency}-{time.time_ns()}.csv")
    subprocess.run(
        [client, "perf", "-m", model, "--protocol", protocol, "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
         "--concurrency-range", f"{concurrency}:{concurrency}:1", "--warmup-seconds", "1", "--measurement-seconds", str(seconds),
         "--csv", path],
        check=True, stdout=subprocess.DEVNULL)
    with open(path) as f:
        row = next(csv.DictReader(f))
    if int(row["errors"]) != 0:
        raise RuntimeError(f"{protocol} c={concurrency}: {row['errors']} errors")
    return float(row["requests_per_second"]), float(row["p50_us"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the earlier build's tern binary")
    parser.add_argument("--head", required=True, help="the build under test")
    parser.add_argument("--client", help="the tern binary that runs `tern perf` (default: --head)")
    parser.add_argument("--repository", default=os.path.join(ROOT, "examples", "models"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3)
    args = parser.parse_args()
    client = args.client or args.head
    points = [("http-binary", 64, "rps"), ("grpc", 64, "rps"), ("http-binary", 1, "p50"), ("grpc", 1, "p50")]
    results = {side: {p: [] for p in points} for side in ("base", "head")}
    with tempfile.TemporaryDirectory() as state:
        for round_ in range(args.rounds):
            order = ("base", "head") if round_ % 2 == 0 else ("head", "base")
            for side in order:
                process, ports = serve(args.base if side == "base" else args.head, args.repository, state)
                try:
                    for protocol, concurrency, what in points:
                        rps, p50 = perf(client, ports, protocol, concurrency, args.seconds, state)
                        results[side][(protocol, concurrency, what)].append(rps if what == "rps" else p50)
                finally:
                    process.terminate()
                    process.wait(timeout=60)
            print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    print()
    print("| point | base (median) | head (median) | head / base | spread of the rounds (base; head) |")
    print("|---|---|---|---|---|")
    for point in points:
        protocol, concurrency, what = point
        base, head = results["base"][point], results["head"][point]
        mb, mh = statistics.median(base), statistics.median(head)
        unit = "req/s" if what == "rps" else "µs p50"
        spread = f"{min(base):.0f}–{max(base):.0f}; {min(head):.0f}–{max(head):.0f}"
        print(f"| {protocol} c={concurrency} {unit} | {mb:.0f} | {mh:.0f} | {mh / mb:.3f} | {spread} |")


if __name__ == "__main__":
    main()
