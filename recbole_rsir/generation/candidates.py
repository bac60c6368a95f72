"""An approximate candidate stage for large catalogues (``rsir_candidates: ann``; needs faiss-cpu,
``pip install -e ".[ann]"``).

Exact generation scores every item at every step (``score_catalogue``, chunked by
``rsir_score_chunk``). With ``ann``, an inner-product index over the model's item vectors is
built once per generation (the vectors do not change while it runs); per distinct context it
retrieves ``rsir_ann_candidates`` (L) items, and the exact scores of those candidates and of
the seed's history items decide the step, as the exact path does with the whole catalogue:

- the fidelity threshold is the tau-th largest score among the candidates;
- the catalogue pool's top k are the best candidates outside the context;
- the history pool and the fidelity test read each history item's exact score, retrieved or not.

When the result can differ from exact. The exact step reads one list: the catalogue's true
top ``n = max(tau, k + context length)`` (``tau`` only with fidelity, ``k + context`` only when a
row draws from the catalogue). If the L candidates contain all of it, the step is the exact
step. If the index misses an item of it, the candidates' tau-th score is at most the true one,
so the fidelity test can only pass more often (a history item ranked below tau may count as
within it), and the catalogue pick is the best retrieved item instead of a missed better one;
the history pool never differs. With ``rsir_ann_index: flat`` (an exact index) nothing is
missed, and with L at least the catalogue there is no index (every item is a candidate): both
give the exact path's sequences. Scores are recomputed in the model's precision; the index
searches float32 copies, so with ``flat`` an item whose float32 score ties the L-th can be
swapped for another one: keep L above ``n``.
benchmarks/bench_large_catalogue.py measures how often decisions differ.

A context for which the index returns fewer real items than the step reads (``n``: an IVF whose
probed lists hold fewer items) is scored over the whole catalogue instead (``fallbacks`` counts
them). Only models whose scores are ``output · item vector`` can use an index: the backbones of
this package (SASRec, CL4SRec, GRU4Rec, HSTU) whose ``item_logits`` and cache ``scores`` are the
base class's; :func:`why_not_ann` names the reason for any other model.
"""
import math
import time
from dataclasses import dataclass

import torch

from recbole_rsir.errors import ConfigError
from recbole_rsir.model.backbone import Backbone, Cache, is_backbone

INSTALL = 'pip install faiss-cpu (or this package\'s extra: pip install -e ".[ann]")'


@dataclass(frozen=True)
class CandidateSettings:
    """The ``rsir_ann_*`` keys; ``from_config`` gives None for exact scoring."""
    n_candidates: int   # L, items retrieved per context
    index: str          # flat | ivf | hnsw
    nlist: int          # IVF lists (0 = about sqrt(n_items))
    nprobe: int         # IVF lists searched per context
    hnsw_m: int         # HNSW neighbours per node
    ef_search: int      # HNSW search breadth (0 = L)

    @classmethod
    def from_config(cls, config):
        """Checked here, when a run reads its settings, so it stops before training rather than
        at its first generation."""
        if config["rsir_candidates"] != "ann":
            return None
        import_faiss()
        model_class = getattr(config, "model_class", None)
        reason = model_class is not None and why_not_ann(model_class)
        if reason:
            raise ConfigError(f"rsir_candidates=ann cannot be used: {reason}; use rsir_candidates=exact")
        return cls(config["rsir_ann_candidates"], config["rsir_ann_index"], config["rsir_ann_nlist"],
                   config["rsir_ann_nprobe"], config["rsir_ann_hnsw_m"], config["rsir_ann_ef_search"])


def import_faiss():
    try:
        import faiss
    except ImportError:
        raise ConfigError(f"rsir_candidates=ann needs faiss, which is not installed: {INSTALL}") from None
    return faiss


def why_not_ann(model_class):
    """Why a model's scores are not ``output · item vector`` (so no index can rank them), or None."""
    name = model_class.__name__
    if not is_backbone(model_class):
        return f"{name} is scored by its own full_sort_predict, not as output · item vector"
    if model_class.item_logits is not Backbone.item_logits:
        return f"{name} overrides item_logits, so its scores need not be output · item vector"
    cache = model_class.cache_class
    if cache is not None and cache.scores is not Cache.scores:
        return f"{name}'s decoding cache scores items its own way"
    return None


def steps_need(settings, n_items, tau=None):
    """The longest top list a step reads (module docstring: ``n``; k is the pool's best items a
    step keeps, rsir_topk or more with rsir_refine), for a catalogue of ``n_items`` (padding
    included); ``tau``: the largest tau a row is tested with (None: ``settings.tau``)."""
    tau = settings.tau if tau is None else tau
    need = max(tau if settings.fidelity else 0, settings.candidates + settings.max_len)
    return min(need, n_items - 1)


def dot(outputs, vectors):
    """``[X, Y]`` scores of ``outputs [X, d]`` with per-row ``vectors [X, Y, d]``: one reduction
    for every pair, so a history item and the same retrieved item get the same score."""
    return (vectors * outputs.unsqueeze(1)).sum(-1)


