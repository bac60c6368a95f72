"""Generation benchmarks on real data: speed, memory, and the speed-up over the plain loop.

Run (never part of ``pytest tests``; this folder is not in testpaths)::

    pytest benchmarks/bench_generation.py -s

- full amazon-beauty generation (every training user, m=5, tau=50, p=0.5, greedy, prefix 1)
  with a SASRec trained for a few epochs on the all-position path (its weights are cached
  under benchmarks/.cache/, which git ignores): wall time, sequences/second, peak RSS;
- the same through the generic path (``-k generic``): a BERT4Rec, which is no backbone,
  trained one epoch on RecBole's path and scored with its own full_sort_predict;
- the reference and the fast generator on the same first users: per-sequence speed ratio;
- a synthetic 1,000,000-item catalogue: peak memory of generation, unchunked and chunked.

RSIR_BENCH_THREADS sets torch's threads (default 1: the machine is shared, and the plain
loop's many small operations slow down badly when threads contend). Both generators always
run with the same setting.
"""
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

import recbole_rsir  # noqa: F401  (RecBole workarounds first)
from recbole_rsir.config import Config
from recbole_rsir.data.bundled import ensure_dataset
from recbole_rsir.data.merge import training_loader
from recbole_rsir.data.sequences import SequenceSet, training_sequences
from recbole_rsir.generation.generator import generate
from recbole_rsir.generation.reference import generate_reference
from recbole_rsir.generation.rules import GenerationSettings
from recbole_rsir.model.sequential_recommender import SASRec
from recbole_rsir.trainer.trainer import RSIRTrainer
from recbole_rsir.utils import get_model

CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache")
THREADS = int(os.environ.get("RSIR_BENCH_THREADS", "1"))
EPOCHS = 10
SUBSET_USERS = 2000  # enough slots (10,000) to keep batches full, as in a real run
FAST_ROUNDS = 3
GIB = 2 ** 30


def rss_bytes(field="VmRSS"):
    """Current (VmRSS) or peak since the last reset (VmHWM) resident memory of this process."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss():
    """Start VmHWM afresh (Linux >= 4.0), so a peak can be taken for one part of a run."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def report(title, figures):
    width = max(len(k) for k in figures)
    print(f"\n== {title} ==")
    for key, value in figures.items():
        print(f"  {key:<{width}}  {value}")


@pytest.fixture(scope="module", autouse=True)
def threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


def trained_on_beauty(model_name, epochs):
    """(config, seeds, model trained ``epochs`` epochs on its default path, settings) for the
    bundled amazon-beauty; the weights are cached."""
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, ".gitignore"), "w") as f:
        f.write("*\n")
    root = os.path.join(CACHE, "data")
    ensure_dataset(os.path.join(root, "amazon-beauty"), "amazon-beauty")
    config = Config(model=model_name, dataset="amazon-beauty", config_dict={
        "data_path": root, "epochs": epochs, "show_progress": False, "state": "WARNING",
        "checkpoint_dir": os.path.join(CACHE, "saved"), "rsir_output_dir": os.path.join(CACHE, "out"),
        "rsir_m": 5, "rsir_tau": 50, "rsir_p": 0.5, "rsir_topk": 1, "rsir_prefix_len": 1,
        "rsir_fidelity": True,
    })
    init_seed(config["seed"], config["reproducibility"])
    train, valid, _ = data_preparation(config, create_dataset(config))
    seeds = training_sequences(train.dataset)
    model = get_model(model_name)(config, train.dataset).to(config["device"])
    weights = os.path.join(CACHE, f"{model_name.lower()}-amazon-beauty-{epochs}ep.pth")
    if os.path.isfile(weights):
        model.load_state_dict(torch.load(weights, map_location=config["device"], weights_only=True))
    else:
        start = time.perf_counter()
        loader = training_loader(config, train, seeds, SequenceSet.empty())
        trainer = RSIRTrainer(config, model)
        _, best = trainer.fit(loader, valid, saved=False)
        torch.save(model.state_dict(), weights)
        report(f"{model_name} training ({config['train_path']} path, cached for later runs)",
               {"epochs": epochs, "seconds": f"{time.perf_counter() - start:.0f}", "valid": best})
    model.eval()
    return config, seeds, model, GenerationSettings.from_config(config)


