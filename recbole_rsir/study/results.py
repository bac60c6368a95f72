"""The study's results folder: where each run's files are and how they are read back.

A finished run is ``runs/<model>/<arm>/seed<N>.json``; a run still going publishes beside it
the rounds it has finished, ``seed<N>.partial.json`` (``complete: False``), and its state
without weights, ``seed<N>.rounds/``. This folder is what is committed; weights stay in the
study's work folder.
"""
import glob
import json
import os


def result_path(out, run, arm=None):
    """The run's committed results file (``arm``: another arm of the same model and seed)."""
    return os.path.join(out, run.dataset, "runs", run.model, arm or run.arm, f"seed{run.seed}.json")


def partial_path(out, run):
    """The rounds a run has finished so far, published while it is still going."""
    return result_path(out, run)[:-len(".json")] + ".partial.json"


def state_path(out, run):
    """The run's rounds without weights, published while it is still going."""
    return result_path(out, run)[:-len(".json")] + ".rounds"


def in_progress(payload):
    """A partial results file: the run has more rounds to go."""
    return not payload.get("complete", True)


def finished_rounds(payload):
    """Rounds 0.. a pending run has published (its partial results), 0 without any."""
    return len(payload["rounds"]) if payload is not None and in_progress(payload) else 0


def load_runs(folder):
    """``{(model, arm, seed): payload}`` of every results file under ``folder/runs``; a run still
    in progress contributes the rounds it has finished (its partial file), which are final: a
    later round never changes an earlier one."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(folder, "runs", "*", "*", "seed*.json"))):
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
        run = payload["run"]
        key = (run["model"], run["arm"], run["seed"])
        if not in_progress(payload) or key not in runs:
            runs[key] = payload
    return runs