class CandidateStage:
    """The index over one model's item vectors and the per-step scores it gives."""

    BLOCK = 1 << 22  # elements of the [contexts, items, d] products scored at once

    def __init__(self, model, settings, n_items, tau=None):
        faiss = import_faiss()
        reason = why_not_ann(type(model))
        if reason:
            raise ConfigError(f"rsir_candidates=ann cannot be used: {reason}; use rsir_candidates=exact")
        ann = settings.ann
        self.n_items = n_items
        self.n_candidates = min(ann.n_candidates, n_items - 1)
        need = steps_need(settings, n_items, tau)
        if self.n_candidates < need:
            tau_name = "rsir_tau" if tau is None else "the largest per-user tau"
            raise ConfigError(f"rsir_ann_candidates ({ann.n_candidates}) must be at least "
                              f"max({tau_name}, rsir_topk (rsir_refine + 1 if more) + MAX_ITEM_LIST_LENGTH) = {need}")
        self.vectors = model.item_embeddings().detach()  # [n_items, d], row 0 = padding
        faiss.omp_set_num_threads(torch.get_num_threads())
        start = time.perf_counter()
        self.index = None  # L covers the catalogue: every item is a candidate, nothing to search
        if self.n_candidates < n_items - 1:
            self.index = build_index(faiss, self.vectors[1:].float().cpu().contiguous().numpy(), ann,
                                     self.n_candidates)
        self.build_seconds = time.perf_counter() - start
        self.searches = 0   # contexts searched
        self.fallbacks = 0  # contexts the index returned too few items for, scored exactly

    def history_scores(self, hidden, history):
        """Exact score ``[N, S]`` of each row's history item (padding ``n_items``: -inf)."""
        padding = history >= self.n_items
        scores = self._score(hidden, history.masked_fill(padding, 0))
        return scores.masked_fill(padding, -math.inf)

    def top(self, hidden, list_len):
        """Top ``list_len`` exact scores among each context's retrieved candidates, descending,
        and their items; ``[C, list_len]`` each, padded with item 0 at -inf where the catalogue is
        shorter (as in the exact list, where item 0 scores -inf)."""
        n_contexts = len(hidden)
        if not list_len:
            return hidden.new_empty((n_contexts, 0), dtype=torch.float32), \
                torch.zeros((n_contexts, 0), dtype=torch.long, device=hidden.device)
        if self.index is None:
            items = torch.arange(1, self.n_items, device=hidden.device).expand(n_contexts, -1)
        else:
            _, ids = self.index.search(hidden.detach().float().cpu().contiguous().numpy(), self.n_candidates)
            items = torch.from_numpy(ids).to(hidden.device) + 1  # index id i is item i + 1; -1 (none) -> 0
        scores = self._score(hidden, items).masked_fill(items == 0, -math.inf)
        if list_len > scores.size(1):
            pad = list_len - scores.size(1)
            scores = torch.nn.functional.pad(scores, (0, pad), value=-math.inf)
            items = torch.nn.functional.pad(items, (0, pad), value=0)
        top, index = torch.topk(scores, list_len, dim=1)
        top_items = items.gather(1, index)
        short = ((items > 0).sum(1) < min(list_len, self.n_items - 1)).nonzero().squeeze(1)
        self.searches += n_contexts
        if len(short):
            self.fallbacks += len(short)
            top[short], top_items[short] = self._whole_catalogue_top(hidden[short], list_len)
        return top, top_items

    def _score(self, hidden, items):
        """Exact float32 scores ``[X, Y]`` of ``items [X, Y]`` given ``hidden [X, d]``, in blocks."""
        out = torch.empty(items.shape, dtype=torch.float32, device=hidden.device)
        cols = max(1, min(items.size(1), self.BLOCK // hidden.size(1)))
        rows = max(1, self.BLOCK // (cols * hidden.size(1)))
        for start in range(0, len(items), rows):
            for col in range(0, items.size(1), cols):
                block = (slice(start, start + rows), slice(col, col + cols))
                out[block] = dot(hidden[block[0]], self.vectors[items[block]]).float()
        return out

    def _whole_catalogue_top(self, hidden, list_len):
        """The exact path's top list for a few contexts, one context and one item chunk at a time."""
        top = torch.full((len(hidden), list_len), -math.inf, device=hidden.device)
        top_items = torch.zeros((len(hidden), list_len), dtype=torch.long, device=hidden.device)
        chunk = max(list_len, self.BLOCK // hidden.size(1))
        for row in range(len(hidden)):
            for start in range(1, self.n_items, chunk):
                items = torch.arange(start, min(start + chunk, self.n_items), device=hidden.device)
                scores = torch.cat([top[row], self._score(hidden[row:row + 1], items.unsqueeze(0))[0]])
                top[row], index = torch.topk(scores, list_len)
                top_items[row] = torch.cat([top_items[row], items])[index]
        return top, top_items


def build_index(faiss, vectors, ann, n_candidates):
    """A faiss inner-product index over ``vectors [n, d]`` (float32), ids 0..n-1."""
    n, d = vectors.shape
    if ann.index == "flat":
        index = faiss.IndexFlatIP(d)
    elif ann.index == "ivf":
        nlist = ann.nlist or max(1, min(round(math.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, min(nlist, n), faiss.METRIC_INNER_PRODUCT)
        # a quick k-means: the index serves one generation, and its lists only steer the search
        index.cp.niter, index.cp.max_points_per_centroid = 10, 64
        index.train(vectors)
        index.nprobe = min(ann.nprobe, index.nlist)
    else:
        index = faiss.IndexHNSWFlat(d, ann.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = max(ann.ef_search or n_candidates, n_candidates)
    index.add(vectors)
    return index
