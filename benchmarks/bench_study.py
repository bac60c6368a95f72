"""Wall time of a complete RSIR study: the real command, base model + 3 rounds, on amazon-beauty.

Run (never part of ``pytest tests``; about half an hour on a 2-core CPU)::

    pytest benchmarks/bench_study.py -s

It runs ``python run_rsir.py --model=SASRec --dataset=amazon-beauty --rsir_rounds=3`` with
default settings in a fresh output directory (``benchmarks/.cache/study``, kept for
inspection), then prints the wall time and each round's generation and training seconds from
the results JSON.
"""
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(ROOT, "benchmarks", ".cache", "study")
COMMAND = [sys.executable, os.path.join(ROOT, "run_rsir.py"), "--model=SASRec", "--dataset=amazon-beauty",
           "--rsir_rounds=3", f"--rsir_output_dir={OUTPUT}", "--show_progress=False"]
BUDGET_MINUTES = 90


def run_study():
    shutil.rmtree(OUTPUT, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(COMMAND, cwd=os.path.join(ROOT, "benchmarks", ".cache"), check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def test_study_wall_time(benchmark):
    os.makedirs(os.path.join(ROOT, "benchmarks", ".cache"), exist_ok=True)
    seconds = benchmark.pedantic(run_study, rounds=1, iterations=1)
    with open(os.path.join(OUTPUT, "rsir_results.json"), encoding="utf-8") as f:
        rounds = json.load(f)["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    print(f"\n{' '.join(COMMAND[1:])}")
    for r in rounds:
        print(f"round {r['round']}: {r['n_real_sequences']}+{r['n_synthetic_sequences']} sequences, "
              f"generate {r['generate_seconds']:.0f} s, train {r['train_seconds']:.0f} s "
              f"(best epoch {r['best_epoch']}), test recall@10 {r['test']['recall@10']:.4f} "
              f"ndcg@10 {r['test']['ndcg@10']:.4f}")
    print(f"wall time {seconds / 60:.1f} min (budget {BUDGET_MINUTES} min)")
    assert sum(r["generate_seconds"] + r["train_seconds"] for r in rounds) <= seconds
    assert seconds <= BUDGET_MINUTES * 60
