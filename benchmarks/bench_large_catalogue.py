"""Generation over large catalogues: exact chunked scoring against the ann candidate stage.

Run (never part of ``pytest tests``)::

    OMP_NUM_THREADS=1 pytest benchmarks/bench_large_catalogue.py -s

- ``test_synthetic_catalogue[1000000 | 5000000]``: a random SASRec (hidden 64, RecBole's other
  defaults) over a synthetic catalogue; one generation step (``score_catalogue``) for a batch of
  contexts, exact with ``rsir_score_chunk`` 262,144 and ann (IVF with the default L and nlist,
  nprobe 32 = the default, 128, 512), each mode in its own subprocess: seconds per step (median),
  peak RSS (VmHWM) of the process and added by the steps, the index build time; and, over the
  batch, how often ann takes the exact step's decisions (fidelity pass/stop, catalogue pick,
  history pick, the whole step), how often the index misses an item of the exact top list, and
  the exact rank of the candidates' tau-th score.
- ``test_beauty_sequences``: SASRec trained 2 epochs on amazon-beauty (weights cached, as in
  bench_generation.py): generation for the first users, exact against ann at the defaults and
  at a narrow search: accepted sequences of each, the share identical, seconds.

Torch and faiss run on ``RSIR_BENCH_THREADS`` threads (default 1). The figures go to stdout and,
as JSON, to ``benchmarks/results/large-catalogue.json``.
"""
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
import torch

import recbole_rsir  # noqa: F401  (RecBole workarounds first)
from recbole_rsir.config import Config
from recbole_rsir.data.sequences import SequenceSet
from recbole_rsir.generation.candidates import CandidateSettings, CandidateStage
from recbole_rsir.generation.generator import generate, score_catalogue
from recbole_rsir.generation.rows import SlotSource, decoder_for
from recbole_rsir.generation.rules import GenerationSettings, draw_randomness, prefix_lengths

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
from bench_generation import random_sasrec_and_seeds, report, reset_peak_rss, rss_bytes, trained_on_beauty  # noqa: E402

THREADS = int(os.environ.get("RSIR_BENCH_THREADS", "1"))
RESULTS = os.path.join(BENCH_DIR, "results", "large-catalogue.json")
N_CONTEXTS = 256
CHUNK = 262_144
STEP_RUNS = 3
BEAUTY_USERS = 3000
GIB = 2 ** 30

SCRIPT = r"""
import json, sys
sys.path.insert(0, {bench_dir!r})
from bench_large_catalogue import synthetic_run
print("RESULT " + json.dumps(synthetic_run({n_items}, {mode!r}, {threads})))
"""


def _config(n_items, candidates):
    import tempfile
    return Config(model="SASRec", dataset="synthetic", config_dict={
        "data_path": tempfile.mkdtemp(), "hidden_size": 64, "state": "WARNING", "seed": 1,
        "rsir_score_chunk": CHUNK, "rsir_candidates": candidates, "rsir_m": 1, "rsir_prefix_len": "random",
    })


def _step_inputs(n_items, config):
    """A random SASRec over ``n_items`` and the first-step rows and outputs of N_CONTEXTS seeds
    of 20 random items each (random prefixes)."""
    model, seeds = random_sasrec_and_seeds(config, n_items, N_CONTEXTS, 20)
    settings = GenerationSettings.from_config(config)
    draws = draw_randomness(N_CONTEXTS, settings.max_len, 0)
    prefix = prefix_lengths(seeds.lengths, settings, draws)
    decoder = decoder_for(model, N_CONTEXTS)
    rows = SlotSource(seeds, prefix, settings, decoder.n_items, model.device).rows(0, N_CONTEXTS)
    with torch.no_grad():
        hidden = decoder.start(rows)
    from_history = draws.pool[:, 0] < settings.p
    return model, settings, decoder, rows, hidden, from_history


def _decisions(scores, rows):
    remaining = ~rows.used
    passes = ((scores.history >= scores.tau_th.unsqueeze(1)) & remaining).any(1)
    history_pick = rows.history.gather(1, scores.history.masked_fill(rows.used, -np.inf).argmax(1, keepdim=True))
    return {"passes": passes.tolist(), "catalogue_pick": scores.catalogue_items[:, 0].tolist(),
            "history_pick": history_pick.squeeze(1).tolist()}


NPROBES = (32, 128, 512)
"""IVF lists searched per context: the default, then wider searches on the same index."""


