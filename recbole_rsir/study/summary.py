"""``python -m recbole_rsir.study.summary``: the study's headline table across datasets.

One row per arm, one column per dataset and protocol: test Recall@10 as the mean over seeds, its
change against the row's base (round 0 of the same model, or the strong base for strong rows)
over the seeds both have, and a mark where the paired t-test over them gives p < 0.05. Built from the datasets' results
files (``benchmarks/results/<dataset>/runs/``), written to ``<out>/summary.md``; ``--short`` prints
the rows README carries (intermediate rounds of fine-tuning, no fidelity and the strong base left out).
"""
import argparse
import os
import sys

import numpy as np

from recbole_rsir.study.augment import OPERATORS
from recbole_rsir.study.cells import PROTOCOLS, compare, values
from recbole_rsir.study.results import load_runs

DATASETS = {"amazon-beauty": "Beauty", "amazon-sports-outdoors": "Sports"}
SHORT = {"recbole": "RecBole's", "exclude_history": "filtered"}
MARK = "†"
SUMMARY = "summary.md"
LEFT_OUT_OF_SHORT = {("ft", 1), ("ft", 2), ("nofid", 1), ("nofid", 2), ("strong", 2)}


def rows(models):
    """``(label, model, arm or None for the best augmentation, round, base arm)``, in reading order."""
    out = [("SASRec base (package defaults)", "SASRec", "rsir", 0, "rsir")]
    out += [(f"SASRec + RSIR round {k}", "SASRec", "rsir", k, "rsir") for k in (1, 2, 3)]
    out += [(f"SASRec + RSIR-FT (fine-tuned) round {k}", "SASRec", "ft", k, "rsir") for k in (1, 2, 3)]
    out += [("SASRec + best of five augmentations", "SASRec", None, 0, "rsir"),
            ("SASRec, weak-to-strong", "SASRec", "w2s", 0, "rsir")]
    out += [(f"SASRec, no fidelity, round {k}", "SASRec", "nofid", k, "rsir") for k in (1, 2, 3)]
    out += [("SASRec strong base (sasrec-strong.yaml)", "SASRec", "strong", 0, "strong")]
    out += [(f"strong + RSIR round {k}", "SASRec", "strong", k, "strong") for k in (1, 2, 3)]
    for model in models:
        out += [(f"{model} base", model, "rsir", 0, "rsir")]
        out += [(f"{model} + RSIR round {k}", model, "rsir", k, "rsir") for k in (1, 2, 3)]
    return out


def cell(runs, model, arm, k, base_arm, protocol):
    """``(text, seeds)`` of one cell; the best augmentation is the one with the highest mean."""
    if arm is None:
        means = {op: values(runs, model, f"aug-{op}", 0, protocol, "recall@10") for op in OPERATORS}
        means = {op: v for op, v in means.items() if v}
        if not means:
            return "–", 0
        op = max(means, key=lambda o: np.mean(list(means[o].values())))
        text, n = cell(runs, model, f"aug-{op}", 0, base_arm, protocol)
        return f"{op}: {text}", n
    measured = values(runs, model, arm, k, protocol, "recall@10")
    if not measured:
        return "–", 0
    mean = np.mean(list(measured.values()))
    if (arm, k) == (base_arm, 0):
        return f"{mean:.4f}", len(measured)
    change, p = compare(measured, values(runs, model, base_arm, 0, protocol, "recall@10"))
    mark = MARK if p is not None and p < 0.05 else ""
    return f"{mean:.4f} ({change:+.1%}{mark})", len(measured)


def summary_table(results, models=("CL4SRec", "HSTU"), short=False):
    """Markdown lines of the table from ``results`` (the results root); ``short``: README's rows."""
    runs = {d: load_runs(os.path.join(results, d)) for d in DATASETS}
    header = ["arm", "seeds"] + [f"{name}, {SHORT[p]}" for name in DATASETS.values() for p in PROTOCOLS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, model, arm, k, base_arm in rows(models):
        if short and (arm, k) in LEFT_OUT_OF_SHORT:
            continue
        cells, seeds = [], []
        for dataset in DATASETS:
            counts = []
            for protocol in PROTOCOLS:
                text, n = cell(runs[dataset], model, arm, k, base_arm, protocol)
                cells.append(text)
                counts.append(n)
            # each protocol's count where they differ (the best augmentation may be another operator)
            seeds.append(",".join(str(n) for n in dict.fromkeys(counts)) if any(counts) else "–")
        if all(c == "–" for c in cells):
            continue
        lines.append(f"| {label} | {' / '.join(seeds)} | " + " | ".join(cells) + " |")
    return lines


def write_summary(out):
    """Write ``<out>/summary.md``; return its text."""
    text = "\n".join([
        "# Study summary", "",
        f"Test Recall@10, mean over seeds (seeds: {' / '.join(DATASETS.values())}), and its change against the "
        f"row's base (round 0 of the same model; the strong base for strong rows) over the seeds both have; "
        f"{MARK}: paired t-test over those seeds p < 0.05. RecBole's protocol keeps a user's earlier items in "
        "the ranking, the filtered one removes them (the RSIR paper's code). Per-dataset reports: "
        + ", ".join(f"[{name}]({d}/report.md)" for d, name in DATASETS.items())
        + ". Rebuilt by `python -m recbole_rsir.study.summary` (and by the study after every round).", ""]
        + summary_table(out)) + "\n"
    with open(os.path.join(out, SUMMARY), "w", encoding="utf-8") as f:
        f.write(text)
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_rsir.study.summary", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join("benchmarks", "results"), help="results root")
    parser.add_argument("--short", action="store_true", help="print README's rows only, write nothing")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    print("\n".join(summary_table(args.out, short=True)) if args.short else write_summary(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
