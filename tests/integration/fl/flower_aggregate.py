"""Runs Flower's own strategies over the plan `tern fl aggregate` reads and writes the outputs the
same way (OUT/<round>/<i>.npy), so the two can be compared array by array."""
import json
import os
import sys

import numpy as np
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import strategy as st


def make(spec, current):
    name = spec["name"]
    init = ndarrays_to_parameters(current)
    if name == "fedavg":
        return st.FedAvg()
    if name == "fedprox":
        return st.FedProx(proximal_mu=spec.get("proximal_mu", 0.1))
    if name == "fedavgm":
        return st.FedAvgM(initial_parameters=init, server_learning_rate=spec.get("server_learning_rate", 1.0),
                          server_momentum=spec.get("server_momentum", 0.0))
    if name in ("fedadam", "fedyogi"):
        cls = st.FedAdam if name == "fedadam" else st.FedYogi
        keys = {k: spec[k] for k in ("eta", "beta_1", "beta_2", "tau") if k in spec}
        return cls(initial_parameters=init, **keys)
    if name == "fedadagrad":
        keys = {k: spec[k] for k in ("eta", "tau") if k in spec}
        return st.FedAdagrad(initial_parameters=init, **keys)
    if name == "fedmedian":
        return st.FedMedian()
    if name == "fedtrimmedavg":
        return st.FedTrimmedAvg(beta=spec.get("beta", 0.2))
    if name in ("krum", "multikrum"):
        return st.Krum(num_malicious_clients=spec.get("num_malicious_clients", 0),
                       num_clients_to_keep=spec.get("num_clients_to_keep", 0))
    raise SystemExit(f"unknown strategy {name}")


def main():
    plan = json.load(open(sys.argv[1]))
    out = sys.argv[2]
    current = [np.load(p) for p in plan["current"]]
    strategy = make(plan["strategy"], current)
    privacy = plan.get("differential_privacy")
    if privacy:
        strategy = st.DifferentialPrivacyServerSideFixedClipping(
            strategy, noise_multiplier=privacy["noise_multiplier"], clipping_norm=privacy["clipping_norm"],
            num_sampled_clients=len(plan["rounds"][0]))
    for index, round_results in enumerate(plan["rounds"], start=1):
        if privacy:
            strategy.current_round_params = current
        results = [
            (None, FitRes(status=Status(Code.OK, ""), parameters=ndarrays_to_parameters([np.load(p) for p in r["weights"]]),
                          num_examples=r["num_examples"], metrics={}))
            for r in round_results
        ]
        parameters, _ = strategy.aggregate_fit(index, results, [])
        arrays = parameters_to_ndarrays(parameters)
        current = arrays
        os.makedirs(f"{out}/{index}", exist_ok=True)
        for i, a in enumerate(arrays):
            np.save(f"{out}/{index}/{i}.npy", a, allow_pickle=False)


if __name__ == "__main__":
    main()
