"""RSIR generation, batched: exactly what reference.py produces, many slots at a time.

Terms as in the paper and reference.py. A *slot* q = seed_index * m + j is one attempt to
grow a synthetic sequence from the *prefix* of a seed (a real training sequence). At each
step the model scores the catalogue given the context; the *fidelity* test asks that some
real item of the seed not yet in the context rank within the top *tau*: if none does, the
last generated item is withdrawn and the slot ends. Otherwise the next item is picked from
a *pool* (with probability *p* the seed's own items not yet used, else the whole catalogue
minus the context) among the pool's top k.

What is batched, and how:
- up to ``batch_size`` slots advance together as tensors; a finished slot leaves the batch
  and a pending one takes its place, so batches stay full;
- the fidelity test needs no loop: rank = 1 + #strictly higher <= tau exactly when an
  item's score is >= the tau-th largest score of items 1..n_items-1; tau is per row
  (``rsir_tau_schedule: per_user`` gives each seed its own, computed once in tau.py), and
  the top list read is as long as the largest tau of the rows scored;
- with ``score_chunk > 0`` a backbone scores the catalogue in chunks: the tau-th largest
  score and the pool's top k are merged from per-chunk top-k's, so no [batch, n_items]
  tensor exists;
- a backbone decodes through its own cache (``model.new_cache``: SASRec and HSTU keep
  per-layer keys and values, GRU4Rec its GRU state) and encodes only the newest item at each
  step; any other RecBole model scores every row's whole context with its own
  ``full_sort_predict`` (full_sort.py: slower, the same result).

All randomness comes from rules.draw_randomness indexed by (slot, step), so the output
does not depend on batch size, chunking, the decoding path, or how many processes share the
slots (in a distributed run each rank decodes its own contiguous share, then every slot is
gathered once and accepted in slot order, as one process would). What can differ from the
reference: an exact tie between two items' scores may be broken the other way, and a
batched matmul may round a score's last bit differently from the reference's one-row one
(float64 models make both moot; tests/test_generation.py runs them).
"""
import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from recbole_rsir import distributed
from recbole_rsir.generation.candidates import CandidateStage
from recbole_rsir.generation.rows import SlotSource, decoder_for
from recbole_rsir.generation.rules import StepCounts, accept, draw_randomness, pick_from_top, prefix_lengths
from recbole_rsir.generation.tau import generation_taus
from recbole_rsir.model.backbone import is_backbone, time_field


@dataclass
class Scores:
    """What one step needs from the catalogue's scores, per row."""
    history: torch.Tensor          # [N, S]  score of each history item
    tau_th: torch.Tensor           # [N]     the row's tau-th largest score of items 1.. (None: fidelity off)
    catalogue_top: torch.Tensor    # [N, k]  top scores of the catalogue minus the context (k = 0: unused)
    catalogue_items: torch.Tensor  # [N, k]  their items

    def select(self, index):
        return Scores(self.history[index], None if self.tau_th is None else self.tau_th[index],
                      self.catalogue_top[index], self.catalogue_items[index])


def merge_top(values, items, new_values, new_items, k):
    """Top k of two descending candidate lists and their items."""
    if not values.size(1):
        return new_values, new_items
    values = torch.cat([values, new_values], dim=1)
    top, index = torch.topk(values, min(k, values.size(1)), dim=1)
    return top, torch.cat([items, new_items], dim=1).gather(1, index)


