"""The parts of RSIR generation both generators share, so they cannot drift apart.

Settings come from the RecBole config; all randomness is drawn up front from one seeded
generator, indexed by (sequence slot, step), so the output does not depend on batch size,
on decoding order, or on whether fidelity is on (a step uses the same draw either way).
"""
import math
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

from recbole_rsir.data.sequences import SequenceSet
from recbole_rsir.generation.candidates import CandidateSettings


@dataclass(frozen=True)
class GenerationSettings:
    m: int               # sequences per seed
    tau: int             # fidelity threshold (rank)
    p: float             # probability that the pool is the seed's own history
    min_len: int         # shortest sequence kept
    fidelity: bool
    prefix_len: object   # int or "random"
    topk: int            # 1 = greedy
    max_len: int         # MAX_ITEM_LIST_LENGTH
    batch_size: int
    score_chunk: int     # 0 = score the catalogue at once
    refine: int = 0      # items of the same pool tried in place of one that fails the fidelity test
    tau_schedule: str = "constant"   # "tighten": tau shrinks by tau_factor per round (for_round);
                                     # "per_user": each seed's own tau (tau.py)
    tau_factor: float = 0.5
    tau_quantile: float = 0.5        # per_user: the quantile of the seed's own ranks
    tau_max: int = 200               # per_user: the largest tau a seed gets
    ann: object = None   # candidates.CandidateSettings (rsir_candidates: ann), None = exact scoring

    @classmethod
    def from_config(cls, config):
        return cls(
            m=config["rsir_m"], tau=config["rsir_tau"], p=float(config["rsir_p"]),
            min_len=config["rsir_min_len"], fidelity=config["rsir_fidelity"],
            prefix_len=config["rsir_prefix_len"], topk=config["rsir_topk"],
            max_len=config["MAX_ITEM_LIST_LENGTH"], batch_size=config["rsir_gen_batch_size"],
            score_chunk=config["rsir_score_chunk"], refine=config["rsir_refine"],
            tau_schedule=config["rsir_tau_schedule"], tau_factor=float(config["rsir_tau_factor"]),
            tau_quantile=float(config["rsir_tau_quantile"]), tau_max=config["rsir_tau_max"],
            ann=CandidateSettings.from_config(config),
        )

    @property
    def retries(self):
        """Items refine may try in place of a failed one (none without the fidelity test)."""
        return self.refine if self.fidelity else 0

    @property
    def candidates(self):
        """How many of a pool's best items a step keeps: the top k to pick from, and with
        refine the K best besides the picked one (which may be any of the top k)."""
        return max(self.topk, self.retries + 1) if self.retries else self.topk

    def for_round(self, round_index):
        """The settings round ``round_index`` (>= 1) generates with: under ``tighten``, tau is
        ``max(1, floor(tau * tau_factor ** (round - 1)))``, so round 1 keeps rsir_tau; ``per_user``
        sets tau per seed inside each generation (tau.py), the same rule every round."""
        if self.tau_schedule in ("constant", "per_user"):
            return self
        return replace(self, tau=max(1, math.floor(self.tau * self.tau_factor ** (round_index - 1))),
                       tau_schedule="constant")


@dataclass
class StepCounts:
    """What the steps of all attempted slots did, accepted or not: the study's statistics."""
    fidelity_tests: int = 0      # steps at which the fidelity test ran (on the step's picked item)
    fidelity_failures: int = 0   # tests failed: each ends its slot unless a refine attempt succeeds
    history_picks: int = 0       # items picked from the seed's own history
    catalogue_picks: int = 0     # items picked from the catalogue
    refine_attempts: int = 0     # items tried in place of a failed one (rsir_refine)
    refine_successes: int = 0    # tried items kept (passed, or left no real item to test);
                                 # fidelity_failures - refine_successes slots ended on a failed test

    def as_dict(self):
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class GenerationResult:
    sequences: SequenceSet   # accepted synthetic sequences
    n_slots: int             # sequences attempted (seeds x m)
    counts: StepCounts = field(default_factory=StepCounts)
    taus: np.ndarray = None  # per seed, under rsir_tau_schedule: per_user (None: one tau for all)

    @property
    def acceptance_rate(self):
        return len(self.sequences) / self.n_slots if self.n_slots else 0.0

    @property
    def mean_length(self):
        return float(self.sequences.lengths.mean()) if len(self.sequences) else 0.0

    def stats(self):
        """Counts and rates of this generation, JSON-ready."""
        c = self.counts
        picks = c.history_picks + c.catalogue_picks
        return {"n_attempted": self.n_slots, "n_accepted": len(self.sequences),
                "acceptance_rate": self.acceptance_rate, "mean_length": self.mean_length,
                "n_interactions": int(self.sequences.lengths.sum()),
                "length_histogram": np.bincount(self.sequences.lengths).tolist() if len(self.sequences) else [],
                **c.as_dict(),
                "fidelity_failure_rate": c.fidelity_failures / c.fidelity_tests if c.fidelity_tests else 0.0,
                "refine_success_rate": c.refine_successes / c.refine_attempts if c.refine_attempts else 0.0,
                "history_pick_share": c.history_picks / picks if picks else 0.0,
                **tau_summary(self.taus)}