def synthetic_run(n_items, mode, threads):
    """One process: ``mode`` exact or ann steps on a catalogue of ``n_items``; timings, memory and
    the step's decisions; for ann, per nprobe, also which contexts the index misses an item of
    the exact top list for and the exact rank of the candidates' tau-th score."""
    torch.set_num_threads(threads)
    config = _config(n_items, "ann" if mode == "ann" else "exact")
    model, settings, decoder, rows, hidden, from_history = _step_inputs(n_items, config)
    out = {"n_items": n_items, "mode": mode, "rss_before_bytes": rss_bytes(),
           "from_history": from_history.tolist(), "tested": (~rows.used).any(1).tolist()}

    def steps(candidates):
        before = rss_bytes()
        reset_peak_rss()
        seconds = []
        for _ in range(STEP_RUNS):
            start = time.perf_counter()
            scores = score_catalogue(decoder, hidden, rows, settings, catalogue=True, ann=candidates)
            seconds.append(time.perf_counter() - start)
        return scores, {"step_seconds": seconds, "step_peak_added_bytes": rss_bytes("VmHWM") - before,
                        "peak_rss_bytes": rss_bytes("VmHWM"), "decisions": _decisions(scores, rows)}

    with torch.no_grad():
        if mode == "exact":
            out.update(steps(None)[1])
            return out
        reset_peak_rss()
        start = time.perf_counter()
        candidates = CandidateStage(model, settings, decoder.n_items)
        out["build_seconds"] = time.perf_counter() - start
        out["build_peak_added_bytes"] = rss_bytes("VmHWM") - out["rss_before_bytes"]
        out["index"] = {"type": "ivf", "nlist": candidates.index.nlist, "L": candidates.n_candidates}
        width = int(rows.length.max())
        need = min(max(settings.tau, settings.topk + width), decoder.n_items - 1)
        out["by_nprobe"] = {}
        for nprobe in NPROBES:
            candidates.index.nprobe = min(nprobe, candidates.index.nlist)
            scores, figures = steps(candidates)
            _, ids = candidates.index.search(hidden.float().numpy(), candidates.n_candidates)
            figures["retrieved"] = ids + 1
            figures["ann_tau_th"] = scores.tau_th
            out["by_nprobe"][nprobe] = figures
        # the exact top list and the exact rank of each candidates' threshold, outside the timings
        thresholds = torch.stack([f["ann_tau_th"] for f in out["by_nprobe"].values()], 1)
        exact_top, above = exact_top_items(decoder, hidden, need, thresholds)
        for j, figures in enumerate(out["by_nprobe"].values()):
            retrieved = figures.pop("retrieved")
            figures["misses_top_list"] = [not set(exact_top[r].tolist()) <= set(retrieved[r].tolist())
                                          for r in range(len(rows))]
            figures["ann_tau_th_exact_rank"] = (above[:, j] + 1).tolist()
            figures["ann_tau_th"] = figures["ann_tau_th"].tolist()
    return out


def exact_top_items(decoder, hidden, need, thresholds):
    """Per row: the catalogue's exact top ``need`` items (item 0 excluded), and how many items
    score above each of ``thresholds [rows, T]``; in chunks."""
    top, items = None, None
    above = torch.zeros(thresholds.shape, dtype=torch.long)
    for start in range(1, decoder.n_items, CHUNK):
        chunk = torch.arange(start, min(start + CHUNK, decoder.n_items))
        scores = decoder.scores(hidden, chunk).float()
        above += (scores.unsqueeze(2) > thresholds.unsqueeze(1)).sum(1)
        both = scores if top is None else torch.cat([top, scores], 1)
        chunk_items = chunk.expand(len(hidden), -1)
        both_items = chunk_items if items is None else torch.cat([items, chunk_items], 1)
        top, index = torch.topk(both, min(need, both.size(1)), dim=1)
        items = both_items.gather(1, index)
    return items, above


def _subprocess(n_items, mode):
    script = SCRIPT.format(bench_dir=BENCH_DIR, n_items=n_items, mode=mode, threads=THREADS)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(128 * 1024), OMP_NUM_THREADS=str(THREADS))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _save(key, value):
    data = {}
    if os.path.isfile(RESULTS):
        with open(RESULTS) as f:
            data = json.load(f)
    data[key] = value
    data["torch_threads"] = THREADS
    with open(RESULTS, "w") as f:
        json.dump(data, f, indent=1)


def _share(a, b, mask=None):
    pairs = [(x, y) for i, (x, y) in enumerate(zip(a, b)) if mask is None or mask[i]]
    return 100.0 * sum(x == y for x, y in pairs) / len(pairs) if pairs else float("nan")


def _outcome(d, from_history, tested, fidelity=True):
    """Each row's step: stop (None) or the item picked from the pool its draw chose."""
    return [(h if fh else c) if (p and t) or not fidelity else None
            for p, c, h, fh, t in zip(d["passes"], d["catalogue_pick"], d["history_pick"], from_history, tested)]


