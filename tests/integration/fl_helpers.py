"""Shared pieces of the federated-learning tests: the Flower virtual environment, Tern's
coordinator and Flower clients and servers as processes."""
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, free_port

FL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fl")
sys.path.insert(0, FL)  # schedule.py and digits_data.py import without flwr
TERN = os.environ.get("TERN_BIN", os.path.join(ROOT, ".build/debug/tern"))

# Every process a test starts through these helpers; conftest's autouse fixture kills those still
# running when the test ends, so a failed test leaves no coordinator or client behind.
STARTED = []


def track(process):
    STARTED.append(process)
    return process


def flwr_python():
    """The Python with flwr==1.42.0 (make's flwr-venv); the tests skip, saying why, without it."""
    python = os.environ.get("TERN_FLWR_PYTHON", os.path.join(ROOT, ".cache/flwr-venv/bin/python"))
    if not os.path.exists(python):
        pytest.skip(f"no Flower environment at {python}: run `make flwr-venv`")
    version = subprocess.run([python, "-c", "import flwr; print(flwr.__version__)"], capture_output=True, text=True)
    if version.stdout.strip() != "1.42.0":
        pytest.skip(f"{python} has flwr {version.stdout.strip() or version.stderr.strip()[-200:]}, not 1.42.0")
    return python


class Coordinator:
    """`tern fl server` on a free port; `finish()` waits for it and returns its JSON summary."""

    def __init__(self, tmp_path, *args, config=None, port=None):
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"fl-server-{self.port}-{time.time_ns()}.log"
        extra = []
        if config:
            path = tmp_path / f"fl-{self.port}.yaml"
            path.write_text(config)
            extra = ["--config", str(path)]
        self.process = track(subprocess.Popen(
            [TERN, "fl", "server", "--address", self.address, *extra, *args],
            stdout=subprocess.PIPE, stderr=open(self.log_path, "w"), text=True))
        deadline = time.time() + 20
        while "listening on" not in self.log():
            if self.process.poll() is not None or time.time() > deadline:
                raise RuntimeError("tern fl server did not start:\n" + self.log())
            time.sleep(0.05)

    def log(self):
        return self.log_path.read_text() if self.log_path.exists() else ""

    def finish(self, timeout=120):
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError("the coordinator did not finish:\n" + self.log()[-4000:])
        assert self.process.returncode == 0, self.log()[-4000:]
        return json.loads(out)


def start_client(python, address, index, clients=3, fault="", env=None, extra=()):
    return track(subprocess.Popen(
        [python, os.path.join(FL, "digits_client.py"), "--server", address, "--index", str(index),
         "--clients", str(clients), *(["--fault", fault] if fault else []), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})}))


def wait_clients(clients, timeout=120):
    outputs = []
    for client in clients:
        try:
            out, _ = client.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            client.kill()
            out, _ = client.communicate()
        outputs.append((client.returncode, out))
    return outputs


def initial_accuracy(python):
    """The accuracy of the clients' initial weights on the shared test set."""
    code = ("import sys; sys.path.insert(0, %r); from digits_data import *; "
            "print(softmax_eval(softmax_init(seed=1234), *test_set())[1])") % FL
    return float(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)


def accuracies(summary):
    return [r["record"]["metrics"].get("accuracy") for r in summary["rounds"]]
