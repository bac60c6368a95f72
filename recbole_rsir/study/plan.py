"""What a study runs: its arms, expanded into runs with their settings and dependencies.

A *run* is one RSIR invocation (one output folder): ``rsir_rounds`` rounds on top of a
round 0. An *arm* is what the report compares; several arms come from one run (the
``rsir`` run gives the base, round 0, and RSIR rounds 1..R). Runs that differ from
``rsir`` only in what happens after round 0 reuse its round 0 instead of training it again.

A *variant* arm is plain RSIR with one of the options beyond the paper on (refine on miss, a
separate judge, a tightening tau or a tau per user); it reuses ``rsir``'s round 0, and with
``strong`` among the arms it also runs on the strong preset, reusing ``strong``'s round 0.
"""
import os
from dataclasses import asdict, dataclass, field

from recbole_rsir.config import PROPERTIES_DIR
from recbole_rsir.study.augment import OPERATORS

STRONG_PRESET = os.path.join(PROPERTIES_DIR, "preset", "sasrec-strong.yaml")
SMALL_MODEL = {"n_layers": 1, "hidden_size": 32, "inner_size": 128}
"""The weak-to-strong arm's generator: the same family, one layer of width 32."""

SWEEP_TAU = (1, 5, 10, 20, 50, 100)
SWEEP_P = (0.0, 0.25, 0.5, 0.75, 1.0)

REFINE_K = 3
TAU_FACTOR = 0.5
VARIANT_ARMS = ("refine", "judge", "tau")
ARMS = ("rsir", "nofid", "ft", "aug", "w2s", "strong", "sweep") + VARIANT_ARMS
"""``--arms`` choices: ``aug`` stands for the five augmentation operators; the variant arms
come last, so that ``strong`` runs before their strong runs."""
DEFAULT_ARMS = tuple(a for a in ARMS if a not in ("sweep",) + VARIANT_ARMS)
"""What a study runs unless told otherwise (the sweep and the variants are asked for by name)."""
OPERATOR_ARMS = tuple(f"aug-{op}" for op in OPERATORS)
"""One augmentation operator alone, where ``aug`` runs all five."""


ROUND1_AS_PLAIN = ("judge-previous", "tau-tighten")
"""Variants whose round 1 is plain RSIR's (the previous round's model first judges in round 2;
tighten's first tau is rsir_tau): they take rounds 0 and 1 from their base's run."""


def variants(arm, model):
    """``{run arm: (label, overrides)}`` of a variant arm for ``model``: plain RSIR with one option on."""
    if arm == "refine":
        return {"refine": (f"refine on miss (K={REFINE_K})", {"rsir_refine": REFINE_K})}
    if arm == "judge":
        other = "HSTU" if model != "HSTU" else "SASRec"
        return {"judge-previous": ("judge: the previous round's model", {"rsir_judge_model": "previous"}),
                f"judge-{other}": (f"judge: {other} trained beside it", {"rsir_judge_model": other})}
    if arm == "tau":
        return {"tau-tighten": (f"tau x{TAU_FACTOR:g} per round",
                                {"rsir_tau_schedule": "tighten", "rsir_tau_factor": TAU_FACTOR}),
                "tau-user": ("tau per user (median own rank, at most 200)",
                             {"rsir_tau_schedule": "per_user"})}
    raise ValueError(f"unknown variant arm {arm!r}; known: {', '.join(VARIANT_ARMS)}")


@dataclass(frozen=True)
class Run:
    dataset: str
    model: str
    arm: str                                   # e.g. rsir, nofid, aug-crop, sweep-tau5-p0.25
    seed: int
    rounds: int                                # rsir_rounds
    overrides: dict = field(default_factory=dict)
    config_files: tuple = ()
    round0_from: str = None                    # arm of the same model and seed whose round 0 is reused
    shared_rounds: int = 1                     # its rounds 0..shared_rounds-1 are this run's too
    extra: str = None                          # "aug-<op>" | "w2s": fixed extra training sequences
    needs: tuple = ()                          # arms (same model and seed) that must finish first

    @property
    def name(self):
        return f"{self.model}/{self.arm}/seed{self.seed}"

    @property
    def key(self):
        """Unique across the datasets of a study (``name`` is within one dataset's results)."""
        return f"{self.dataset}/{self.name}"

    def as_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, saved):
        """The run ``as_dict`` gave (JSON turned its tuples into lists)."""
        return cls(**{**saved, "config_files": tuple(saved["config_files"]), "needs": tuple(saved["needs"])})


def _arm_runs(dataset, model, seed, rounds, arm, first_seed, files, strong=False):
    def run(name, config_files=(), **kw):
        return Run(dataset, model, name, seed, config_files=tuple(config_files) + tuple(files), **kw)

    if arm == "rsir":
        return [run("rsir", rounds=rounds)]
    if arm == "nofid":
        return [run("nofid", rounds=rounds, overrides={"rsir_fidelity": False}, round0_from="rsir",
                    needs=("rsir",))]
    if arm == "ft":
        return [run("ft", rounds=rounds, overrides={"rsir_mode": "finetune"}, round0_from="rsir",
                    needs=("rsir",))] if seed == first_seed else []
    if arm == "aug" or arm in OPERATOR_ARMS:
        names = OPERATOR_ARMS if arm == "aug" else (arm,)
        return [run(name, rounds=0, extra=name, needs=("rsir",)) for name in names]
    if arm == "w2s":
        return [run("w2s-small", rounds=0, overrides=dict(SMALL_MODEL)),
                run("w2s", rounds=0, extra="w2s", needs=("w2s-small",))]
    if arm == "strong":
        return [run("strong", rounds=rounds, config_files=(os.path.relpath(STRONG_PRESET),))]
    if arm in VARIANT_ARMS:
        runs = []
        for name, (_, overrides) in variants(arm, model).items():
            shared = 2 if name in ROUND1_AS_PLAIN else 1
            runs.append(run(name, rounds=rounds, overrides=overrides, round0_from="rsir", shared_rounds=shared,
                            needs=("rsir",)))
            if strong:
                runs.append(run(f"strong-{name}", rounds=rounds, overrides=overrides, round0_from="strong",
                                shared_rounds=shared, config_files=(os.path.relpath(STRONG_PRESET),),
                                needs=("strong",)))
        return runs
    if arm == "sweep":
        if seed != first_seed:
            return []
        return [run(f"sweep-tau{tau}-p{p:g}", rounds=1, overrides={"rsir_tau": tau, "rsir_p": p},
                    round0_from="rsir", needs=("rsir",))
                for tau in SWEEP_TAU for p in SWEEP_P]
    raise ValueError(f"unknown arm {arm!r}; known: {', '.join(ARMS + OPERATOR_ARMS)}")


def plan(datasets, models, seeds, rounds, arms, config_files=()):
    """Every run of the study, in the order they should start (seeds outermost, so a first
    seed completes early); ``rsir`` is always part of it (it is the base), and a run's
    dependencies always come before it. ``config_files`` apply to every run, after an arm's
    own preset."""
    runs = []
    def rank(arm):
        return ARMS.index(arm if arm in ARMS else "aug"), arm       # an operator sits with aug

    ordered = ("rsir",) + tuple(sorted(set(arms) - {"rsir"}, key=rank))
    for seed in seeds:
        for dataset in datasets:
            for model in models:
                for arm in ordered:
                    runs.extend(_arm_runs(dataset, model, seed, rounds, arm, seeds[0], config_files,
                                          strong="strong" in arms))
    unique = {}
    for run in runs:                       # aug and one of its operators name the same run
        unique.setdefault(run.key, run)
    return list(unique.values())
