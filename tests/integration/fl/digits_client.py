"""An unmodified Flower 1.42 NumPyClient: softmax regression on one non-IID share of sklearn's digits.

Run with the Python that has flwr==1.42.0 (make's flwr-venv). Training is deterministic for a given
--seed and round, so the same clients give the same curve against any coordinator. --fault makes
the client misbehave for the fault tests: `die` exits in the middle of its second fit, `shape`
answers its second fit with an extra array, `slow` sleeps past the deadline in its second fit,
`error` raises in its second fit, `poison` answers every fit with large random weights.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from digits_data import client_share, dirichlet_share, softmax_eval, softmax_init, softmax_train, test_set  # noqa: E402

import flwr as fl  # noqa: E402


class DigitsClient(fl.client.NumPyClient):
    def __init__(self, index, clients, seed, fault, properties, dirichlet=None):
        self.x, self.y = dirichlet_share(index, clients, dirichlet, seed) if dirichlet else client_share(index, clients, seed)
        self.test_x, self.test_y = test_set()
        self.seed = seed + index
        self.fault = fault
        self.fits = 0
        self.properties = properties

    def get_properties(self, config):
        return self.properties

    def get_parameters(self, config):
        return softmax_init(seed=1234)

    def fit(self, parameters, config):
        self.fits += 1
        time.sleep(float(os.environ.get("FIT_DELAY", "0")))
        if self.fits == 2 and self.fault == "die":
            time.sleep(0.2)
            os._exit(3)
        if self.fits == 2 and self.fault == "slow":
            time.sleep(float(os.environ.get("SLOW_SECONDS", "4")))
        if self.fits == 2 and self.fault == "error":
            raise RuntimeError("a deliberate failure in fit")
        weights = softmax_train(
            parameters, self.x, self.y,
            epochs=int(config.get("local_epochs", 1)), lr=float(config.get("learning_rate", 0.1)),
            batch_size=int(config.get("batch_size", 32)), seed=self.seed * 1000 + self.fits,
            proximal_mu=float(config.get("proximal_mu", 0.0)))
        if self.fits == 2 and self.fault == "shape":
            weights = weights + [np.zeros((3,), dtype=np.float32)]
        if self.fault == "poison":
            noise = np.random.default_rng(666 + self.fits)
            weights = [(noise.standard_normal(w.shape) * 20).astype(w.dtype) for w in weights]
        loss, _ = softmax_eval(parameters, self.x, self.y)
        return weights, len(self.y), {"train_loss": float(loss), "config_epochs": int(config.get("local_epochs", 0))}

    def evaluate(self, parameters, config):
        loss, accuracy = softmax_eval(parameters, self.test_x, self.test_y)
        return float(loss), len(self.test_y), {"accuracy": float(accuracy)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fault", default="")
    parser.add_argument("--root-cert")
    parser.add_argument("--dirichlet", type=float, help="split the classes over the clients with Dirichlet(alpha)")
    parser.add_argument("--battery", type=float, help="report battery_percent")
    parser.add_argument("--temperature", type=float, help="report temperature_c")
    parser.add_argument("--energy", type=float, help="report energy_j (joules spent last round)")
    args = parser.parse_args()
    properties = {key: value for key, value in (("battery_percent", args.battery), ("temperature_c", args.temperature),
                                                ("energy_j", args.energy)) if value is not None}
    client = DigitsClient(args.index, args.clients, args.seed, args.fault, properties, args.dirichlet)
    root = open(args.root_cert, "rb").read() if args.root_cert else None
    fl.client.start_client(server_address=args.server, client=client.to_client(),
                           insecure=root is None, root_certificates=root)


if __name__ == "__main__":
    main()
