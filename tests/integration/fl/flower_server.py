"""The real Flower 1.42 server (`flwr.server.start_server`, the legacy gRPC stream) with the same
knobs the Tern tests give Tern's coordinator; prints the history as JSON on its last line."""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flwr as fl
from flwr.server.strategy import FedAvg

from schedule import schedule


def weighted(metrics):
    total = sum(n for n, _ in metrics)
    # Only the keys every client reported (a Tern client reports other fit metrics than Python's).
    keys = set.intersection(*(set(m) for _, m in metrics)) if metrics else set()
    return {k: sum(n * m[k] for n, m in metrics) / total for k in keys}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--fraction-evaluate", type=float, default=1.0)
    args = parser.parse_args()
    strategy = FedAvg(
        fraction_fit=1.0, fraction_evaluate=args.fraction_evaluate, min_fit_clients=args.clients,
        min_evaluate_clients=args.clients if args.fraction_evaluate > 0 else 0, min_available_clients=args.clients,
        on_fit_config_fn=schedule,
        evaluate_metrics_aggregation_fn=weighted, fit_metrics_aggregation_fn=weighted)
    history = fl.server.start_server(
        server_address=args.address, config=fl.server.ServerConfig(num_rounds=args.rounds), strategy=strategy,
        grpc_max_message_length=2**31 - 1)
    out = {
        "loss": [loss for _, loss in history.losses_distributed],
        "accuracy": [acc for _, acc in history.metrics_distributed.get("accuracy", [])],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