def score_catalogue(decoder, hidden, batch, settings, catalogue, ann=None):
    """Scores of the catalogue given each row's context (``decoder.scores`` of its ``hidden``
    output), reduced to what the step needs.

    One top list of the whole catalogue serves both tests: its tau-th value is the
    fidelity threshold (each row's own tau: the list is as long as the largest), and its
    first k items outside the context are the catalogue pool's top k (it is long enough:
    k + the context's length). Rows with the same
    context (the m slots of a seed start alike) have the same scores, so each distinct
    context is scored once; for a model that reads time, a context is its items and
    their timestamps (two seeds may start with the same items at other times), and for a
    model that may read the user (not a backbone), also its user. The
    catalogue is scored in chunks of ``score_chunk`` items (all at once when 0) whose top
    lists are merged: memory holds [contexts, chunk] scores, never [N, n_items]. Scores
    are float32, as the reference's. With ``ann`` (a candidates.CandidateStage) only the
    items its index retrieves and the history items are scored (see candidates.py).
    """
    model, n_items = decoder.model, decoder.n_items
    width = int(batch.length.max())
    key = batch.context[:, :width]
    if time_field(model):
        key = torch.cat([key, batch.times[:, :width].view(torch.int64)], dim=1)  # the times' bits
    if not is_backbone(model):
        key = torch.cat([key, batch.user.unsqueeze(1)], dim=1)
    contexts, row_context = torch.unique(key, dim=0, return_inverse=True)
    contexts = contexts[:, :width]
    first_row = torch.full((len(contexts),), len(batch), device=hidden.device).scatter_reduce(
        0, row_context, torch.arange(len(batch), device=hidden.device), "amin")
    hidden = hidden[first_row]

    fidelity = settings.fidelity
    tau, k = batch.tau.clamp(max=n_items - 1), min(settings.candidates, n_items - 1)
    list_len = min(max(int(tau.max()) if fidelity else 0, k + width if catalogue else 0), n_items)
    chunk = settings.score_chunk or n_items
    top = hidden.new_empty((len(contexts), 0), dtype=torch.float32)
    top_items = contexts.new_empty((len(contexts), 0))
    history = torch.full(batch.history.shape, -math.inf, device=hidden.device)
    for start in range(0, n_items if ann is None else 0, chunk):
        stop = min(start + chunk, n_items)
        items = None if stop - start == n_items else torch.arange(start, stop, device=hidden.device)
        scores = decoder.scores(hidden, items).float()
        if start == 0:
            scores[:, 0] = -math.inf  # padding, never an item
        local = batch.history - start
        inside = (local >= 0) & (local < stop - start)
        history = torch.where(inside, scores[row_context.unsqueeze(1), local.clamp(0, stop - start - 1)],
                              history)
        if list_len:
            chunk_top, chunk_items = torch.topk(scores, min(list_len, stop - start), dim=1)
            top, top_items = merge_top(top, top_items, chunk_top, chunk_items + start, list_len)
        del scores  # before the next chunk's scores exist
    if ann is not None:
        history = ann.history_scores(hidden[row_context], batch.history)
        top, top_items = ann.top(hidden, list_len)

    tau_th = top[row_context, tau - 1] if fidelity else None   # row_context: [N], tau: [N]
    catalogue_top, catalogue_items = top[:, :0], top_items[:, :0]
    if catalogue:
        in_context = (top_items.unsqueeze(2) == contexts.unsqueeze(1)).any(2)
        catalogue_top, index = torch.topk(top.masked_fill(in_context, -math.inf), k, dim=1)
        catalogue_items = top_items.gather(1, index)
    return Scores(history, tau_th, catalogue_top[row_context], catalogue_items[row_context])


def pool_top(scores, batch, from_history, k):
    """Each row's pool top ``[N, k]`` (scores descending, -inf = absent) and its items."""
    history_scores = scores.history.masked_fill(batch.used, -math.inf)
    top, index = torch.topk(history_scores, min(k, history_scores.size(1)), dim=1)
    top_items = batch.history.gather(1, index)
    pad = lambda x, fill: torch.nn.functional.pad(x, (0, k - x.size(1)), value=fill)
    top, top_items = pad(top, -math.inf), pad(top_items, 0)
    if scores.catalogue_top.size(1):
        from_catalogue = ~from_history.unsqueeze(1)
        top = torch.where(from_catalogue, pad(scores.catalogue_top, -math.inf), top)
        top_items = torch.where(from_catalogue, pad(scores.catalogue_items, 0), top_items)
    return top, top_items


def untried(top_items, choice, pool_size, refine):
    """``[N, refine]``: each row's pool top without its picked item, best first (0 = none
    left): the items refine tries, in order, if the picked one fails the fidelity test."""
    n = top_items.size(1)
    if not refine:
        return top_items[:, :0]
    others = torch.arange(n - 1, device=top_items.device).expand(len(top_items), n - 1)
    others = others + (others >= choice.unsqueeze(1)).long()      # every column but the picked one
    items = top_items.gather(1, others).masked_fill(others >= pool_size.unsqueeze(1), 0)
    return items[:, :refine]


