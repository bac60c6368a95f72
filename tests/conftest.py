import os

import numpy as np
import pytest

import recbole_rsir  # noqa: F401  (applies the RecBole workarounds first)
from recbole_rsir.data.convert import write_atomic


def make_rows(n_users=40, n_items=30, min_len=5, max_len=14, seed=0):
    """Random time-ordered sequences with day gaps: (user, items, timestamps) rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(1, n_users + 1):
        length = int(rng.integers(min_len, max_len + 1))
        # no immediate repeats, some popularity skew so a model can learn something
        items = rng.choice(np.arange(1, n_items + 1), size=length, replace=False,
                           p=np.linspace(2, 1, n_items) / np.linspace(2, 1, n_items).sum())
        gaps = rng.integers(0, 5, size=length) * 86400
        gaps[0] = 0
        rows.append((user, items.tolist(), (np.cumsum(gaps) + np.arange(length)).tolist()))
    return rows


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
