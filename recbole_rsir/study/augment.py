"""Offline augmentation baselines: extra training sequences made by editing real ones.

A study compares RSIR with these at the same budget: exactly as many extra sequences as
RSIR's first round accepted. Each operator edits one training sequence chosen from a
shuffled cycle over the real users; rates are the CL4SRec / CoSeRec ones (OPERATORS):

- ``crop``: keep a contiguous share ``eta`` (CL4SRec's 0.6), at least two items;
- ``mask``: replace a share ``gamma`` (CL4SRec's 0.3) with random catalogue items (a trained
  recommender has no mask token to learn from);
- ``reorder``: shuffle a contiguous share ``beta`` (CL4SRec's 0.6);
- ``insert``: before a share ``rate`` (CoSeRec's 0.4) of positions, the item most similar to
  the one there;
- ``substitute``: replace a share ``rate`` (CoSeRec's 0.1) with their most similar items.

Every edit touches at least one position. Similarity is cosine over co-occurrence in the
same training sequence, counted from training sequences only; a timestamp stays with its
position (an inserted item takes its neighbour's), so sequences stay time-ordered.
"""
import numpy as np
from scipy.sparse import csr_matrix

from recbole_rsir.data.sequences import SequenceSet

OPERATORS = {"crop": 0.6, "mask": 0.3, "reorder": 0.6, "insert": 0.4, "substitute": 0.1}


def most_similar(sequences, n_items):
    """``[n_items]``: each item's most co-occurring other item (cosine), or 0 if it has none."""
    rows = np.repeat(np.arange(len(sequences)), sequences.lengths)
    x = csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, sequences.items)),
                   shape=(len(sequences), n_items))
    x.data[:] = 1.0                                     # an item counts once per sequence
    co = (x.T @ x).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    norm = np.sqrt(np.asarray(x.sum(0)).ravel())
    co = co.multiply(1.0 / np.maximum(norm, 1e-12)[:, None]).multiply(1.0 / np.maximum(norm, 1e-12)[None, :])
    co = co.tocsr()
    best = np.zeros(n_items, dtype=np.int64)
    for item in np.flatnonzero(np.diff(co.indptr)):
        lo, hi = co.indptr[item], co.indptr[item + 1]
        values, columns = co.data[lo:hi], co.indices[lo:hi]
        best[item] = columns[np.lexsort((columns, -values))[0]]   # ties: the lowest id
    return best


def _share(n, rate):
    return min(n, max(1, int(rate * n)))


def edit(items, times, operator, rate, rng, n_items, similar):
    """One edited copy ``(items, times)`` of a sequence."""
    n = len(items)
    if operator == "crop":
        size = min(n, max(2, int(rate * n)))
        start = rng.integers(0, n - size + 1)
        return items[start:start + size], times[start:start + size]
    if operator == "reorder":
        size = _share(n, rate)
        start = rng.integers(0, n - size + 1)
        items = items.copy()
        items[start:start + size] = rng.permutation(items[start:start + size])
        return items, times
    positions = rng.choice(n, _share(n, rate), replace=False)
    if operator == "mask":
        items = items.copy()
        items[positions] = rng.integers(1, n_items, len(positions))
        return items, times
    if operator == "substitute":
        items = items.copy()
        replaced = similar[items[positions]]
        items[positions] = np.where(replaced > 0, replaced, items[positions])
        return items, times
    if operator == "insert":
        positions = positions[similar[items[positions]] > 0]
        return (np.insert(items, positions, similar[items[positions]]),
                np.insert(times, positions, times[positions]))
    raise ValueError(f"unknown augmentation {operator!r}; known: {', '.join(OPERATORS)}")


def augment(real, operator, n, seed, n_items, rate=None):
    """``n`` edited copies of sequences of ``real`` (a SequenceSet of training sequences)."""
    if operator not in OPERATORS:
        raise ValueError(f"unknown augmentation {operator!r}; known: {', '.join(OPERATORS)}")
    rate = OPERATORS[operator] if rate is None else rate
    rng = np.random.default_rng(seed)
    similar = most_similar(real, n_items) if operator in ("insert", "substitute") else None
    cycles = -(-n // max(len(real), 1))
    sources = np.concatenate([rng.permutation(len(real)) for _ in range(cycles)])[:n] if n else []
    items, times = [], []
    for s in sources:
        new_items, new_times = edit(real[s], real.times(s), operator, rate, rng, n_items, similar)
        items.append(new_items)
        times.append(new_times)
    return SequenceSet.from_lists(items, times, real.users[np.asarray(sources, dtype=np.int64)])
