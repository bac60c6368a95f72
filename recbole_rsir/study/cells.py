"""A study's cells: one arm's round of one model, read from the runs' results files, and the
statistics over seeds that the report's tables and plots both use.

A cell is ``{seed: value}``; two cells are compared over the seeds both have.
"""
import warnings

import numpy as np
from scipy import stats

from recbole_rsir.study.plan import SWEEP_P, SWEEP_TAU, VARIANT_ARMS, variants

PROTOCOLS = {"recbole": "RecBole's protocol: a user's earlier items stay in the ranking",
             "exclude_history": "earlier items filtered from the ranking (RSIR reference code, strong benchmark)"}
SHORT_NAMES = {"recbole": "RecBole's protocol", "exclude_history": "earlier items filtered"}


def round_of(payload, k):
    """Round ``k`` of a run's results, None if it has not got that far."""
    rounds = payload["rounds"]
    return rounds[k] if k < len(rounds) else None


def training_size(r):
    """``(sequences, density)`` of a round's training set: density = interactions / (sequences x items)."""
    n = r["n_real_sequences"] + r["n_synthetic_sequences"] + r["n_extra_sequences"]
    return n, r["n_interactions"] / (n * r["n_items"])


def variant_arms(model, base):
    """``(arm, label)`` of every variant run of ``model`` on ``base`` (rsir or strong)."""
    return [(name if base == "rsir" else f"{base}-{name}", label)
            for arm in VARIANT_ARMS for name, (label, _) in variants(arm, model).items()]


def values(runs, model, arm, k, protocol, metric):
    """``{seed: test metric}`` of one cell."""
    out = {}
    for (m, a, seed), payload in runs.items():
        r = round_of(payload, k) if (m, a) == (model, arm) else None
        if r is not None and r.get("protocols"):
            out[seed] = r["protocols"][protocol]["test"][metric]
    return out


def compare(cell, base):
    """Relative change of the means and the paired t-test's p, both over the seeds both have (an
    arm run on fewer seeds than its base is compared with the base on those seeds)."""
    common = sorted(set(cell or {}) & set(base or {}))
    if not common:
        return None, None
    a, b = np.array([cell[s] for s in common]), np.array([base[s] for s in common])
    change = a.mean() / b.mean() - 1.0
    if len(common) < 2:
        return change, None
    if np.allclose(a, b):
        return change, 1.0
    with warnings.catch_warnings():   # near-equal pairs: scipy warns, the p it gives is still the test's
        warnings.simplefilter("ignore", RuntimeWarning)
        return change, float(stats.ttest_rel(a, b).pvalue)


def paired_means(cell, base):
    """``(mean of cell, mean of base, seeds)`` over the seeds both have; None without one."""
    common = sorted(set(cell or {}) & set(base or {}))
    if not common:
        return None
    return float(np.mean([cell[s] for s in common])), float(np.mean([base[s] for s in common])), len(common)


def beyond_spread(cell, plain):
    """Whether ``cell`` beats ``plain`` beyond the seeds' spread: over the seeds both have (at least
    two), its mean exceeds plain's by more than the larger of their standard deviations; None with
    fewer seeds, where the spread is unknown."""
    common = sorted(set(cell) & set(plain))
    if len(common) < 2:
        return None
    a, b = (np.array([x[s] for s in common]) for x in (cell, plain))
    return bool(a.mean() - b.mean() > max(a.std(ddof=1), b.std(ddof=1)))


def round_outcome(*protocols):
    """``better`` or ``worse`` when the variant's cell is beyond the spread of plain RSIR's on every
    protocol (each a ``(variant cell, plain cell)``), ``level`` otherwise; None below two seeds."""
    better = [beyond_spread(cell, plain) for cell, plain in protocols]
    if None in better:
        return None
    return "better" if all(better) else "worse" if all(beyond_spread(p, c) for c, p in protocols) else "level"


def generation_mean(runs, model, arm, k, seeds, key):
    """Mean over ``seeds`` of a generation statistic of round ``k`` of ``arm``; NaN where none has it."""
    xs = [(round_of(p, k) or {}).get("generation", {}).get(key) for (m, a, s), p in runs.items()
          if (m, a) == (model, arm) and s in seeds]
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else float("nan")


def paired_changes(runs, model, arm, base, k, protocol):
    """Per seed both have, the relative change of ``arm``'s round-``k`` test Recall@10 over ``base``'s."""
    cell, plain = (values(runs, model, a, k, protocol, "recall@10") for a in (arm, base))
    return [cell[s] / plain[s] - 1 for s in sorted(set(cell) & set(plain))]


def recall_at_10(protocol):
    """Reads a round's test Recall@10 under ``protocol``."""
    return lambda r: r["protocols"][protocol]["test"]["recall@10"]


def sweep_grid(runs, model, read):
    """``(taus, ps, grid, seed)``: ``read`` of round 1 of each sweep cell on the sweep's first seed,
    NaN where that cell has no finished round 1."""
    grid = np.full((len(SWEEP_TAU), len(SWEEP_P)), np.nan)
    seed = min((s for m, a, s in runs if m == model and a.startswith("sweep-")), default=None)
    for i, tau in enumerate(SWEEP_TAU):
        for j, p in enumerate(SWEEP_P):
            payload = runs.get((model, f"sweep-tau{tau}-p{p:g}", seed))
            r = payload and round_of(payload, 1)
            if r and r.get("protocols"):
                grid[i, j] = read(r)
    return SWEEP_TAU, SWEEP_P, grid, seed
