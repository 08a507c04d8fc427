"""Every aggregation rule of Tern's coordinator against Flower's own implementation: the same fixed
client results go through `tern fl aggregate` and through flwr 1.42's strategy objects
(`aggregate_fit`, three rounds so the server optimisers' state counts), compared to 1e-6."""
import json
import os
import subprocess

import numpy as np
import pytest

from fl_helpers import FL, TERN, flwr_python

STRATEGIES = [
    {"name": "fedavg"},
    {"name": "fedprox", "proximal_mu": 0.3},
    {"name": "fedavgm", "server_learning_rate": 0.7, "server_momentum": 0.9},
    {"name": "fedadam", "eta": 0.05, "beta_1": 0.8, "beta_2": 0.95, "tau": 1e-3},
    {"name": "fedadam"},
    {"name": "fedyogi"},
    {"name": "fedadagrad", "eta": 0.2, "tau": 1e-2},
    {"name": "fedmedian"},
    {"name": "fedtrimmedavg", "beta": 0.2},
    {"name": "krum", "num_malicious_clients": 1},
    {"name": "multikrum", "num_malicious_clients": 1, "num_clients_to_keep": 3},
]


def write_plan(folder, spec, dtype):
    rng = np.random.default_rng(42)
    shapes = [(4, 3), (3,), (2, 2, 2)]
    current = []
    for i, shape in enumerate(shapes):
        path = folder / f"current{i}.npy"
        np.save(path, rng.standard_normal(shape).astype(dtype), allow_pickle=False)
        current.append(str(path))
    rounds = []
    for r in range(3):
        results = []
        for c in range(6):
            paths = []
            for i, shape in enumerate(shapes):
                path = folder / f"r{r}c{c}a{i}.npy"
                scale = 25.0 if c == 5 else 1.0  # one client far from the rest
                np.save(path, (rng.standard_normal(shape) * scale).astype(dtype), allow_pickle=False)
                paths.append(str(path))
            results.append({"weights": paths, "num_examples": int(rng.integers(5, 50))})
        rounds.append(results)
    plan = folder / "plan.json"
    plan.write_text(json.dumps({"strategy": spec, "current": current, "rounds": rounds}))
    return plan


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("spec", STRATEGIES, ids=[f'{s["name"]}{"-custom" if len(s) > 1 else ""}' for s in STRATEGIES])
def test_strategy_equals_flower(tmp_path, spec, dtype):
    python = flwr_python()
    plan = write_plan(tmp_path, spec, dtype)
    subprocess.run([TERN, "fl", "aggregate", str(plan), "--out", str(tmp_path / "tern")], check=True)
    subprocess.run([python, os.path.join(FL, "flower_aggregate.py"), str(plan), str(tmp_path / "flower")], check=True,
                   capture_output=True)
    for r in (1, 2, 3):
        for i in range(3):
            ours = np.load(tmp_path / "tern" / str(r) / f"{i}.npy")
            theirs = np.load(tmp_path / "flower" / str(r) / f"{i}.npy")
            assert ours.shape == theirs.shape
            assert ours.dtype == dtype, ours.dtype
            # float32 inputs: Flower computes in float32, Tern in float64 and rounds once.
            tolerance = 1e-6 if dtype == np.float64 else 2e-5
            np.testing.assert_allclose(ours, theirs.astype(np.float64), rtol=tolerance, atol=tolerance,
                                       err_msg=f"{spec['name']} round {r} array {i}")


@pytest.mark.parametrize("dtype", [np.float64], ids=["float64"])
@pytest.mark.parametrize("inner", ["fedavg", "fedmedian"])
def test_server_side_fixed_clipping_equals_flower_without_noise(tmp_path, inner, dtype):
    """With σ = 0 the clipping alone must match Flower's wrapper exactly (clients far from the
    global weights are clipped; the one at 25x is clipped hard)."""
    python = flwr_python()
    plan = write_plan(tmp_path, {"name": inner}, dtype)
    spec = json.loads(plan.read_text())
    spec["differential_privacy"] = {"noise_multiplier": 0.0, "clipping_norm": 1.5}
    plan.write_text(json.dumps(spec))
    subprocess.run([TERN, "fl", "aggregate", str(plan), "--out", str(tmp_path / "tern")], check=True)
    subprocess.run([python, os.path.join(FL, "flower_aggregate.py"), str(plan), str(tmp_path / "flower")], check=True,
                   capture_output=True)
    for r in (1, 2, 3):
        for i in range(3):
            np.testing.assert_allclose(np.load(tmp_path / "tern" / str(r) / f"{i}.npy"),
                                       np.load(tmp_path / "flower" / str(r) / f"{i}.npy"), rtol=1e-6, atol=1e-6)


def test_server_side_noise_has_flowers_standard_deviation(tmp_path):
    """σ · clipping norm / clients sampled, measured over many elements."""
    rng = np.random.default_rng(3)
    shape = (200, 100)
    current = tmp_path / "current.npy"
    np.save(current, np.zeros(shape), allow_pickle=False)
    clients = []
    for c in range(4):
        path = tmp_path / f"c{c}.npy"
        np.save(path, rng.standard_normal(shape) * 1e-4, allow_pickle=False)  # inside the clipping norm
        clients.append({"weights": [str(path)], "num_examples": 10})
    for sigma, norm in ((0.0, 2.0), (1.0, 2.0)):
        plan = tmp_path / f"plan{sigma}.json"
        plan.write_text(json.dumps({"strategy": {"name": "fedavg"}, "current": [str(current)], "rounds": [clients],
                                    "differential_privacy": {"noise_multiplier": sigma, "clipping_norm": norm}}))
        subprocess.run([TERN, "fl", "aggregate", str(plan), "--out", str(tmp_path / f"out{sigma}")], check=True)
    noise = np.load(tmp_path / "out1.0" / "1" / "0.npy") - np.load(tmp_path / "out0.0" / "1" / "0.npy")
    expected = 1.0 * 2.0 / 4
    assert abs(noise.std() / expected - 1) < 0.03, noise.std()
    assert abs(noise.mean()) < 0.01


@pytest.mark.parametrize("sigma,q,rounds,delta", [
    (1.1, 0.01, 1000, 1e-5), (0.8, 0.1, 50, 1e-5), (2.0, 0.3, 20, 1e-6), (1.0, 1.0, 10, 1e-5), (4.0, 0.05, 200, 1e-5),
    (0.6, 0.02, 5, 1e-5),
])
def test_epsilon_matches_dp_accounting(sigma, q, rounds, delta):
    """Tern's accountant against Google's dp-accounting RDP accountant (the one flwr wraps)."""
    python = flwr_python()
    code = ("import dp_accounting as d; a = d.rdp.RdpAccountant(); "
            f"e = d.GaussianDpEvent({sigma}); a.compose(e if {q} >= 1 else d.PoissonSampledDpEvent({q}, e), {rounds}); "
            f"print(a.get_epsilon({delta}))")
    theirs = float(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)
    ours = float(subprocess.run([TERN, "fl", "privacy", "--noise-multiplier", str(sigma), "--sampling-rate", str(q),
                                 "--rounds", str(rounds), "--delta", str(delta)], capture_output=True, text=True, check=True).stdout)
    print(f"sigma={sigma} q={q} rounds={rounds}: tern {ours:.6f} dp-accounting {theirs:.6f}")
    assert abs(ours / theirs - 1) < 0.01, (ours, theirs)
