"""The rules both generators share (generation/rules.py), each against a plain reference: a bug
here would show on both sides of the fast-against-reference equivalence tests alike."""
import math

import numpy as np
import pytest
import torch

from recbole_rsir.generation.rules import (GenerationSettings, RandomDraws, accept, pick_from_top, prefix_lengths,
                                          time_gap)


def settings(**kw):
    base = dict(m=1, tau=50, p=0.5, min_len=3, fidelity=True, prefix_len=1, topk=1, max_len=8, batch_size=4,
                score_chunk=0)
    return GenerationSettings(**{**base, **kw})


def softmax_pick(scores, u):
    """Walk the softmax probabilities of the finite scores; the first index whose running sum passes u."""
    finite = [s for s in scores if s != -math.inf]
    weights = [math.exp(s - max(finite)) for s in finite]
    running = 0.0
    for i, w in enumerate(weights):
        running += w / sum(weights)
        if u < running:
            return i
    return len(finite) - 1


@pytest.mark.parametrize("scores", [[2.0, 1.0, 0.5, -1.0], [3.0, 3.0, -math.inf, -math.inf],
                                    [0.7, -math.inf, -math.inf]])
def test_pick_from_top_draws_by_softmax_over_the_finite_scores(scores):
    u = torch.linspace(0, 0.999, 101)
    rows = torch.tensor(scores).expand(len(u), -1)
    picked = pick_from_top(rows, u).tolist()
    assert picked == [softmax_pick(scores, float(x)) for x in u]
    assert picked == [int(pick_from_top(torch.tensor(scores), x)) for x in u]      # one row alike
    n_finite = sum(s != -math.inf for s in scores)
    assert set(picked) == set(range(n_finite))                                       # every finite one, no other


def test_pick_from_top_shares_follow_the_softmax():
    scores = torch.tensor([1.0, 0.0, -0.5])
    u = (torch.arange(10_000) + 0.5) / 10_000
    shares = np.bincount(pick_from_top(scores.expand(len(u), -1), u).numpy(), minlength=3) / len(u)
    assert np.allclose(shares, torch.softmax(scores, 0).numpy(), atol=1e-3)


def test_time_gap_is_the_median_gap_between_consecutive_items():
    assert time_gap(np.array([0, 10, 30])) == 15.0
    assert time_gap(np.array([5, 6, 8, 20])) == 2.0
    assert time_gap(np.array([7])) == 0.0


def test_accept_keeps_the_first_copy_of_long_enough_sequences_with_a_generated_item():
    slots = [[1, 2, 3], [4, 5], [1, 2, 3], [6, 7, 8], [9, 10, 11, 12]]
    times = [[0, 1, 2], [0, 1], [5, 6, 7], [0, 1, 2], [0, 1, 2, 3]]
    users = [10, 11, 12, 13, 14]
    prefix = [1, 1, 1, 3, 2]                  # slot 3 holds only its prefix: nothing generated
    result = accept(slots, times, users, prefix, settings(min_len=3))
    assert result.sequences.to_lists() == [[1, 2, 3], [9, 10, 11, 12]]
    assert result.sequences.users.tolist() == [10, 14]
    assert [result.sequences.times(i).tolist() for i in range(2)] == [[0, 1, 2], [0, 1, 2, 3]]
    assert result.n_slots == 5 and result.acceptance_rate == 2 / 5 and result.mean_length == 3.5
    assert accept(slots, times, users, prefix, settings(min_len=2)).sequences.to_lists() == [[1, 2, 3], [4, 5],
                                                                                            [9, 10, 11, 12]]


def test_random_prefix_lengths_cover_one_to_the_readable_length_minus_one():
    lengths = np.array([2, 5, 30])
    s = settings(m=2000, prefix_len="random", max_len=8)
    draws = RandomDraws(torch.rand(len(lengths) * s.m, generator=torch.Generator().manual_seed(0)), None, None)
    prefix = prefix_lengths(lengths, s, draws).reshape(len(lengths), s.m)
    for row, n in zip(prefix, lengths):
        assert set(row.tolist()) == set(range(1, min(n, s.max_len)))   # each value drawn, none outside


def test_a_fixed_prefix_length_is_cut_to_the_readable_sequence():
    prefix = prefix_lengths(np.array([1, 3, 20]), settings(m=2, prefix_len=5, max_len=4), draws=None)
    assert prefix.tolist() == [1, 1, 3, 3, 4, 4]
