"""One run of a study, in its own process: ``python -m recbole_rsir.study.worker RUN.json``.

The run's RSIR output folder (weights, saved rounds) lives under the study's work folder, so
a stopped run resumes from its rounds; what the study keeps (metrics, statistics, config,
seconds) is written to the results folder when the run is complete; until then the runner
publishes the rounds finished so far beside it, as ``seed<N>.partial.json``.
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
from recbole_rsir.study.augment import augment
from recbole_rsir.study.plan import SMALL_MODEL, Run
from recbole_rsir.utils import get_model


def run_dir(work, run, arm=None):
    """Where a run (or the arm ``arm`` of the same model and seed) keeps its RSIR output."""
    return os.path.join(work, run.dataset, run.model, arm or run.arm, f"seed{run.seed}")


def result_path(out, run, arm=None):
    """The run's committed results file (``arm``: another arm of the same model and seed)."""
    return os.path.join(out, run.dataset, "runs", run.model, arm or run.arm, f"seed{run.seed}.json")


def partial_path(out, run):
    """The rounds a run has finished so far, published while it is still going."""
    return result_path(out, run)[:-len(".json")] + ".partial.json"


def config_dict(run, work, threads):
    return {**run.overrides, "seed": run.seed, "rsir_rounds": run.rounds, "torch_threads": threads,
            "rsir_output_dir": run_dir(work, run), "show_progress": False}


def share_rounds(run, work):
    """Start the run from the first ``run.shared_rounds`` rounds of ``run.round0_from`` (the same
    settings up to there, so the same models and data)."""
    for k in range(run.shared_rounds):
        source = os.path.join(run_dir(work, run, run.round0_from), "rounds", f"round{k}")
        target = os.path.join(run_dir(work, run), "rounds", f"round{k}")
        if not os.path.isdir(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
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
        small_config = build_config(run.model, run.dataset, config_file_list=list(run.config_files) or None,
                                    config_dict=config_dict(small, work, threads))
        model = get_model(run.model)(small_config, train_data.dataset).to(config["device"])
        weights = os.path.join(run_dir(work, small), "rounds", "round0", "model.pth")
        model.load_state_dict(torch.load(weights, map_location=config["device"], weights_only=True)["state_dict"])
        result = generate(model, real, GenerationSettings.from_config(config), seed=config["seed"] + 1)
        stats.update(kind="w2s", **result.stats())
        return result.sequences

    return build


def write_json(path, payload):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"      # two study processes may publish the same run
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)


def publish_progress(out, work, run):
    """Copy the rounds a pending run has finished into its partial results file (a finished run:
    remove it); True if the results folder changed."""
    target = partial_path(out, run)
    if os.path.isfile(result_path(out, run)):
        if not os.path.isfile(target):
            return False
        os.remove(target)
        return True
    source = os.path.join(run_dir(work, run), "rsir_results.json")
    if not os.path.isfile(source):
        return False
    with open(source, encoding="utf-8") as f:
        payload = json.load(f)
    if os.path.isfile(target):
        with open(target, encoding="utf-8") as f:
            if len(json.load(f)["rounds"]) >= len(payload["rounds"]):
                return False
    write_json(target, {**payload, "run": run.as_dict(), "complete": False})
    return True


def execute(run, out, work, threads=1):
    """Run ``run`` to the end (resuming what its folder holds) and write its results file."""
    start = time.time()
    if run.round0_from:
        share_rounds(run, work)
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
    run = Run(**{**spec["run"], "config_files": tuple(spec["run"]["config_files"]),
                 "needs": tuple(spec["run"]["needs"])})
    execute(run, spec["out"], spec["work"], spec["threads"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
