"""Operating Tern's coordinator: state in SQLite with resume after a restart (graceful and killed),
Prometheus metrics while a run goes on, `tern fl status` and the HTML report in headless Chromium."""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time

import requests

from conftest import free_port
from fl_helpers import TERN, Coordinator, accuracies, flwr_python, initial_accuracy, start_client, wait_clients
from schedule import SCHEDULE_YAML

CONFIG = "min_fit_clients: 3\nmin_evaluate_clients: 3\nmin_available_clients: 3\n" + SCHEDULE_YAML


def rounds_done(db):
    if not os.path.exists(db):
        return 0
    with sqlite3.connect(db) as connection:
        try:
            return connection.execute("SELECT COUNT(*) FROM fl_rounds").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def wait_for(predicate, timeout=60, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_restarted_coordinator_resumes_from_its_last_round(tmp_path):
    python = flwr_python()
    db = str(tmp_path / "fl.sqlite")
    port = free_port()
    args = ("--rounds", "6", "--state-db", db, "--reconnect-seconds", "2")
    first = Coordinator(tmp_path, *args, config=CONFIG, port=port)
    # Slow the clients a little so the coordinator can be stopped between rounds.
    clients = [start_client(python, first.address, i, env={"FIT_DELAY": "0.3"}) for i in range(3)]
    wait_for(lambda: rounds_done(db) >= 2, what="round 2")
    first.process.send_signal(signal.SIGTERM)
    stopped = first.finish()
    assert stopped["interrupted"] and 2 <= len(stopped["rounds"]) < 6
    # The Flower clients were told to come back in 2 s; a new coordinator on the same port resumes.
    second = Coordinator(tmp_path, *args, config=CONFIG, port=port)
    assert "resuming run 'default' after round" in second.log()
    wait_for(lambda: rounds_done(db) >= 4, what="round 4")
    second.process.kill()  # no warning this time: the clients lose the server mid-round
    second.process.wait()
    outputs = wait_clients(clients, timeout=60)
    assert all(code != 0 for code, _ in outputs)  # Flower clients give up on a broken stream
    third = Coordinator(tmp_path, *args, config=CONFIG, port=port)
    clients = [start_client(python, third.address, i) for i in range(3)]
    summary = third.finish()
    assert all(code == 0 for code, _ in wait_clients(clients))
    assert [r["record"]["round"] for r in summary["rounds"]] == [1, 2, 3, 4, 5, 6]
    assert accuracies(summary)[-1] - initial_accuracy(python) >= 0.15
    with sqlite3.connect(db) as connection:
        status, restarts = connection.execute("SELECT status, restarts FROM fl_runs WHERE run = 'default'").fetchone()
        checkpoints = connection.execute("SELECT DISTINCT round FROM fl_checkpoints ORDER BY round").fetchall()
    assert status == "finished" and restarts == 2
    assert [r for (r,) in checkpoints] == [5, 6]  # the last two kept
    again = subprocess.run([TERN, "fl", "server", "--state-db", db, "--rounds", "6", "--address", f"127.0.0.1:{free_port()}"],
                           capture_output=True, text=True)
    assert again.returncode != 0 and "finished all 6 rounds" in again.stderr


def test_metrics_status_and_report(tmp_path):
    python = flwr_python()
    db = str(tmp_path / "fl.sqlite")
    metrics_port = free_port()
    config = CONFIG.replace("min_fit_clients: 3", "min_fit_clients: 3\nround_timeout: 8")
    coordinator = Coordinator(tmp_path, "--rounds", "3", "--state-db", db, "--metrics-port", str(metrics_port), config=config)
    clients = [start_client(python, coordinator.address, i, fault="slow" if i == 2 else "", env={"SLOW_SECONDS": "4"})
               for i in range(3)]
    wait_for(lambda: rounds_done(db) >= 1, what="round 1")
    time.sleep(0.5)  # round 2 waits for the slow client
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    values = {}
    for line in text.splitlines():
        if line.startswith("tern_fl_"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values.get("tern_fl_round") == 2, text
    assert values.get("tern_fl_rounds_total") == 1
    assert values.get("tern_fl_clients_connected") == 3
    assert values.get('tern_fl_bytes_total{direction="sent"}', 0) > 6 * 2600
    assert values.get('tern_fl_round_clients{stage="fit"}') == 3
    status = subprocess.run([TERN, "fl", "status", "--state-db", db], capture_output=True, text=True, check=True).stdout
    assert "run default: running, 1 of 3 rounds" in status and "3/3 fit" in status
    summary = coordinator.finish()
    wait_clients(clients)
    assert len(summary["rounds"]) == 3
    status = subprocess.run([TERN, "fl", "status", "--state-db", db], capture_output=True, text=True, check=True).stdout
    print(status)
    assert "finished, 3 of 3 rounds" in status and "[####################] 100%" in status
    report = tmp_path / "report.html"
    subprocess.run([TERN, "fl", "report", "--state-db", db, "--out", str(report)], check=True)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None, "chromium is not installed (make test installs it)"
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", f"file://{report}"],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'id="loss"' in dom and 'id="metric-accuracy"' in dom and dom.count('class="point"') >= 6
    assert dom.count("<tr>") >= 1 + 3 + 1 + 3  # participation: header + 3 clients; rounds: header + 3
    assert "finished: 3 of 3 rounds" in dom
    shot = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}", "--window-size=1000,1200",
                    f"file://{report}"], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
