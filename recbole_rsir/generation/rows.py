"""The rows the generators decode: one per slot (or per seed), built from the seeds.

A row carries its context so far, its seed's distinct items (the history pool) and which of
them the context used, so the fidelity test and the pools need no per-row Python; the batched
generator (generator.py) and the per-seed thresholds (tau.py) both read their rows from here.
"""
from dataclasses import dataclass, fields

import numpy as np
import torch

from recbole_rsir.generation.full_sort import FullSortDecoder
from recbole_rsir.generation.rules import time_gap
from recbole_rsir.model.backbone import is_backbone


@dataclass
class Batch:
    """The slots being decoded: one row each, all ``[N, ...]`` tensors on the model's device."""
    slot: torch.Tensor      # [N]        slot index q
    context: torch.Tensor   # [N, max_len] items so far (prefix, then generated), 0-padded
    times: torch.Tensor     # [N, max_len] float64 timestamps aligned with context
    length: torch.Tensor    # [N]        items in context
    prefix: torch.Tensor    # [N]        prefix length: items before the first generated one
    gap: torch.Tensor       # [N]        float64 time added per generated item
    history: torch.Tensor   # [N, S]     the seed's distinct items, ascending; padded with n_items
    used: torch.Tensor      # [N, S]     history item already in context (padding counts as used)
    distinct: torch.Tensor  # [N]        distinct items in context
    user: torch.Tensor      # [N]        the seed's user
    retry: torch.Tensor     # [N, R]     the last pick's untried pool candidates (refine), best first; 0 = none
    retried: torch.Tensor   # [N]        the newest item is one of them (it replaced a failed one)
    tau: torch.Tensor       # [N]        the row's fidelity threshold (its seed's, under per_user)

    def __len__(self):
        return len(self.slot)

    def select(self, index):
        return Batch(*(getattr(self, f.name)[index] for f in fields(self)))

    def cat(self, other):
        return Batch(*(torch.cat([getattr(self, f.name), getattr(other, f.name)]) for f in fields(self)))

    def append(self, items):
        """Add one generated item to every row (never one already in its context)."""
        self.place(items, torch.zeros_like(self.length, dtype=torch.bool))

    def place(self, items, replace):
        """One generated item per row (never one already in its context): after the context, or
        where ``replace``, in place of the newest item (a generated one that failed the fidelity
        test; its time stays)."""
        rows = torch.arange(len(self), device=items.device)
        position = self.length - replace.long()
        failed = torch.where(replace, self.context[rows, position], -1)
        self.used &= self.history != failed.unsqueeze(1)   # generated items occur once in a context
        self.context[rows, position] = items
        self.times[rows, position] = self.times[rows, position - 1] + self.gap
        self.length += (~replace).long()
        self.used |= self.history == items.unsqueeze(1)
        self.distinct += (~replace).long()


class SlotSource:
    """Builds the rows of pending slots from the seeds: prefix, history, time gap."""

    def __init__(self, seeds, prefix, settings, n_items, device, taus=None):
        self.seeds, self.prefix, self.m, self.max_len = seeds, prefix.numpy(), settings.m, settings.max_len
        self.taus = np.full(len(seeds), settings.tau, dtype=np.int64) if taus is None else taus
        self.n_items, self.device, self.retries = n_items, device, settings.retries
        self.gaps = np.array([time_gap(seeds.times(s)) for s in range(len(seeds))], dtype=np.float64)
        # each seed's distinct items in ascending order, flat (CSR)
        owner = np.repeat(np.arange(len(seeds)), seeds.lengths)
        order = np.lexsort((seeds.items, owner))
        items, owner = seeds.items[order], owner[order]
        first = np.ones(len(items), dtype=bool)
        first[1:] = (items[1:] != items[:-1]) | (owner[1:] != owner[:-1])
        self.history_items = items[first]
        counts = np.bincount(owner[first], minlength=len(seeds))
        self.history_offsets = np.concatenate([[0], np.cumsum(counts)])
        self.history_width = max(int(counts.max()) if len(counts) else 1, 1)

    def rows(self, start, stop):
        """Rows for slots ``start .. stop - 1``, each with its prefix as context."""
        slot = np.arange(start, stop)
        s = slot // self.m
        prefix = self.prefix[slot]
        position = np.arange(self.max_len)
        in_prefix = position[None, :] < prefix[:, None]
        flat = np.where(in_prefix, self.seeds.offsets[s][:, None] + position[None, :], 0)
        context = np.where(in_prefix, self.seeds.items[flat], 0)
        times = np.where(in_prefix, self.seeds.timestamps[flat], 0.0)
        column = np.arange(self.history_width)
        n_history = np.diff(self.history_offsets)[s]
        in_history = column[None, :] < n_history[:, None]
        flat = np.where(in_history, self.history_offsets[s][:, None] + column[None, :], 0)
        history = np.where(in_history, self.history_items[flat], self.n_items)
        used = ~in_history
        for j in range(int(prefix.max()) if len(prefix) else 0):
            used |= history == context[:, j:j + 1]
        ordered = np.sort(context, axis=1)
        distinct = ((ordered > 0) & (ordered != np.pad(ordered, ((0, 0), (1, 0)))[:, :-1])).sum(1)
        to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
        return Batch(to(slot), to(context.astype(np.int64)), to(times.astype(np.float64)),
                     to(prefix.astype(np.int64)), to(prefix.astype(np.int64)), to(self.gaps[s]),
                     to(history.astype(np.int64)), to(used), to(distinct.astype(np.int64)),
                     to(self.seeds.users[s]), to(np.zeros((len(slot), self.retries), dtype=np.int64)),
                     to(np.zeros(len(slot), dtype=bool)), to(self.taus[s]))


def decoder_for(model, capacity):
    """A backbone's own cache for up to ``capacity`` rows; for any other model, its full_sort_predict."""
    return model.new_cache(capacity) if is_backbone(model) else FullSortDecoder(model)
