"""Datasets: bundled benchmarks, conversion, training sequences, loaders, merging."""
from recbole.data import create_dataset as recbole_create_dataset

from recbole_rsir.data.bundled import ensure_dataset


def create_dataset(config):
    """RecBole's create_dataset, after unpacking a bundled dataset if data_path lacks it."""
    ensure_dataset(config["data_path"], config["dataset"])
    return recbole_create_dataset(config)
