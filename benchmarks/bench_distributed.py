"""Two processes against one: a training epoch and a generation on amazon-beauty, one thread each.

Run alone on the machine (never part of ``pytest tests``)::

    pytest benchmarks/bench_distributed.py -s

The same script is the worker: ``python bench_distributed.py LOSS OUT`` in one process, or under
``torchrun --standalone --nproc_per_node=2``. The worker builds RecBole's SASRec (defaults) on
Beauty, trains three epochs on the all-position path with ``LOSS`` (the first two untimed, the
third timed), then times one RSIR generation (m = 5, tau = 50, p = 0.5) from those weights.
Dropout is off, so both runs reach the same weights and generate the same sequences. Two
processes split each global batch's rows and the generation's slots; evaluation is not part of
either figure (it runs whole on every rank).
"""
import json
import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "distributed.json")


def worker(loss, out):
    import torch
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_rsir import distributed
    from recbole_rsir.config import Config
    from recbole_rsir.data import create_dataset
    from recbole_rsir.data.merge import training_loader
    from recbole_rsir.data.sequences import SequenceSet, training_sequences
    from recbole_rsir.generation.generator import generate
    from recbole_rsir.generation.rules import GenerationSettings
    from recbole_rsir.trainer.trainer import RSIRTrainer
    from recbole_rsir.utils import get_model

    config = Config("SASRec", "amazon-beauty", config_dict={"show_progress": False, "state": "WARNING",
                                                            "train_loss": loss, "torch_threads": 1,
                                                            "hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0})
    init_seed(config["seed"], True)
    train_data, _, _ = data_preparation(config, create_dataset(config))
    model = get_model("SASRec")(config, train_data.dataset)
    trainer = RSIRTrainer(config, model)
    real = training_sequences(train_data.dataset)
    loader = training_loader(config, train_data, real, SequenceSet.empty())
    seconds = []
    for epoch in range(3):
        distributed.barrier()
        start = time.perf_counter()
        trainer._train_epoch(loader, epoch)
        distributed.barrier()
        seconds.append(time.perf_counter() - start)
    distributed.barrier()
    start = time.perf_counter()
    result = generate(trainer.model, real, GenerationSettings.from_config(config), seed=config["seed"] + 1)
    generate_seconds = time.perf_counter() - start
    if distributed.is_main():
        with open(out, "w", encoding="utf-8") as f:
            json.dump({"processes": distributed.world_size(), "loss": loss, "epoch_seconds": seconds,
                       "generate_seconds": generate_seconds, "accepted": len(result.sequences),
                       "attempted": result.n_slots, "threads": torch.get_num_threads()}, f)
    distributed.finish()


def measure(loss, processes, tmp_path):
    out = os.path.join(tmp_path, f"{loss}-{processes}.json")
    launcher = ([sys.executable] if processes == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"])
    subprocess.run(launcher + [__file__, loss, out], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    with open(out, encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("loss", ["sampled_softmax", "full_ce"])
def test_two_processes_against_one(loss, tmp_path):
    one, two = measure(loss, 1, tmp_path), measure(loss, 2, tmp_path)
    row = {"loss": loss, "one": one, "two": two,
           "epoch_speedup": one["epoch_seconds"][-1] / two["epoch_seconds"][-1],
           "generate_speedup": one["generate_seconds"] / two["generate_seconds"]}
    print(f"\n{loss}: epoch {one['epoch_seconds'][-1]:.2f} s -> {two['epoch_seconds'][-1]:.2f} s "
          f"({row['epoch_speedup']:.2f}x); generation {one['generate_seconds']:.1f} s -> "
          f"{two['generate_seconds']:.1f} s ({row['generate_speedup']:.2f}x), {one['accepted']} accepted")
    saved = {}
    if os.path.isfile(RESULTS):
        with open(RESULTS, encoding="utf-8") as f:
            saved = json.load(f)
    saved[loss] = row
    with open(RESULTS, "w", encoding="utf-8") as f:
        json.dump(saved, f, indent=1)


if __name__ == "__main__":
    worker(*sys.argv[1:])
