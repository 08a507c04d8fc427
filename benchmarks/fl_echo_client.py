"""A Flower 1.42 NumPyClient for the round-time benchmark: its model is `--floats` float32 values in
two arrays; fit returns them unchanged (the server's work is all that is timed) and appends the
time of each fit to `--log`."""
import argparse
import time

import flwr as fl
import numpy as np


class Echo(fl.client.NumPyClient):
    def __init__(self, floats, log):
        rows = max(1, int(floats ** 0.5))
        self.arrays = [np.ones((rows, max(1, floats // rows - 1)), dtype=np.float32), np.zeros(rows, dtype=np.float32)]
        self.log = log

    def get_parameters(self, config):
        return self.arrays

    def fit(self, parameters, config):
        with open(self.log, "a") as f:
            f.write(f"{time.monotonic()}\n")
        return parameters, 1, {}

    def evaluate(self, parameters, config):
        return 0.0, 1, {}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--floats", type=int, required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    fl.client.start_client(server_address=args.server, client=Echo(args.floats, args.log).to_client(), insecure=True,
                           grpc_max_message_length=2**31 - 1)


if __name__ == "__main__":
    main()
