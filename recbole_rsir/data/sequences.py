"""Training sequences as one flat array: the unit RSIR generates, merges and trains on.

RecBole stores a sequential training set as one row per prefix. RSIR reasons about whole
sequences (a user's training history, a synthetic continuation), so :class:`SequenceSet`
keeps them flat (CSR: ``items`` plus ``offsets``), with aligned timestamps and the internal
id of the user each sequence belongs to or was seeded from.
"""
from dataclasses import dataclass

import numpy as np


@dataclass
class SequenceSet:
    items: np.ndarray        # int64, all sequences concatenated
    offsets: np.ndarray      # int64, len(self) + 1
    timestamps: np.ndarray   # float64, aligned with items
    users: np.ndarray        # int64, internal user id per sequence

    def __len__(self):
        return len(self.offsets) - 1

    def __getitem__(self, i):
        return self.items[self.offsets[i]:self.offsets[i + 1]]

    def times(self, i):
        return self.timestamps[self.offsets[i]:self.offsets[i + 1]]

    @property
    def lengths(self):
        return np.diff(self.offsets)

    @classmethod
    def from_lists(cls, sequences, timestamps=None, users=None):
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = lambda seqs, dtype: (np.concatenate([np.asarray(s, dtype=dtype) for s in seqs])
                                    if len(seqs) else np.zeros(0, dtype=dtype))
        items = flat(sequences, np.int64)
        times = flat(timestamps, np.float64) if timestamps is not None else np.zeros(len(items))
        users = np.asarray(users if users is not None else np.zeros(len(sequences)), dtype=np.int64)
        return cls(items, offsets, times, users)

    @classmethod
    def empty(cls):
        return cls.from_lists([])

    def concat(self, other):
        return SequenceSet(
            np.concatenate([self.items, other.items]),
            np.concatenate([self.offsets, other.offsets[1:] + self.offsets[-1]]),
            np.concatenate([self.timestamps, other.timestamps]),
            np.concatenate([self.users, other.users]),
        )

    def select(self, index):
        index = np.asarray(index, dtype=np.int64)
        return SequenceSet.from_lists([self[i] for i in index], [self.times(i) for i in index],
                                      self.users[index])

    def to_lists(self):
        return [self[i].tolist() for i in range(len(self))]


def training_sequences(train_dataset):
    """Each real user's whole training sequence, rebuilt from RecBole's prefix rows.

    RecBole's leave-one-out split keeps, per user, one row per training target (its context
    cut to MAX_ITEM_LIST_LENGTH). The full sequence is the first row's first context item
    followed by every row's target, so nothing of validation or test can enter.
    """
    inter = train_dataset.inter_feat
    uid = inter[train_dataset.uid_field].numpy()
    target = inter[train_dataset.iid_field].numpy()
    first_ctx = inter[train_dataset.item_id_list_field][:, 0].numpy()
    time_field = train_dataset.time_field
    has_time = time_field is not None and time_field in inter
    target_t = inter[time_field].numpy().astype(np.float64) if has_time else np.zeros(len(uid))
    first_t = (inter[time_field + train_dataset.config["LIST_SUFFIX"]][:, 0].numpy().astype(np.float64)
               if has_time else np.zeros(len(uid)))

    order = np.argsort(uid, kind="stable")          # RecBole keeps each user's rows in time order
    uid, target, first_ctx, target_t, first_t = (a[order] for a in (uid, target, first_ctx, target_t, first_t))
    starts = np.flatnonzero(np.r_[True, uid[1:] != uid[:-1]])
    users = uid[starts]
    # one extra slot per user for the first context item
    n_rows = np.diff(np.r_[starts, len(uid)])
    lengths = n_rows + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.empty(offsets[-1], dtype=np.int64)
    times = np.empty(offsets[-1], dtype=np.float64)
    items[offsets[:-1]] = first_ctx[starts]
    times[offsets[:-1]] = first_t[starts]
    body = np.ones(offsets[-1], dtype=bool)
    body[offsets[:-1]] = False
    items[body] = target
    times[body] = target_t
    return SequenceSet(items, offsets, times, users.astype(np.int64))


def eval_targets(eval_dataset):
    """``{internal user id: target item}`` of a leave-one-out validation or test split."""
    inter = eval_dataset.inter_feat
    return dict(zip(inter[eval_dataset.uid_field].tolist(), inter[eval_dataset.iid_field].tolist()))
