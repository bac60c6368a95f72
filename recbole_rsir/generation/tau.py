"""Per-seed fidelity thresholds (``rsir_tau_schedule: per_user``), computed once for both generators.

Before a generation the scoring model (the judge if there is one, since it scores the test) is
teacher-forced along every seed's own training sequence: at each position t >= 1 of the seed's
first MAX_ITEM_LIST_LENGTH items (the longest context generation reads), the rank of the real item
t given items 0..t-1, with the fidelity test's rank (1 + number of items 1..n_items-1 scoring
strictly higher, float32 scores). The seed's tau is ``clamp(ceil(quantile_q(ranks)), 1, tau_max)``
(numpy's default, linearly interpolated quantile, rounded to 9 decimals before ``ceil`` so that
float error cannot lift a whole rank by one); a seed with no such position gets ``rsir_tau``.
Only the seeds are read: the training sequences, never validation or test items.

The ranks go through the generator's own decoders (a backbone's cache, or full_sort_predict), a
whole batch of seeds at a time, extended by one real item per step; tests/test_generation.py
checks them against a plain per-seed loop over the reference's scores.
"""
import math
from dataclasses import replace

import numpy as np
import torch

from recbole_rsir.generation.rows import SlotSource, decoder_for


def generation_taus(model, seeds, settings, judge=None):
    """``[len(seeds)]`` int64: the tau each seed's slots are tested with; under ``per_user`` (with
    the fidelity test on) from the ranks of the model that judges, else ``settings.tau`` for all."""
    if settings.tau_schedule == "per_user" and settings.fidelity and len(seeds):
        return taus_from_ranks(teacher_forced_ranks(model if judge is None else judge, seeds, settings), settings)
    return np.full(len(seeds), settings.tau, dtype=np.int64)


def taus_from_ranks(ranks, settings):
    """Each seed's ``clamp(ceil(quantile(ranks)), 1, tau_max)``, or ``settings.tau`` without ranks."""
    taus = [settings.tau if not len(r) else
            min(max(math.ceil(round(float(np.quantile(r, settings.tau_quantile)), 9)), 1), settings.tau_max)
            for r in ranks]
    return np.asarray(taus, dtype=np.int64)


@torch.no_grad()
def teacher_forced_ranks(model, seeds, settings):
    """Per seed, the ranks (int64 array, possibly empty) of its real items 1.. given the items before."""
    model.eval()
    device = model.device
    lengths = np.minimum(seeds.lengths, settings.max_len)
    counts = np.maximum(lengths - 1, 0)                    # ranked positions per seed, flat (CSR)
    starts = np.concatenate([[0], np.cumsum(counts)])
    flat = np.zeros(int(starts[-1]), dtype=np.int64)
    starts_t = torch.as_tensor(starts[:-1], device=device)
    items = torch.as_tensor(seeds.items, device=device)
    times = torch.as_tensor(seeds.timestamps, dtype=torch.float64, device=device)
    source = None
    for start in range(0, len(seeds), settings.batch_size):
        stop = min(start + settings.batch_size, len(seeds))
        decoder = decoder_for(model, stop - start)
        if source is None:
            source = SlotSource(seeds, torch.ones(len(seeds), dtype=torch.long), replace(settings, m=1),
                                decoder.n_items, device)
        batch = source.rows(start, stop)
        hidden = decoder.start(batch)
        seed_index = torch.arange(start, stop, device=device)
        end = torch.as_tensor(lengths[start:stop], device=device)
        offsets = torch.as_tensor(seeds.offsets[start:stop], device=device)
        while True:
            go = (batch.length < end).nonzero().squeeze(1)       # rows with a real next item
            if not len(go):
                break
            if len(go) < len(batch):
                batch, hidden, seed_index, end, offsets = (batch.select(go), hidden[go], seed_index[go], end[go],
                                                           offsets[go])
                decoder.keep(go)
            target = items[offsets + batch.length]
            rank = ranks_of(decoder, hidden, target, settings.score_chunk)
            flat[(starts_t[seed_index] + batch.length - 1).cpu().numpy()] = rank.cpu().numpy()
            place_real(batch, target, times[offsets + batch.length])
            hidden = decoder.extend(batch)
    return np.split(flat, starts[1:-1]) if len(seeds) else []


def place_real(batch, items, times):
    """Append each row's real next item at its real time (it may repeat one in the context: no
    pool bookkeeping here)."""
    rows = torch.arange(len(batch), device=items.device)
    batch.context[rows, batch.length] = items
    batch.times[rows, batch.length] = times
    batch.length += 1


def ranks_of(decoder, hidden, target, score_chunk):
    """``[N]``: 1 + number of items 1..n_items-1 whose float32 score is strictly above the target's."""
    n_items = decoder.n_items
    chunk = score_chunk or n_items
    chunks = [(start, min(start + chunk, n_items)) for start in range(0, n_items, chunk)]

    def scores(start, stop):
        items = None if stop - start == n_items else torch.arange(start, stop, device=hidden.device)
        s = decoder.scores(hidden, items).float()
        if start == 0:
            s[:, 0] = -math.inf   # padding, never an item
        return s

    rows = torch.arange(len(target), device=hidden.device)
    if len(chunks) == 1:
        s = scores(0, n_items)
        return 1 + (s > s[rows, target].unsqueeze(1)).sum(1)
    own = torch.empty(len(target), dtype=torch.float32, device=hidden.device)
    for start, stop in chunks:
        inside = (target >= start) & (target < stop)
        if inside.any():
            own[inside] = scores(start, stop)[rows[inside], target[inside] - start]
    higher = torch.zeros(len(target), dtype=torch.long, device=hidden.device)
    for start, stop in chunks:
        higher += (scores(start, stop) > own.unsqueeze(1)).sum(1)
    return 1 + higher