@pytest.mark.parametrize("n_items", [1_000_000, 5_000_000])
def test_synthetic_catalogue(benchmark, n_items):
    runs = {}

    def run_both():
        for mode in ("exact", "ann"):
            runs[mode] = _subprocess(n_items, mode)

    benchmark.pedantic(run_both, rounds=1, iterations=1)
    exact, ann = runs["exact"], runs["ann"]
    e, tested, fh = exact["decisions"], exact["tested"], exact["from_history"]
    exact_step = float(np.median(exact["step_seconds"]))
    summary = {
        "catalogue items": n_items, "contexts": N_CONTEXTS, "rows with a real item left to test": sum(tested),
        "exact step s (median of 3)": exact_step,
        "exact peak RSS of the process GiB": exact["peak_rss_bytes"] / GIB,
        "exact step peak RSS added MiB": exact["step_peak_added_bytes"] / 2 ** 20,
        "model + inputs RSS GiB": exact["rss_before_bytes"] / GIB,
        "exact fidelity passes %": 100.0 * sum(p for p, t in zip(e["passes"], tested) if t) / max(1, sum(tested)),
        "ann index": ann["index"], "ann index build s": ann["build_seconds"],
        "ann build peak RSS added MiB": ann["build_peak_added_bytes"] / 2 ** 20,
        "ann peak RSS of the process GiB": max(f["peak_rss_bytes"] for f in ann["by_nprobe"].values()) / GIB,
    }
    for nprobe, f in ann["by_nprobe"].items():
        a, step = f["decisions"], float(np.median(f["step_seconds"]))
        ranks = np.array([r for r, t in zip(f["ann_tau_th_exact_rank"], tested)])
        summary[f"nprobe {nprobe}"] = {
            "ann step s (median of 3)": step, "speed-up per step": exact_step / step,
            "ann step peak RSS added MiB": f["step_peak_added_bytes"] / 2 ** 20,
            "same fidelity decision %": _share(e["passes"], a["passes"], tested),
            "ann fidelity passes %": 100.0 * sum(p for p, t in zip(a["passes"], tested) if t) / max(1, sum(tested)),
            "same catalogue pick %": _share(e["catalogue_pick"], a["catalogue_pick"]),
            "same history pick %": _share(e["history_pick"], a["history_pick"]),
            "same step (stop or picked item) %": _share(_outcome(e, fh, tested), _outcome(a, fh, tested)),
            "same step with fidelity off %": _share(_outcome(e, fh, tested, False), _outcome(a, fh, tested, False)),
            "rows whose exact top list the index misses an item of %": 100.0 * np.mean(f["misses_top_list"]),
            "exact rank of the candidates' tau-th score (median, max)": [float(np.median(ranks)), int(ranks.max())],
            "candidates' tau-th <= exact tau-th everywhere": bool(np.all(ranks >= 50)),
        }
    report(f"{n_items:,}-item catalogue, random SASRec (hidden 64), one step, {N_CONTEXTS} contexts", summary)
    _save(f"synthetic_{n_items}", summary)
    benchmark.extra_info.update({k: v for k, v in summary.items() if not isinstance(v, dict)})
    assert all(summary[f"nprobe {n}"]["candidates' tau-th <= exact tau-th everywhere"] for n in NPROBES)


BEAUTY_STAGES = {
    "ann (defaults: ivf, nlist auto, nprobe 32, L 256)": CandidateSettings(256, "ivf", 0, 32, 32, 0),
    "ann (narrow: ivf, nlist auto, nprobe 1, L 64)": CandidateSettings(64, "ivf", 0, 1, 32, 0),
}


def test_beauty_sequences(benchmark):
    torch.set_num_threads(THREADS)
    config, seeds, model, settings = trained_on_beauty("SASRec", 2)
    users = SequenceSet.from_lists([seeds[i] for i in range(BEAUTY_USERS)],
                                   [seeds.times(i) for i in range(BEAUTY_USERS)], seeds.users[:BEAUTY_USERS])
    results = {}

    def run_all():
        for name, candidates in {"exact": None, **BEAUTY_STAGES}.items():
            start = time.perf_counter()
            results[name] = (generate(model, users, dataclasses.replace(settings, ann=candidates), 0),
                             time.perf_counter() - start)

    benchmark.pedantic(run_all, rounds=1, iterations=1)
    key = lambda r: Counter(zip(r.sequences.users.tolist(), map(tuple, r.sequences.to_lists())))
    exact, exact_s = results["exact"]
    summary = {
        "users (the first training users)": BEAUTY_USERS, "slots": exact.n_slots,
        "catalogue items": int(model.n_items - 1),
        "model": "SASRec trained 2 epochs (all-position path, sampled_softmax)",
        "settings": "m=5, tau=50, p=0.5, greedy, prefix 1",
        "exact": {"accepted": len(exact.sequences), "seconds": exact_s,
                  "fidelity failure rate": exact.stats()["fidelity_failure_rate"]},
    }
    for name in BEAUTY_STAGES:
        ann, ann_s = results[name]
        shared = sum((key(exact) & key(ann)).values())
        summary[name] = {
            "accepted": len(ann.sequences), "identical to an exact one": shared,
            "share of exact's accepted found identical %": 100.0 * shared / max(1, len(exact.sequences)),
            "share of ann's accepted found identical %": 100.0 * shared / max(1, len(ann.sequences)),
            "fidelity failure rate": ann.stats()["fidelity_failure_rate"],
            "seconds (index build included)": ann_s,
        }
    report("amazon-beauty: ann against exact generation", summary)
    _save("amazon_beauty", summary)
    assert len(exact.sequences) > 0
