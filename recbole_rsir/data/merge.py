"""D_{k+1} = D_k + accepted synthetic sequences, as training-only data.

Synthetic sequences join the training split only: they are never split into validation or
test, so evaluation users and targets are the same with and without RSIR. On the
all-position path the merge is a concatenation of sequences; on RecBole's path each
synthetic sequence becomes RecBole's prefix rows, appended to the training dataset.
"""
import os

import numpy as np
import torch
from recbole.data.dataloader import TrainDataLoader
from recbole.data.interaction import Interaction, cat_interactions

from recbole_rsir.data.convert import INTER_HEADER
from recbole_rsir.data.loader import SequenceTrainLoader


def prefix_rows(train_dataset, sequences):
    """RecBole's augmented rows (context of up to MAX_ITEM_LIST_LENGTH items -> next item)."""
    max_len = train_dataset.config["MAX_ITEM_LIST_LENGTH"]
    lengths = sequences.lengths
    targets_per_seq = np.maximum(lengths - 1, 0)
    seq_index = np.repeat(np.arange(len(lengths)), targets_per_seq)
    t = np.arange(targets_per_seq.sum()) - np.repeat(np.cumsum(targets_per_seq) - targets_per_seq,
                                                     targets_per_seq) + 1   # target position
    start = np.maximum(t - max_len, 0)
    ctx_len = t - start
    pos = np.arange(max_len)
    valid = pos[None, :] < ctx_len[:, None]
    flat = np.where(valid, sequences.offsets[seq_index][:, None] + start[:, None] + pos[None, :], 0)
    target_flat = sequences.offsets[seq_index] + t
    inter = train_dataset.inter_feat
    list_suffix = train_dataset.config["LIST_SUFFIX"]
    fields = {
        train_dataset.uid_field: torch.as_tensor(sequences.users[seq_index], dtype=inter[train_dataset.uid_field].dtype),
        train_dataset.iid_field: torch.as_tensor(sequences.items[target_flat], dtype=inter[train_dataset.iid_field].dtype),
        train_dataset.iid_field + list_suffix: torch.as_tensor(np.where(valid, sequences.items[flat], 0),
                                                               dtype=inter[train_dataset.iid_field].dtype),
        train_dataset.item_list_length_field: torch.as_tensor(ctx_len, dtype=inter[train_dataset.item_list_length_field].dtype),
    }
    time = train_dataset.time_field
    if time is not None and time in inter:
        fields[time] = torch.as_tensor(sequences.timestamps[target_flat], dtype=inter[time].dtype)
        fields[time + list_suffix] = torch.as_tensor(np.where(valid, sequences.timestamps[flat], 0),
                                                     dtype=inter[time].dtype)
    missing = set(inter.interaction) - set(fields)
    if missing:
        raise ValueError(f"cannot build training rows for synthetic sequences: no values for {sorted(missing)}")
    return Interaction(fields)


def training_loader(config, train_data, real, synthetic):
    """The training data of a round: real training sequences plus accepted synthetic ones."""
    train_dataset = train_data.dataset
    if config["train_path"] == "all_positions":
        return SequenceTrainLoader(real.concat(synthetic), config["train_batch_size"],
                                   config["MAX_ITEM_LIST_LENGTH"], config["seed"], train_dataset,
                                   length_groups=config["train_length_groups"])
    if len(synthetic) == 0:
        return train_data
    merged = train_dataset.copy(cat_interactions([train_dataset.inter_feat, prefix_rows(train_dataset, synthetic)]))
    return TrainDataLoader(config, merged, train_data._sampler, shuffle=True)   # its negatives, if it samples any


def write_synthetic(path, dataset, synthetic, round_index):
    """Save accepted sequences as a RecBole atomic ``.inter`` file (original item tokens).

    Each sequence gets its own user token ``r<round>-<n>-<seed user token>``, so RecBole
    loads the file as one user per synthetic sequence.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    item_tokens = dataset.id2token(dataset.iid_field, synthetic.items)
    user_tokens = dataset.id2token(dataset.uid_field, synthetic.users)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(INTER_HEADER)
        for n in range(len(synthetic)):
            lo, hi = synthetic.offsets[n], synthetic.offsets[n + 1]
            user = f"r{round_index}-{n}-{user_tokens[n]}"
            f.writelines(f"{user}\t{item_tokens[i]}\t{synthetic.timestamps[i]:.0f}\n" for i in range(lo, hi))
    os.replace(tmp, path)
    return path
