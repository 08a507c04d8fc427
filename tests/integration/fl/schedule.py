"""The per-round config of the federated tests, once for Tern's YAML and once for Flower's server."""


def schedule(server_round):
    """Flower's `on_fit_config_fn` equal to SCHEDULE_YAML."""
    return {"local_epochs": 2 if server_round < 3 else 1, "learning_rate": 0.5 * 0.9 ** server_round, "batch_size": 32}


SCHEDULE_YAML = """
fit_config:
  local_epochs: 2 if round < 3 else 1
  learning_rate: 0.5 * 0.9 ^ round
  batch_size: 32
"""
