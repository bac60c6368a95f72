"""Datasets: bundled benchmarks, conversion, training sequences, loaders, merging."""
import numpy as np
from recbole.data import create_dataset as recbole_create_dataset

from recbole_rsir.data.bundled import ensure_dataset
from recbole_rsir.errors import DatasetFormatError


MIN_USER_INTERACTIONS = 4
"""Leave-one-out needs one training pair (context -> target), a validation and a test item;
RecBole gives a user with 3 interactions no validation item."""


def create_dataset(config):
    """RecBole's create_dataset, after unpacking a bundled dataset if data_path lacks it."""
    ensure_dataset(config["data_path"], config["dataset"])
    dataset = recbole_create_dataset(config)
    check_splittable(dataset)
    return dataset


def check_splittable(dataset):
    counts = np.bincount(np.asarray(dataset.inter_feat[dataset.uid_field]), minlength=dataset.user_num)[1:]
    short = int((counts < MIN_USER_INTERACTIONS).sum())
    if len(counts) == 0 or short:
        raise DatasetFormatError(
            f"dataset {dataset.dataset_name} is too small to split: {short} of {len(counts)} users have fewer "
            f"than {MIN_USER_INTERACTIONS} interactions (filter with --user_inter_num_interval=\"[4,inf)\")")