@pytest.fixture(scope="module")
def beauty(threads):
    return trained_on_beauty("SASRec", EPOCHS)


def generate_all(model, seeds, settings, config, benchmark, title):
    """Generation for every training user, timed; its figures, reported."""
    rss_before = rss_bytes()
    reset_peak_rss()
    start = time.perf_counter()
    result = benchmark.pedantic(generate, args=(model, seeds, settings, config["seed"]),
                                kwargs={"show_progress": False}, rounds=1, iterations=1)
    seconds = time.perf_counter() - start
    peak_generation = rss_bytes("VmHWM") - rss_before
    peak_process = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    figures = {
        "users (seeds)": len(seeds),
        "slots (users x m)": result.n_slots,
        "accepted sequences": len(result.sequences),
        "acceptance rate": f"{result.acceptance_rate:.3f}",
        "mean length": f"{result.mean_length:.2f}",
        "fidelity tests (a row scored once each)": result.counts.fidelity_tests,
        "wall time": f"{seconds:.1f} s",
        "fidelity tests / second": f"{result.counts.fidelity_tests / seconds:.0f}",
        "slots / second": f"{result.n_slots / seconds:.0f}",
        "accepted sequences / second": f"{len(result.sequences) / seconds:.0f}",
        "peak RSS, whole process": f"{peak_process / GIB:.2f} GiB (target < 4 GiB)",
        "peak RSS added by generation": f"{peak_generation / GIB:.3f} GiB",
        "torch threads": torch.get_num_threads(),
    }
    report(title, figures)
    benchmark.extra_info.update(figures)
    return seconds, peak_process


def test_full_beauty(beauty, benchmark):
    config, seeds, model, settings = beauty
    seconds, peak_process = generate_all(model, seeds, settings, config, benchmark,
                                         "full amazon-beauty generation (fast)")
    assert seconds < 300 and peak_process < 4 * GIB


def test_full_beauty_generic(threads, benchmark):
    config, seeds, model, settings = trained_on_beauty("BERT4Rec", 1)
    assert config["train_path"] == "recbole"
    generate_all(model, seeds, settings, config, benchmark, "full amazon-beauty generation (generic path, BERT4Rec)")


def test_speed_ratio_against_reference(beauty, benchmark):
    """One reference run (long, so load on the machine averages out); the fast generator's
    median of FAST_ROUNDS runs (each short, so one run can land on a busy moment)."""
    config, seeds, model, settings = beauty
    subset = seeds.select(range(SUBSET_USERS))
    start = time.perf_counter()
    reference = generate_reference(model, subset, settings, config["seed"])
    reference_seconds = time.perf_counter() - start
    fast = benchmark.pedantic(generate, args=(model, subset, settings, config["seed"]),
                              rounds=FAST_ROUNDS, iterations=1)
    fast_seconds = benchmark.stats.stats.median
    same = (reference.sequences.to_lists() == fast.sequences.to_lists()
            and reference.sequences.timestamps.tolist() == fast.sequences.timestamps.tolist())
    ratio = reference_seconds / fast_seconds
    figures = {
        "users / slots": f"{SUBSET_USERS} / {reference.n_slots}",
        "reference (1 run)": f"{reference_seconds:.2f} s = "
                             f"{1e3 * reference_seconds / reference.n_slots:.2f} ms / slot",
        f"fast (median of {FAST_ROUNDS})": f"{fast_seconds:.3f} s = "
                                          f"{1e3 * fast_seconds / fast.n_slots:.3f} ms / slot",
        "fast (all runs)": ", ".join(f"{x:.3f} s" for x in benchmark.stats.stats.data),
        "speed ratio (same slots)": f"{ratio:.1f}x (target >= 30x)",
        "identical output": same,
        "accepted sequences": len(fast.sequences),
        "torch threads": torch.get_num_threads(),
    }
    report(f"reference vs fast on the first {SUBSET_USERS} users", figures)
    benchmark.extra_info.update(figures)
    assert same
    assert ratio >= 30


# ---- a 1,000,000-item catalogue: memory is bounded by the chunk, not the catalogue ----

