"""One run of a study, in its own process: ``python -m recbole_rsir.study.worker RUN.json``.

The run's RSIR output folder (weights, saved rounds) lives under the study's work folder, so
a stopped run resumes from its rounds; what the study keeps (metrics, statistics, config,
seconds) is written to the results folder (``study/results.py``) when the run is complete, and
its finished rounds and weightless state are published there while it goes on. A machine that
has lost the work folder restores that state and goes on training the round in progress (rounds
need weights only to generate), so a run longer than one sitting still ends.
"""
import json
import os
import shutil
import sys
import time

import torch

from recbole_rsir.data.sequences import training_sequences
from recbole_rsir.generation.generator import generate
from recbole_rsir.generation.rules import GenerationSettings
from recbole_rsir.quick_start import build_config, run_rsir
from recbole_rsir.rounds.store import RoundStore, publish_state, restore_state, save_json
from recbole_rsir.study.augment import augment
from recbole_rsir.study.plan import SMALL_MODEL, Run
from recbole_rsir.study.results import partial_path, result_path, state_path
from recbole_rsir.utils import get_model


def run_dir(work, run, arm=None):
    """Where a run (or the arm ``arm`` of the same model and seed) keeps its RSIR output."""
    return os.path.join(work, run.dataset, run.model, arm or run.arm, f"seed{run.seed}")


def config_dict(run, work, threads):
    return {**run.overrides, "seed": run.seed, "rsir_rounds": run.rounds, "torch_threads": threads,
            "rsir_output_dir": run_dir(work, run), "show_progress": False}


CLAIM = "claimed.pid"
"""In a run's work folder while a study process runs it: that process's pid."""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(folder):
    """Take the run in ``folder`` for this process: False while another live study process holds it
    (two study commands started side by side may plan the same run); a dead holder's claim is taken."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, CLAIM)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            with open(path, encoding="utf-8") as f:
                holder = int(f.read().strip() or 0)
        except (OSError, ValueError):
            holder = 0
        if holder and holder != os.getpid() and _alive(holder):
            return False
        os.remove(path)
        return claim(folder)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True


def release(folder):
    path = os.path.join(folder, CLAIM)
    if os.path.isfile(path):
        os.remove(path)


def differences(rounds, published):
    """How rounds computed again compare with the published ones, metric by metric."""
    diffs = []
    for again, then in zip(rounds, published):
        for protocol, splits in then["protocols"].items():
            for split, metrics in splits.items():
                for metric, value in metrics.items():
                    other = again["protocols"][protocol][split][metric]
                    if other != value:
                        diffs.append((abs(other - value), f"round {then['round']} {protocol} {split} {metric}"))
    if not diffs:
        return "match its published results"
    size, where = max(diffs)
    return f"DIFFER from its published results in {len(diffs)} metric(s), by at most {size:.4g} ({where})"


def ensure_weights(source, n_rounds, out, work, threads):
    """Rounds 0..n_rounds-1 of the finished run ``source``, weights included, in its work folder:
    computed again (one process at a time) where this machine lacks them, which must reproduce
    its published results; a mismatch is reported, not hidden."""
    folder = run_dir(work, source)
    weights = [RoundStore(folder).checkpoint(k, pending=False) for k in range(n_rounds)]
    if all(os.path.isfile(p) for p in weights):
        return
    while not claim(folder):                  # another run is computing them
        time.sleep(10)
    try:
        if not all(os.path.isfile(p) for p in weights):
            print(f"{source.name}: rounds {list(range(n_rounds))} computed again (their weights are not on "
                  f"this machine)", flush=True)
            again = run_rsir(source.model, source.dataset, config_file_list=list(source.config_files) or None,
                             config_dict={**config_dict(source, work, threads), "rsir_rounds": n_rounds - 1})
            with open(result_path(out, source), encoding="utf-8") as f:
                published = json.load(f)["rounds"][:n_rounds]
            print(f"{source.name}: the rounds computed again {differences(again['rounds'], published)}",
                  flush=True)
    finally:
        release(folder)


def share_rounds(run, out, work, threads):
    """Start the run from the first ``run.shared_rounds`` rounds of ``run.round0_from`` (the same
    settings up to there, so the same models and data)."""
    here = RoundStore(run_dir(work, run))
    missing = [k for k in range(run.shared_rounds) if not os.path.isdir(here.round_dir(k))]
    if not missing:                           # shared before, or restored with the run's state
        return
    with open(result_path(out, run, run.round0_from), encoding="utf-8") as f:
        base = Run.from_dict(json.load(f)["run"])
    ensure_weights(base, run.shared_rounds, out, work, threads)
    os.makedirs(here.rounds_dir, exist_ok=True)
    there = RoundStore(run_dir(work, base))
    for k in missing:
        source, target = there.round_dir(k), here.round_dir(k)
        shutil.rmtree(target + ".copy", ignore_errors=True)
        shutil.copytree(source, target + ".copy")
        os.replace(target + ".copy", target)


def extra_builder(run, out, work, threads, stats):
    """The function that makes the run's fixed extra sequences; what it made goes to ``stats``."""
    if run.extra is None:
        return None

    def build(config, train_data):
        real = training_sequences(train_data.dataset)
        if run.extra.startswith("aug-"):
            with open(result_path(out, run, "rsir"), encoding="utf-8") as f:
                n = json.load(f)["rounds"][1]["generation"]["n_accepted"]
            sequences = augment(real, run.extra[4:], n, run.seed, train_data.dataset.item_num)
            stats.update(kind=run.extra, n_sequences=len(sequences), n_interactions=int(sequences.lengths.sum()),
                         mean_length=float(sequences.lengths.mean()) if len(sequences) else 0.0)
            return sequences
        small = Run(run.dataset, run.model, "w2s-small", run.seed, 0, overrides=dict(SMALL_MODEL),
                    config_files=run.config_files)
        ensure_weights(small, 1, out, work, threads)
        small_config = build_config(run.model, run.dataset, config_file_list=list(run.config_files) or None,
                                    config_dict=config_dict(small, work, threads))
        model = get_model(run.model)(small_config, train_data.dataset).to(config["device"])
        weights = RoundStore(run_dir(work, small)).checkpoint(0, pending=False)
        model.load_state_dict(torch.load(weights, map_location=config["device"], weights_only=True)["state_dict"])
        result = generate(model, real, GenerationSettings.from_config(config), seed=config["seed"] + 1)
        stats.update(kind="w2s", **result.stats())
        return result.sequences

    return build


