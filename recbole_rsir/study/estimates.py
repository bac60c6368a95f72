"""How long a study's pending runs will take, from the rounds its results files measured.

Rounds are timed as they ran (beside another job, as the study runs them), and every
arm and seed of a dataset counts, so a new seed is estimated from the others.
"""
from recbole_rsir.study.plan import Run


def _family(run):
    if run.arm.startswith("strong"):
        return "strong"
    return "w2s-small" if run.arm == "w2s-small" else "default"


def round_seconds(payloads):
    """Mean seconds of a round 0 and of a later round per (model, family), over every round the
    ``payloads`` (one dataset's results, finished and in progress) computed themselves."""
    samples = {}
    for payload in payloads:
        run = Run.from_dict(payload["run"])
        for r in payload["rounds"]:
            if run.round0_from and r["round"] < run.shared_rounds:
                continue                                       # the base's round, counted there
            key = (run.model, _family(run), r["round"] > 0)
            samples.setdefault(key, []).append(r["train_seconds"] + r["generate_seconds"])
    return {k: sum(v) / len(v) for k, v in samples.items()}


def estimate(run, seconds, finished=0):
    """Seconds left of a pending run whose rounds before ``finished`` are done, or None where
    nothing like it was measured yet."""
    own_first = not run.round0_from and finished == 0
    first = seconds.get((run.model, _family(run), False)) if own_first else 0.0
    start = max(finished, run.shared_rounds if run.round0_from else 1)
    computed = max(run.rounds + 1 - start, 0)                                  # later rounds to run
    later = seconds.get((run.model, _family(run), True)) if computed else 0.0
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
