import os

import numpy as np
import pytest
import torch

import recbole_rsir  # noqa: F401  (applies the RecBole workarounds first)
from recbole_rsir.data.convert import write_atomic


def make_rows(n_users=40, n_items=30, min_len=5, max_len=14, seed=0):
    """Time-ordered sequences with day gaps: (user, items, timestamps) rows.

    Each next item is the previous one plus 1, 2 or 3 (mod n_items), so a model has a
    pattern to learn and generation has something to follow.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(1, n_users + 1):
        length = int(rng.integers(min_len, max_len + 1))
        steps = rng.choice([1, 2, 3], size=length, p=[0.6, 0.3, 0.1])
        steps[0] = rng.integers(0, n_items)
        items = np.cumsum(steps) % n_items + 1
        gaps = rng.integers(0, 5, size=length) * 86400
        gaps[0] = 0
        rows.append((user, items.tolist(), (np.cumsum(gaps) + np.arange(length)).tolist()))
    return rows


@pytest.fixture(autouse=True, scope="module")
def one_thread_module():
    """Tests use tiny tensors: one thread is fastest, and OpenMP threads do not spin against
    each other (or against other jobs on a shared 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_data_path(tmp_path):
    """A RecBole data_path holding the atomic dataset 'tiny'."""
    write_atomic(make_rows(), os.path.join(tmp_path, "tiny", "tiny.inter"))
    return str(tmp_path)


def tiny_config_dict(data_path, **overrides):
    base = {
        "data_path": data_path,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "epochs": 2,
        "train_batch_size": 32,
        "eval_batch_size": 64,
        "show_progress": False,
        "state": "WARNING",
        "checkpoint_dir": os.path.join(data_path, "saved"),
        "hidden_size": 16,
        "inner_size": 32,
        "n_layers": 1,
        "n_heads": 1,
        "MAX_ITEM_LIST_LENGTH": 20,
        "seed": 7,
        "rsir_output_dir": os.path.join(data_path, "out"),
    }
    base.update(overrides)
    return base


def build_tiny(data_path, model="SASRec", **overrides):
    """Config, dataset and RecBole data loaders for the tiny dataset."""
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_rsir.config import Config

    config = Config(model=model, dataset="tiny", config_dict=tiny_config_dict(data_path, **overrides))
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    return config, dataset, train_data, valid_data, test_data


@pytest.fixture
def tiny(tiny_data_path):
    return build_tiny(tiny_data_path)