def write_json(path, payload):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_json(path, payload, indent=1)


def publish_progress(out, work, run):
    """Copy the rounds a pending run has finished into its partial results file and its state
    (a finished run: remove both); True if the results folder changed. Rounds computed again on
    another machine may differ in the last digits, and the lineage here replaces the published
    one, so the partial file always agrees with the state it is published with."""
    target = partial_path(out, run)
    if os.path.isfile(result_path(out, run)):
        stale = [p for p in (target, state_path(out, run)) if os.path.exists(p)]
        for path in stale:
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        return bool(stale)
    changed = not needs_weights(run) and publish_state(run_dir(work, run), state_path(out, run))
    source = os.path.join(run_dir(work, run), "rsir_results.json")
    if not os.path.isfile(source):
        return changed
    with open(source, encoding="utf-8") as f:
        payload = json.load(f)
    if os.path.isfile(target):
        with open(target, encoding="utf-8") as f:
            published = json.load(f)["rounds"]
        if published[:len(payload["rounds"])] == payload["rounds"]:      # nothing new here
            return changed
    write_json(target, {**payload, "run": run.as_dict(), "complete": False})
    return True


def needs_weights(run):
    """Fine-tuning and the previous-round judge use earlier rounds' weights after generating."""
    overrides = run.overrides
    return overrides.get("rsir_mode") == "finetune" or overrides.get("rsir_judge_model") == "previous"


def execute(run, out, work, threads=1):
    """Run ``run`` to the end (resuming what its folder holds) and write its results file."""
    start = time.time()
    if not needs_weights(run):
        restored = restore_state(state_path(out, run), run_dir(work, run))
        if restored:
            print(f"{run.name}: rounds {restored} restored from {state_path(out, run)}", flush=True)
    if run.round0_from:
        share_rounds(run, out, work, threads)
    extra_stats = {}
    payload = run_rsir(run.model, run.dataset, config_file_list=list(run.config_files) or None,
                       config_dict=config_dict(run, work, threads),
                       extra=extra_builder(run, out, work, threads, extra_stats))
    payload.update(run=run.as_dict(), extra=extra_stats, wall_seconds=time.time() - start)
    write_json(result_path(out, run), payload)
    return payload


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0], encoding="utf-8") as f:
        spec = json.load(f)
    run = Run.from_dict(spec["run"])
    execute(run, spec["out"], spec["work"], spec["threads"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