TAU_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def tau_summary(taus):
    """The per-seed taus' mean, extremes and quantiles (``tau_q50``: median), JSON-ready; {} without."""
    if taus is None or not len(taus):
        return {}
    return {"tau_mean": float(np.mean(taus)), "tau_min": int(np.min(taus)), "tau_max": int(np.max(taus)),
            **{f"tau_q{round(100 * q)}": float(np.quantile(taus, q)) for q in TAU_QUANTILES}}


@dataclass
class RandomDraws:
    """Uniform draws for every sequence slot q = seed_index * m + j."""
    prefix: torch.Tensor  # [Q]            -> prefix length when prefix_len is 'random'
    pool: torch.Tensor    # [Q, max_len]   -> u < p: the step's pool is the seed's history
    pick: torch.Tensor    # [Q, max_len]   -> inverse-CDF pick among the pool's top k


def draw_randomness(n_slots, max_len, seed):
    g = torch.Generator().manual_seed(seed)
    return RandomDraws(torch.rand(n_slots, generator=g), torch.rand(n_slots, max_len, generator=g),
                       torch.rand(n_slots, max_len, generator=g))


def prefix_lengths(seed_lengths, settings, draws):
    """Prefix length per slot: rsir_prefix_len, or uniform in [1, |s|-1] for 'random'.

    |s| counts at most max_len items: the model reads no longer context (its position
    embeddings stop there), so a prefix never exceeds MAX_ITEM_LIST_LENGTH.
    """
    lengths = torch.as_tensor(np.repeat(seed_lengths, settings.m), dtype=torch.long)
    lengths = lengths.clamp(max=settings.max_len)
    if settings.prefix_len == "random":
        span = (lengths - 1).clamp(min=1)
        return 1 + (draws.prefix * span).long().clamp(max=span - 1)
    return torch.full_like(lengths, settings.prefix_len).clamp(max=lengths)


def pick_from_top(top_scores, u):
    """Index into ``top_scores`` (sorted descending, -inf = absent) drawn by softmax with ``u``.

    Works on one row or a batch of rows; with one finite entry it is that entry (greedy).
    """
    probs = torch.softmax(top_scores, dim=-1)
    cdf = torch.cumsum(probs, dim=-1)
    n_valid = torch.isfinite(top_scores).sum(-1, keepdim=True)
    index = torch.searchsorted(cdf, (u.unsqueeze(-1) * cdf[..., -1:]).contiguous(), right=True)
    return torch.minimum(index, n_valid - 1).squeeze(-1)


def time_gap(seed_times):
    """Gap given to each generated item: the seed's median gap between consecutive items."""
    return float(np.median(np.diff(seed_times))) if len(seed_times) > 1 else 0.0


def accept(slot_sequences, slot_times, slot_users, prefix_len, settings, counts=None, taus=None):
    """Keep sequences with at least one generated item and >= min_len items; drop duplicates.

    Slots are visited in order and the first copy of a sequence wins. ``taus``: the per-seed
    taus, kept in the result under ``per_user`` (with the fidelity test on).
    """
    kept, times, users, seen = [], [], [], set()
    for seq, ts, user, n_prefix in zip(slot_sequences, slot_times, slot_users, prefix_len):
        if len(seq) <= n_prefix or len(seq) < settings.min_len:
            continue
        key = tuple(seq)
        if key in seen:
            continue
        seen.add(key)
        kept.append(seq)
        times.append(ts)
        users.append(user)
    per_user = settings.tau_schedule == "per_user" and settings.fidelity and taus is not None
    return GenerationResult(SequenceSet.from_lists(kept, times, users), len(slot_sequences),
                            counts or StepCounts(), taus if per_user else None)
