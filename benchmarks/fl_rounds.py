#!/usr/bin/env python3
"""Tern's federated coordinator against the real Flower 1.42 server, with the same Flower clients.

  python3 benchmarks/fl_rounds.py [--tern PATH] [--rounds 5] [--sizes 1000,1000000,25000000]

1. Round time and bytes: 3 Flower NumPyClients whose fit returns the weights unchanged (so the
   servers' own work is what is measured), models of ~4 KB, ~4 MB and ~100 MB (float32). The round
   time is the period between a client's successive fits, measured at the client the same way for
   both servers; bytes are counted on the wire by a TCP relay between the clients and the server
   (HTTP/2 framing included), per round, both directions.
2. Accuracy: softmax regression on sklearn's digits split over 10 clients with a Dirichlet(0.5)
   label skew, the same per-round config, against each server, and the centralised upper bound
   (the same epochs and learning rates on all the training data at once).

Prints a markdown table of each with Tern/Flower ratios and writes benchmarks/results/fl.md.
"""
import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration", "fl"))
from compare_triton import free_port, tern_binary, write_table  # noqa: E402
from digits_data import _data, softmax_eval, softmax_init, softmax_train  # noqa: E402
from schedule import SCHEDULE_YAML, schedule  # noqa: E402

FL = os.path.join(ROOT, "tests", "integration", "fl")
PYTHON = os.environ.get("TERN_FLWR_PYTHON", os.path.join(ROOT, ".cache", "flwr-venv", "bin", "python"))


class Relay:
    """A TCP relay on a free port to `target`, counting bytes each way."""

    def __init__(self, target_port):
        self.port = free_port()
        self.target = target_port
        self.up = 0
        self.down = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self.ready.wait()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self.server = server
        self.ready.set()
        self.loop.run_forever()

    async def _handle(self, reader, writer):
        for _ in range(200):
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            writer.close()
            return

        async def pump(src, dst, up):
            try:
                while True:
                    data = await src.read(1 << 20)
                    if not data:
                        break
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                try:
                    dst.close()
                except Exception:
                    pass

        await asyncio.gather(pump(reader, upstream_writer, True), pump(upstream_reader, writer, False))

    def close(self):
        self.loop.call_soon_threadsafe(self.server.close)


