"""Training speed on real data: one epoch of SASRec on amazon-beauty, stock RecBole vs this path.

Run (never part of ``pytest tests``)::

    pytest benchmarks/bench_training.py -s

All three measurements use the same model, hyperparameters (RecBole's SASRec defaults) and
training data (every training target of every user, 131,413 on Beauty), in one process:

- ``recbole``: RecBole's own path, one row per prefix padded to MAX_ITEM_LIST_LENGTH, full
  cross-entropy, batch 2048 prefixes (RecBole's default), RecBole's Trainer._train_epoch;
- ``all_positions`` with ``full_ce`` and with ``sampled_softmax`` (256 shared negatives):
  one row per user, loss at every position, batches of 256 sequences drawn at random, each
  packed side by side into one pass of the model (``data/loader.py::pack``; defaults);
- ``full_ce_unchunked``: the same epoch with ``F.cross_entropy`` on the whole logit matrix
  in place of the chunked ``catalogue_cross_entropy``.

Both paths run with this package's speed fixes of RecBole's models (anomaly detection off,
fused gelu, FastDropout), so the ratio measures the training path, not those fixes; the fused
Adam of RSIRTrainer is left out of the stock path (its 65 steps an epoch cost under a second).

Each path is timed on its third epoch, after two untimed: stock RecBole's first epochs are
slower than the rest (101, 81, 76, then 71-75 s in a run_rsir log here), the fast paths' are
not, so timing the first epoch flattered the ratio (it gave 33.5x for sampled softmax).
"""
import time

import pytest
import torch
import torch.nn.functional as F
from recbole.data import data_preparation
from recbole.trainer import Trainer
from recbole.utils import init_seed

from recbole_rsir.config import Config
from recbole_rsir.data import create_dataset
from recbole_rsir.data.merge import training_loader
from recbole_rsir.data.sequences import SequenceSet, training_sequences
from recbole_rsir.model import loss
from recbole_rsir.model.dropout import use_fast_dropout
from recbole_rsir.trainer.trainer import RSIRTrainer
from recbole_rsir.utils import get_model

RESULTS = {}


def beauty(model="SASRec", **overrides):
    config = Config(model, "amazon-beauty", config_dict={"show_progress": False, "state": "WARNING", **overrides})
    init_seed(config["seed"], True)
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    return config, train_data, get_model(model)(config, train_data.dataset)


def one_epoch(trainer, loader):
    start = time.perf_counter()
    trainer._train_epoch(loader, 0, show_progress=False)
    return time.perf_counter() - start


@pytest.mark.parametrize("path", ["recbole", "full_ce", "sampled_softmax", "full_ce_unchunked"])
def test_epoch_seconds(benchmark, monkeypatch, path):
    if path == "full_ce_unchunked":
        monkeypatch.setattr(loss, "catalogue_cross_entropy", lambda h, w, t: F.cross_entropy(h @ w.T, t))
    if path == "recbole":
        config, train_data, model = beauty(train_path="recbole", train_batch_size=2048)
        trainer, loader = Trainer(config, use_fast_dropout(model)), train_data
    else:
        config, train_data, model = beauty(train_loss=path.replace("_unchunked", ""))
        trainer = RSIRTrainer(config, model)
        loader = training_loader(config, train_data, training_sequences(train_data.dataset), SequenceSet.empty())
    seconds = benchmark.pedantic(one_epoch, args=(trainer, loader), rounds=1, iterations=1, warmup_rounds=2)
    RESULTS[path] = benchmark.stats.stats.mean if seconds is None else seconds
    print(f"\n{path}: {RESULTS[path]:.1f} s/epoch (torch threads {torch.get_num_threads()})")
    if path != "recbole":
        targets = sorted(int((lengths - 1).sum()) for _, lengths, _ in loader)
        print(f"targets per batch: {targets[0]} to {targets[-1]}, median {targets[len(targets) // 2]}, "
              f"mean {loader.targets_per_batch:.0f}")
    if "recbole" in RESULTS:
        for fast in ("full_ce", "sampled_softmax", "full_ce_unchunked"):
            if fast in RESULTS:
                print(f"speed-up {fast} vs stock RecBole: {RESULTS['recbole'] / RESULTS[fast]:.1f}x")