MMAP_THRESHOLD = 128 * 1024
"""glibc then serves every large buffer with its own mapping and returns it when freed, so
resident memory follows live tensors; by default its threshold grows with freed buffers and
the heap keeps freed chunks, which blurs peaks by tens of MiB."""

MILLION_SCRIPT = r"""
import json, sys
sys.path.insert(0, {bench_dir!r})
from bench_generation import million_item_run
print("RESULT " + json.dumps(million_item_run({chunk}, {threads})))
"""


class _Catalogue:
    """Just what SASRec's constructor asks of a dataset: the number of items."""

    def __init__(self, n_items):
        self.n_items = n_items

    def num(self, field):
        return self.n_items


def random_sasrec_and_seeds(config, n_items, n_seeds, length):
    """A seeded random SASRec over ``n_items`` items and ``n_seeds`` seeds of ``length`` random items."""
    torch.manual_seed(0)
    model = SASRec(config, _Catalogue(n_items)).eval()
    rng = np.random.default_rng(0)
    seeds = SequenceSet.from_lists([rng.integers(1, n_items, size=length) for _ in range(n_seeds)],
                                   [np.arange(float(length)) for _ in range(n_seeds)], np.arange(n_seeds))
    return model, seeds


def million_item_run(chunk, threads, n_items=1_000_000, n_seeds=300, max_len=10):
    """Peak RSS added by generating from a random SASRec over ``n_items`` items (subprocess)."""
    import tempfile

    torch.set_num_threads(threads)
    config = Config(model="SASRec", dataset="million", config_dict={
        "data_path": tempfile.mkdtemp(), "hidden_size": 32, "inner_size": 64, "n_layers": 1, "n_heads": 1,
        "MAX_ITEM_LIST_LENGTH": max_len, "rsir_min_len": 3, "state": "WARNING", "seed": 1,
        "rsir_gen_batch_size": n_seeds, "rsir_score_chunk": chunk, "rsir_fidelity": False, "rsir_m": 1,
    })
    model, seeds = random_sasrec_and_seeds(config, n_items, n_seeds, 8)
    settings = GenerationSettings.from_config(config)
    rss_before = rss_bytes()
    reset_peak_rss()
    start = time.perf_counter()
    result = generate(model, seeds, settings, 0)
    return {"chunk": chunk, "seconds": time.perf_counter() - start,
            "peak_added_bytes": rss_bytes("VmHWM") - rss_before, "rss_before_bytes": rss_before,
            "accepted": len(result.sequences), "mean_length": result.mean_length,
            "sequences": result.sequences.to_lists()[:50]}


def test_memory_million_item_catalogue(benchmark):
    bench_dir = os.path.dirname(os.path.abspath(__file__))
    runs = {}

    def run_all():
        for chunk in (0, 262_144, 65_536, 16_384):
            script = MILLION_SCRIPT.format(bench_dir=bench_dir, chunk=chunk, threads=THREADS)
            out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                 env=dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD)))
            line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
            runs[chunk] = json.loads(line[len("RESULT "):])

    benchmark.pedantic(run_all, rounds=1, iterations=1)
    figures = {}
    for chunk, run in runs.items():
        scores = 300 * (chunk or 1_000_000) * 4
        figures[f"chunk {chunk or 'none (whole catalogue)'}"] = (
            f"peak added {run['peak_added_bytes'] / 2**20:7.0f} MiB  "
            f"([300, chunk] float32 scores = {scores / 2**20:5.0f} MiB)  {run['seconds']:.1f} s  "
            f"accepted {run['accepted']}, mean length {run['mean_length']:.1f}")
    figures["model + process before generation"] = f"{runs[0]['rss_before_bytes'] / 2**20:.0f} MiB"
    report(f"1,000,000-item catalogue, 300 seeds, batch 300, fidelity off, "
           f"MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}", figures)
    benchmark.extra_info.update({str(k): v["peak_added_bytes"] for k, v in runs.items()})
    chunked = [runs[c] for c in (262_144, 65_536, 16_384)]
    assert all(run["sequences"] == runs[0]["sequences"] for run in chunked)
    peaks = [runs[c]["peak_added_bytes"] for c in (16_384, 65_536, 262_144, 0)]
    assert peaks == sorted(peaks)
    assert runs[65_536]["peak_added_bytes"] < 0.25 * runs[0]["peak_added_bytes"]
