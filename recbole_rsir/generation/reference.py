"""RSIR generation written as plainly as possible: one sequence, one step at a time.

This is the specification in code. It scores through the model's own
``full_sort_predict`` on the whole context at every step (given as RecBole's evaluation gives
it: see full_sort.py), so it works for any RecBole sequential model; the fast generator must
produce exactly what this produces.
"""
import math

import torch
from tqdm import tqdm

from recbole_rsir.generation.full_sort import context_interaction, full_sort_scores
from recbole_rsir.generation.rules import StepCounts, accept, draw_randomness, pick_from_top, prefix_lengths, time_gap
from recbole_rsir.generation.tau import generation_taus


@torch.no_grad()
def score_context(model, context, context_times, user):
    """Scores of all items (padding excluded: -inf) given one synthetic context of ``user``."""
    device = model.device
    interaction = context_interaction(
        model, torch.tensor([context], device=device), torch.tensor([len(context)], device=device),
        torch.tensor([user], device=device), torch.tensor([context_times], dtype=torch.float32, device=device))
    scores = full_sort_scores(model, interaction).view(-1).float().cpu()
    scores[0] = -math.inf
    return scores


def passes_fidelity(scores, remaining, tau):
    """Some not-yet-used real item ranks within the top tau (rank = 1 + #strictly higher)."""
    for item in remaining:
        if 1 + int((scores > scores[item]).sum()) <= tau:
            return True
    return False


def generate_one(model, seed_items, seed_times, user, n_prefix, pool_u, pick_u, settings, counts, judge=None,
                 tau=None):
    """One synthetic sequence (items, times) of ``user`` grown from ``seed_items[:n_prefix]``;
    its steps are added to ``counts``. ``judge`` (None: ``model``) scores the fidelity test,
    with threshold ``tau`` (None: ``settings.tau``).

    With ``settings.refine`` = K, an item that fails the test is replaced by the next of its
    step's pool's best items (descending score, the failed one and the context excluded), up
    to K of them, each tested in turn; only when none passes is the item withdrawn."""
    tau = settings.tau if tau is None else tau
    history = set(seed_items)
    context = list(seed_items[:n_prefix])
    times = list(seed_times[:n_prefix])
    gap = time_gap(seed_times)
    step = 0
    retries, retried = [], False   # the last pick's untried candidates; whether context[-1] is one
    while True:
        scores = score_context(model, context, times, user)
        if settings.fidelity:
            remaining = history - set(context)
            if not remaining:
                counts.refine_successes += retried
                break
            judged = scores if judge is None else score_context(judge, context, times, user)
            passed = passes_fidelity(judged, remaining, tau)
            if not retried:
                counts.fidelity_tests += 1
                counts.fidelity_failures += not passed
            if not passed:
                if retries:
                    context[-1] = retries.pop(0)
                    retried = True
                    counts.refine_attempts += 1
                    continue
                if len(context) > n_prefix:
                    context.pop()
                    times.pop()
                break
            counts.refine_successes += retried
        retried = False
        if len(context) >= settings.max_len:
            break
        from_history = bool(pool_u[step] < settings.p)
        if from_history:
            pool = history - set(context)
        else:
            pool = set(range(1, len(scores))) - set(context)
        if not pool:
            break
        pool_scores = torch.full_like(scores, -math.inf)
        members = torch.tensor(sorted(pool))
        pool_scores[members] = scores[members]
        top_scores, top_items = torch.topk(pool_scores, min(settings.candidates, len(pool)))
        index = pick_from_top(top_scores[:settings.topk], pick_u[step]).item()
        context.append(top_items[index].item())
        times.append(times[-1] + gap)
        retries = [item for i, item in enumerate(top_items.tolist()) if i != index][:settings.refine]
        counts.history_picks += from_history
        counts.catalogue_picks += not from_history
        step += 1
    return context, times


def generate_reference(model, seeds, settings, seed, show_progress=False, judge=None):
    """Synthetic sequences for every seed sequence in ``seeds`` (a SequenceSet); ``judge``: the
    model whose scores the fidelity test reads (None: ``model`` judges itself) and, under
    ``per_user``, whose teacher-forced ranks set each seed's tau."""
    model.eval()
    if judge is not None:
        judge.eval()
    taus = generation_taus(model, seeds, settings, judge)
    n_slots = len(seeds) * settings.m
    draws = draw_randomness(n_slots, settings.max_len, seed)
    prefix = prefix_lengths(seeds.lengths, settings, draws)
    sequences, times, users, counts = [], [], [], StepCounts()
    for q in tqdm(range(n_slots), desc="Generate (reference)", ncols=100, disable=not show_progress):
        s = q // settings.m
        user = int(seeds.users[s])
        items, ts = generate_one(model, seeds[s].tolist(), seeds.times(s).tolist(), user, int(prefix[q]),
                                 draws.pool[q], draws.pick[q], settings, counts, judge,
                                 int(taus[s]))
        sequences.append(items)
        times.append(ts)
        users.append(user)
    return accept(sequences, times, users, prefix.tolist(), settings, counts, taus)