@pytest.mark.parametrize("rows", ["parts", "packed"])
@pytest.mark.parametrize("model", ["CL4SRec"])
def test_packing_epoch_seconds(benchmark, monkeypatch, model, rows):
    """One epoch of CL4SRec on the all-position path (its yaml, sampled softmax), with rows and
    the two augmented views of each row packed side by side (``packed``, its own), or as a model
    that cannot pack runs them (``parts``: rows one pass per length part, views one pass trimmed
    to the longest). HSTU, packed in commit 84b9a9a, was slower (results/performance.md)."""
    config, train_data, net = beauty(model)
    if rows == "parts":
        monkeypatch.setattr(net, "packs_rows", False)
    trainer = RSIRTrainer(config, net)
    loader = training_loader(config, train_data, training_sequences(train_data.dataset), SequenceSet.empty())
    benchmark.pedantic(one_epoch, args=(trainer, loader), rounds=2, iterations=1, warmup_rounds=1)
    RESULTS[model, rows] = benchmark.stats.stats.median
    print(f"\n{model} {rows}: {RESULTS[model, rows]:.1f} s/epoch (torch threads {torch.get_num_threads()})")
    if {(model, "parts"), (model, "packed")} <= set(RESULTS):
        print(f"{model}: speed-up of packing {RESULTS[model, 'parts'] / RESULTS[model, 'packed']:.2f}x")


@pytest.mark.parametrize("scoring", ["padded", "by_length"])
def test_full_ranking_seconds(benchmark, scoring):
    """Scoring all 22,363 validation users: RecBole's padded batches vs length-trimmed groups."""
    from recbole_rsir.evaluation.by_length import full_sort_by_length

    config = Config("SASRec", "amazon-beauty", config_dict={"show_progress": False, "state": "WARNING"})
    init_seed(config["seed"], True)
    _, valid_data, _ = data_preparation(config, create_dataset(config))
    model = get_model("SASRec")(config, valid_data.dataset).eval()
    score = full_sort_by_length if scoring == "by_length" else (lambda m, inter: m.full_sort_predict(inter))

    @torch.no_grad()
    def rank_all():
        return [score(model, batch[0]) for batch in valid_data]

    benchmark.pedantic(rank_all, rounds=1, iterations=1)
    print(f"\n{scoring}: {benchmark.stats.stats.mean:.1f} s for {len(valid_data.dataset)} users")


@pytest.mark.parametrize("collector", ["recbole", "topk"])
def test_validation_seconds(benchmark, collector):
    """One whole validation pass of RSIRTrainer (scores, masks, metrics), with RecBole's metric
    collector or with TopkCollector, which builds the same rows without an [users, items] matrix."""
    from recbole.evaluator import Collector

    config, train_data, model = beauty()
    _, valid_data, _ = data_preparation(config, create_dataset(config))
    trainer = RSIRTrainer(config, model)
    if collector == "recbole":
        trainer.eval_collector = Collector(config)
    result = benchmark.pedantic(trainer.evaluate, args=(valid_data,), kwargs={"load_best_model": False},
                                rounds=3, iterations=1, warmup_rounds=1)
    RESULTS[collector] = benchmark.stats.stats.median
    print(f"\n{collector}: {RESULTS[collector]:.2f} s a validation pass of {len(valid_data.dataset)} users "
          f"(torch threads {torch.get_num_threads()}); recall@10 {result['recall@10']}")
    if {"recbole", "topk"} <= set(RESULTS):
        print(f"speed-up of the topk collector: {RESULTS['recbole'] / RESULTS['topk']:.2f}x")


@pytest.mark.parametrize("kind", ["torch", "fast"])
@pytest.mark.parametrize("what", ["dropout", "adam"])
def test_step_overheads(benchmark, what, kind):
    """The per-step costs RSIRTrainer cuts, at SASRec-on-Beauty sizes: dropout forward and
    backward on a [256, 10, 64] batch (nn.Dropout vs FastDropout), and one Adam step over
    SASRec's parameters (RecBole's Adam vs fused)."""
    from recbole_rsir.model.dropout import FastDropout

    if what == "dropout":
        x = torch.randn(256, 10, 64, requires_grad=True)
        drop = FastDropout(0.5) if kind == "fast" else torch.nn.Dropout(0.5)

        def step():
            drop(x).sum().backward()
    else:
        model = beauty()[2]
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        step = torch.optim.Adam(model.parameters(), lr=1e-3, fused=kind == "fast").step

    def hundred():
        for _ in range(100):
            step()

    benchmark.pedantic(hundred, rounds=3, iterations=1, warmup_rounds=1)
    print(f"\n{what} {kind}: {benchmark.stats.stats.mean * 10:.2f} ms a step")