def pick(top, u, pool_size, k):
    """Index into each row's pool top, drawn with ``u``; rows are grouped by how many
    candidates they have, so each one sees exactly the reference's ``min(k, |pool|)`` list."""
    n_candidates = pool_size.clamp(max=k)
    choice = torch.zeros_like(n_candidates)
    for c in torch.unique(n_candidates).tolist():
        rows = (n_candidates == c).nonzero().squeeze(1)
        choice[rows] = pick_from_top(top[rows, :c], u[rows])
    return choice


def survivors(finished):
    """Rows that go on, in an order that moves few: the last ones fill the finished ones' places."""
    n_kept = int((~finished).sum())
    order = torch.arange(n_kept, device=finished.device)
    order[finished[:n_kept]] = (~finished[n_kept:]).nonzero().squeeze(1) + n_kept
    return order


def gather_slots(sequences, times, counts, first, last):
    """Every rank's decoded slots ``first .. last - 1`` in their places, and the summed counts."""
    if distributed.world_size() == 1:
        return sequences, times, counts
    total = StepCounts()
    for start, stop, part, part_times, part_counts in distributed.gather(
            (first, last, sequences[first:last], times[first:last], counts.as_dict())):
        sequences[start:stop], times[start:stop] = part, part_times
        for name, value in part_counts.items():
            setattr(total, name, getattr(total, name) + value)
    return sequences, times, total