def run_server(kind, tern, port, rounds, clients, extra_yaml="", fraction_evaluate=0.0):
    if kind == "tern":
        config = f"{ROOT}/benchmarks/results/fl-{port}.yaml"
        with open(config, "w") as f:
            f.write(f"min_fit_clients: {clients}\nmin_available_clients: {clients}\nmin_evaluate_clients: {clients}\n"
                    f"fraction_evaluate: {fraction_evaluate}\n{extra_yaml}")
        return subprocess.Popen([tern, "fl", "server", "--address", f"127.0.0.1:{port}", "--rounds", str(rounds), "--config", config],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return subprocess.Popen([PYTHON, os.path.join(FL, "flower_server.py"), "--address", f"127.0.0.1:{port}", "--rounds", str(rounds),
                             "--clients", str(clients), "--fraction-evaluate", str(fraction_evaluate)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def round_time(kind, tern, floats, rounds, folder, relay=False):
    """The median period between client 0's fits, and the bytes per round on the wire. Timed runs
    connect directly; the bytes are counted in a run through the relay (which would slow big models)."""
    port = free_port()
    server = run_server(kind, tern, port, rounds, 3)
    relay = Relay(port) if relay else None
    time.sleep(1.5 if kind == "flower" else 0.3)
    logs = [os.path.join(folder, f"{kind}-{floats}-{i}.log") for i in range(3)]
    for log in logs:
        if os.path.exists(log):
            os.remove(log)
    clients = [subprocess.Popen([PYTHON, os.path.join(HERE, "fl_echo_client.py"), "--server", f"127.0.0.1:{relay.port if relay else port}",
                                 "--floats", str(floats), "--log", log], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for log in logs]
    server.communicate(timeout=1800)
    for client in clients:
        client.wait(timeout=120)
    times = [float(line) for line in open(logs[0])]
    periods = [b - a for a, b in zip(times, times[1:])]
    if relay is None:
        return statistics.median(periods), None
    relay.close()
    return statistics.median(periods), (relay.up + relay.down) / rounds


def accuracy_run(kind, tern, rounds, clients):
    port = free_port()
    server = run_server(kind, tern, port, rounds, clients, SCHEDULE_YAML, fraction_evaluate=1.0)
    time.sleep(1.5 if kind == "flower" else 0.3)
    procs = [subprocess.Popen([PYTHON, os.path.join(FL, "digits_client.py"), "--server", f"127.0.0.1:{port}", "--index", str(i),
                               "--clients", str(clients), "--dirichlet", "0.5"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for i in range(clients)]
    out, _ = server.communicate(timeout=1800)
    for p in procs:
        p.wait(timeout=120)
    if kind == "tern":
        return [r["record"]["metrics"]["accuracy"] for r in json.loads(out)["rounds"]]
    return json.loads(out.strip().splitlines()[-1])["accuracy"]


def centralised(rounds):
    x, y, test_x, test_y = _data()
    weights = softmax_init(seed=1234)
    for r in range(1, rounds + 1):
        config = schedule(r)
        weights = softmax_train(weights, x, y, epochs=config["local_epochs"], lr=config["learning_rate"],
                                batch_size=config["batch_size"], seed=r)
    return softmax_eval(weights, test_x, test_y)[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tern")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", default="1000,1000000,25000000")
    parser.add_argument("--accuracy-rounds", type=int, default=10)
    args = parser.parse_args()
    tern = tern_binary(args.tern)
    folder = os.path.join(HERE, "results")
    os.makedirs(folder, exist_ok=True)
    lines = ["| model | Tern round | Flower round | time ratio | Tern bytes/round | Flower bytes/round | bytes ratio |",
             "|---|---|---|---|---|---|---|"]
    for floats in (int(s) for s in args.sizes.split(",")):
        rounds = args.rounds if floats < 10_000_000 else max(3, args.rounds // 2)
        t_time, _ = round_time("tern", tern, floats, rounds, folder)
        f_time, _ = round_time("flower", tern, floats, rounds, folder)
        _, t_bytes = round_time("tern", tern, floats, 2, folder, relay=True)
        _, f_bytes = round_time("flower", tern, floats, 2, folder, relay=True)
        size = floats * 4
        label = f"{size / 1024:.0f} KB" if size < 1 << 20 else f"{size / (1 << 20):.0f} MB"
        lines.append(f"| {label} | {t_time * 1000:.1f} ms | {f_time * 1000:.1f} ms | {t_time / f_time:.2f}x | "
                     f"{t_bytes / 1024:.0f} KiB | {f_bytes / 1024:.0f} KiB | {t_bytes / f_bytes:.3f}x |")
        print(lines[-1], flush=True)
    tern_acc = accuracy_run("tern", tern, args.accuracy_rounds, 10)
    flower_acc = accuracy_run("flower", tern, args.accuracy_rounds, 10)
    upper = centralised(args.accuracy_rounds)
    lines += ["", f"Digits, 10 clients, Dirichlet(0.5) label skew, {args.accuracy_rounds} rounds (accuracy on the shared test set):", "",
              "| round | Tern | Flower |", "|---|---|---|"]
    for r, (a, b) in enumerate(zip(tern_acc, flower_acc), start=1):
        lines.append(f"| {r} | {a:.4f} | {b:.4f} |")
    lines += ["", f"Centralised upper bound (same epochs and learning rates, all the data): {upper:.4f}"]
    write_table(lines, os.path.join(folder, "fl.md"))


if __name__ == "__main__":
    main()
