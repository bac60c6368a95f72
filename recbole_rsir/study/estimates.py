"""How long a study's pending runs will take, from the rounds its results files measured.

Rounds are timed as they ran (beside another job, as the study runs them), and every seed of
a dataset counts, so a new seed is estimated from the others. A later round is estimated from
rounds of the same arm where there are any (no fidelity trains on several times the data of
plain RSIR), else from every arm of its family; medians, since a round timed while the machine
was crowded takes several times as long.
"""
from statistics import median

from recbole_rsir.study.plan import Run


def _family(run):
    if run.arm.startswith("strong"):
        return "strong"
    return "w2s-small" if run.arm == "w2s-small" else "default"


def _kind(run):
    """What a later round of ``run`` costs alike with: its arm, a sweep's cells together."""
    arm = run.arm.removeprefix("strong-")
    return "sweep" if arm.startswith("sweep-") else arm


def round_seconds(payloads):
    """Median seconds of a round 0 per (model, family), and of a later round per (model, family,
    kind) and per (model, family, None), over every round the ``payloads`` (one dataset's results,
    finished and in progress) computed themselves."""
    samples = {}
    for payload in payloads:
        run = Run.from_dict(payload["run"])
        for r in payload["rounds"]:
            if run.round0_from and r["round"] < run.shared_rounds:
                continue                                       # the base's round, counted there
            later = r["round"] > 0
            keys = [(run.model, _family(run), True, _kind(run)), (run.model, _family(run), True, None)] \
                if later else [(run.model, _family(run), False)]
            for key in keys:
                samples.setdefault(key, []).append(r["train_seconds"] + r["generate_seconds"])
    return {k: median(v) for k, v in samples.items()}


def estimate(run, seconds, finished=0):
    """Seconds left of a pending run whose rounds before ``finished`` are done, or None where
    nothing like it was measured yet."""
    own_first = not run.round0_from and finished == 0
    first = seconds.get((run.model, _family(run), False)) if own_first else 0.0
    start = max(finished, run.shared_rounds if run.round0_from else 1)
    computed = max(run.rounds + 1 - start, 0)                                  # later rounds to run
    later = seconds.get((run.model, _family(run), True, _kind(run)),
                        seconds.get((run.model, _family(run), True, None))) if computed else 0.0
    if first is None or later is None:
        return None
    return first + computed * later


def total_line(estimates, jobs=1):
    """One line for a list of estimates (None: not measured yet)."""
    measured = [e for e in estimates if e is not None]
    return (f"{sum(measured) / 3600 / jobs:.1f} h with {jobs} job{'s' if jobs > 1 else ''} for the "
            f"{len(measured)} runs measured alike ({len(estimates) - len(measured)} not measured yet)")


def minutes(estimate):
    return "not measured yet" if estimate is None else f"~{estimate / 60:.0f} min"