@torch.no_grad()
def generate(model, seeds, settings, seed, show_progress=False, judge=None):
    """Synthetic sequences for every seed sequence in ``seeds`` (a SequenceSet); ``judge``: the
    model whose scores the fidelity test reads (None: ``model`` judges itself), decoded beside it,
    and under ``per_user`` the one whose teacher-forced ranks set each seed's tau (tau.py).

    Same result as ``generate_reference(model, seeds, settings, seed, judge=judge)``.
    """
    model.eval()
    device, max_len = model.device, settings.max_len
    n_slots = len(seeds) * settings.m
    decoder = decoder_for(model, min(settings.batch_size, n_slots))
    n_items = decoder.n_items
    judge_decoder = None
    if judge is not None and settings.fidelity:
        judge.eval()
        judge_decoder = decoder_for(judge, min(settings.batch_size, n_slots))
        if judge_decoder.n_items != n_items:
            raise ValueError(f"the judge scores {judge_decoder.n_items} items, the generator {n_items}")
    taus = generation_taus(model, seeds, settings, judge if judge_decoder is not None else None)
    per_user = settings.tau_schedule == "per_user" and settings.fidelity and len(taus)
    largest_tau = int(taus.max()) if per_user else None   # what an ann candidate list must cover
    # rsir_candidates ann: one index per scoring model, built once (its item vectors are fixed here)
    ann = CandidateStage(model, settings, n_items, largest_tau) if settings.ann and n_slots else None
    judge_ann = CandidateStage(judge, settings, n_items, largest_tau) if ann and judge_decoder is not None else None
    draws = draw_randomness(n_slots, max_len, seed)
    prefix = prefix_lengths(seeds.lengths, settings, draws)
    pool_u, pick_u = draws.pool.to(device), draws.pick.to(device)
    source = SlotSource(seeds, prefix, settings, n_items, device, taus)

    sequences, times, counts = [None] * n_slots, [None] * n_slots, StepCounts()
    slot_start, slot_stop = distributed.share(n_slots)   # this rank's slots (one process: all)
    batch, hidden, judge_hidden, next_slot = source.rows(slot_start, slot_start), None, None, slot_start
    progress = tqdm(total=slot_stop - slot_start, desc="generate", ncols=100, leave=False,
                    disable=not show_progress)
    while next_slot < slot_stop or len(batch):
        # pending slots fill the batch; their prefixes are encoded
        n_new = min(settings.batch_size - len(batch), slot_stop - next_slot)
        if n_new:
            new = source.rows(next_slot, next_slot + n_new)
            new_hidden = decoder.start(new)
            batch = batch.cat(new)
            hidden = new_hidden if hidden is None else torch.cat([hidden, new_hidden])
            if judge_decoder is not None:
                new_hidden = judge_decoder.start(new)
                judge_hidden = new_hidden if judge_hidden is None else torch.cat([judge_hidden, new_hidden])
            next_slot += n_new

        # which pool each row would draw from at this step (same draw with fidelity on or off)
        step = (batch.length - batch.prefix).clamp(max=max_len - 1)
        from_history = pool_u[batch.slot, step] < settings.p
        pool_size = torch.where(from_history, (~batch.used).sum(1), n_items - 1 - batch.distinct)
        scores = score_catalogue(decoder, hidden, batch, settings, catalogue=bool((~from_history).any()),
                                 ann=ann)
        judged = scores if judge_decoder is None else score_catalogue(judge_decoder, judge_hidden, batch,
                                                                      settings, catalogue=False, ann=judge_ann)

        # fidelity: some real item not yet used ranks within the top tau, or the slot ends
        # (refine: unless an untried candidate of the failed item's pool is left to test next)
        finished = torch.zeros(len(batch), dtype=torch.bool, device=device)
        refining = torch.zeros_like(finished)
        kept = batch.length.clone()
        if settings.fidelity:
            remaining = ~batch.used
            passes = ((judged.history >= judged.tau_th.unsqueeze(1)) & remaining).any(1)
            tested = remaining.any(1)          # rows with a real item left to test
            failed = tested & ~passes
            first = tested & ~batch.retried    # the test of a step's picked item
            counts.fidelity_tests += int(first.sum())
            counts.fidelity_failures += int((failed & first).sum())
            counts.refine_successes += int((batch.retried & ~failed).sum())
            if batch.retry.size(1):
                refining = failed & (batch.retry[:, 0] > 0)
            ended = failed & ~refining
            kept -= (ended & (batch.length > batch.prefix)).long()  # withdraw the last item
            finished |= ~tested | ended
        finished |= ((batch.length >= max_len) | (pool_size == 0)) & ~refining

        done = finished.nonzero().squeeze(1)
        if len(done):
            width = int(kept[done].max())
            for q, n, items, ts in zip(batch.slot[done].tolist(), kept[done].tolist(),
                                       batch.context[done, :width].tolist(),
                                       batch.times[done, :width].tolist()):
                sequences[q], times[q] = items[:n], ts[:n]
        progress.update(len(done))

        # the rest pick their next item from the pool's top k
        # and refining rows put their next candidate in place of the failed item
        go = survivors(finished)
        batch, hidden, step, from_history, pool_size, refining = (
            batch.select(go), hidden[go], step[go], from_history[go], pool_size[go], refining[go])
        decoder.keep(go)
        if judge_decoder is not None:
            judge_hidden = judge_hidden[go]
            judge_decoder.keep(go)
        if not len(batch):
            continue
        top, top_items = pool_top(scores.select(go), batch, from_history, settings.candidates)
        choice = pick(top, pick_u[batch.slot, step], pool_size, settings.topk)
        picking = ~refining
        n_history = int((from_history & picking).sum())
        counts.history_picks += n_history
        counts.catalogue_picks += int(picking.sum()) - n_history
        counts.refine_attempts += int(refining.sum())
        items = top_items.gather(1, choice.unsqueeze(1)).squeeze(1)
        if batch.retry.size(1):
            items = torch.where(refining, batch.retry[:, 0], items)
            shifted = torch.nn.functional.pad(batch.retry[:, 1:], (0, 1))
            batch.retry = torch.where(refining.unsqueeze(1), shifted,
                                      untried(top_items, choice, pool_size, batch.retry.size(1)))
            batch.retried = refining
        batch.place(items, refining)
        hidden = decoder.extend(batch, refining)
        if judge_decoder is not None:
            judge_hidden = judge_decoder.extend(batch, refining)
    progress.close()

    sequences, times, counts = gather_slots(sequences, times, counts, slot_start, slot_stop)
    users = np.repeat(seeds.users, settings.m).tolist()
    return accept(sequences, times, users, prefix.tolist(), settings, counts, taus)
