"""Batches of whole sequences for the all-position training path.

Stock RecBole feeds one row per prefix, each padded to MAX_ITEM_LIST_LENGTH. Here a row is
a whole sequence (its loss is taken at every position), padding is cut by packing a batch's
rows side by side (:func:`pack`), by running it through the model in chunks of similar-length
rows (:func:`length_chunks`) or by grouping rows of similar length into batches, and everything
is tensors built once: an epoch only permutes indices.
"""
import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

LENGTH_GROUPS = 1
"""Default ``train_length_groups``: 1 = batches of rows drawn at random, as RecBole's shuffled
prefix batches are. Batches of similar-length rows (more groups) pad less; on Beauty, with 50
groups, SASRec tested about the same with full cross-entropy and worse with sampled softmax
(git history holds the figures)."""

SHORTEST_CHUNK = 4
"""Rows up to this long share the first part of :func:`length_chunks`."""


def length_chunks(lengths):
    """Row indices of a batch cut into parts of similar length: lengths up to 4, 5-8, 9-16, ...

    Rows of a causal model do not interact, so running each part trimmed to its longest row
    and pooling the outputs gives the batch's exact loss and gradient with a fraction of the
    padding: a random batch of Beauty sequences is padded to about 50 though most hold under
    10. Doubling bounds keep every row's padding within its own length in a handful of parts
    (each part is one more pass through the model, which has a fixed cost).
    """
    order = torch.argsort(lengths, stable=True)
    ordered = lengths[order]
    bounds = [SHORTEST_CHUNK]
    while bounds[-1] < int(ordered[-1]):
        bounds.append(2 * bounds[-1])
    ends = torch.searchsorted(ordered, torch.tensor(bounds), right=True).tolist()
    return [order[lo:hi] for lo, hi in zip([0] + ends, ends) if hi > lo]


class PackedBatch(NamedTuple):
    """A batch's rows laid side by side in fewer, fuller rows (:func:`pack`)."""
    inputs: torch.Tensor      # [R, W] item ids; several sequences per row, each in its own slot
    positions: torch.Tensor   # [R, W] position of each item within its own sequence
    allowed: torch.Tensor     # [R, W, W] bool: query column may attend key column (same slot, not later)
    index: torch.Tensor       # [T] flat position in [R * W] of each next-item target's input
    targets: torch.Tensor     # [T] next items
    last: torch.Tensor        # [B] flat position of each row's last input, in the batch's row order


def pack(items, lengths):
    """Lay a batch's sequences side by side so the whole batch is one pass of a causal model.

    Chunking by length (:func:`length_chunks`) cuts the padding but runs the model once per part,
    and at Beauty's sizes each pass costs mostly per-op overhead. Here part p (inputs up to w
    items) puts ``W // w`` sequences in each row of width W, one slot of w columns each; a mask
    that lets a column see only earlier columns of its own slot, and positions restarting at each
    slot, give every sequence the outputs it would have alone.
    """
    parts = length_chunks(lengths)
    widths = [int(lengths[rows].max()) - 1 for rows in parts]
    width = max(widths)
    col = torch.arange(width, device=items.device)
    inputs, positions, allowed, index, targets = [], [], [], [], []
    last = torch.empty_like(lengths)
    first_row = 0
    for rows, w in zip(parts, widths):
        per_row, n = width // w, len(rows)
        n_rows = -(-n // per_row)
        slots = items.new_zeros(n_rows * per_row, w)
        slots[:n] = items[rows, :w]
        inputs.append(F.pad(slots.view(n_rows, per_row * w), (0, width - per_row * w)))
        slot = torch.div(col, w, rounding_mode="floor")        # columns past the last slot form their own
        positions.append((col - slot * w).expand(n_rows, width))
        allowed.append(((slot[:, None] == slot[None, :]) & (col[None, :] <= col[:, None])).expand(n_rows, -1, -1))
        j = torch.arange(n, device=items.device)
        start = (first_row + j // per_row) * width + (j % per_row) * w
        valid = col[:w] < (lengths[rows] - 1).unsqueeze(1)
        index.append((start.unsqueeze(1) + col[:w])[valid])
        targets.append(items[rows, 1:w + 1][valid])
        last[rows] = start + lengths[rows] - 2
        first_row += n_rows
    return PackedBatch(*(torch.cat(t) for t in (inputs, positions, allowed, index, targets)), last)


def windows(sequences, max_len):
    """Cut sequences into rows of at most ``max_len + 1`` items (inputs + shifted targets).

    Row k of a sequence starts at ``k * max_len``, so every item after the first is a target
    exactly once and always has up to ``max_len`` items of context from its own row.
    """
    lengths = sequences.lengths
    n_windows = np.maximum(1, np.ceil((lengths - 1) / max_len).astype(np.int64))
    seq_index = np.repeat(np.arange(len(lengths)), n_windows)
    k = np.arange(n_windows.sum()) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    start = k * max_len
    row_len = np.minimum(max_len + 1, lengths[seq_index] - start)
    keep = row_len >= 2
    seq_index, start, row_len = seq_index[keep], start[keep], row_len[keep]
    width = int(row_len.max()) if len(row_len) else 2
    pos = np.arange(width)
    valid = pos[None, :] < row_len[:, None]
    flat = sequences.offsets[seq_index][:, None] + start[:, None] + pos[None, :]
    flat = np.where(valid, flat, 0)
    items = np.where(valid, sequences.items[flat] if len(sequences.items) else 0, 0)
    times = np.where(valid, sequences.timestamps[flat] if len(sequences.items) else 0.0, 0.0)
    return (torch.from_numpy(items.astype(np.int64)), torch.from_numpy(times.astype(np.float32)),
            torch.from_numpy(row_len.astype(np.int64)))


class SequenceTrainLoader:
    """Iterates ``(items [B, L], lengths [B], times [B, L])`` batches of sequence windows."""

    def __init__(self, sequences, batch_size, max_len, seed, dataset=None, shuffle=True,
                 length_groups=LENGTH_GROUPS):
        self.items, self.times, self.lengths = windows(sequences, max_len)
        self.batch_size = batch_size
        self.length_groups = length_groups
        self.shuffle = shuffle
        self._dataset = dataset          # RecBole's Collector looks here
        self.generator = torch.Generator().manual_seed(seed)   # named as RecBole's loaders name theirs

    @property
    def n_targets(self):
        return int((self.lengths - 1).sum())

    @property
    def targets_per_batch(self):
        """Mean next-item targets in a batch: the loss normaliser that weighs every target alike."""
        return self.n_targets / max(1, len(self))

    def __len__(self):
        return math.ceil(len(self.lengths) / self.batch_size)

    def _batches(self):
        n = len(self.lengths)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        group = self.batch_size * self.length_groups
        groups = []
        for g in torch.split(order, group):
            by_length = torch.argsort(self.lengths[g], stable=True)
            groups.append(g[by_length])
        batches = list(torch.split(torch.cat(groups), self.batch_size)) if n else []
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=self.generator)]
        return batches

    def __iter__(self):
        for index in self._batches():
            lengths = self.lengths[index]
            width = int(lengths.max())
            yield self.items[index, :width], lengths, self.times[index, :width]
