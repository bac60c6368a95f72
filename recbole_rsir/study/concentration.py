"""``python -m recbole_rsir.study.concentration``: how narrow each round's generated items are.

A loop that trains on its own output can close in on a few popular items while its test
metrics still hold. This reads the sequences each saved round of a study's runs accepted, each
with the real prefix it grew from (``synthetic.npz`` in ``--work``: rounds computed on another
machine are not there), and measures their items beside the real training sequences': distinct
items, the share of all occurrences that falls on the 1% most frequent items of the catalogue,
and the Gini coefficient of the item counts over the catalogue (0: every item as often, near 1:
one item only). Writes ``<out>/<dataset>/concentration.{md,json}``, one section per model: a call
replaces its model's rows and keeps the others'.
"""
import argparse
import json
import os
import sys

import numpy as np

from recbole_rsir.data.sequences import training_sequences
from recbole_rsir.rounds.store import RoundStore
from recbole_rsir.study.history import load_split
from recbole_rsir.study.plan import Run
from recbole_rsir.study.worker import run_dir


def concentration(items, n_items):
    """Occurrences, distinct items, the top 1%'s share and the Gini coefficient of ``items``
    (ids 1..n_items; 0 is padding and does not count) over a catalogue of ``n_items``."""
    counts = np.sort(np.bincount(items, minlength=n_items + 1)[1:n_items + 1])
    total = int(counts.sum())
    if total == 0:
        return {"occurrences": 0, "distinct": 0, "top1pct_share": float("nan"), "gini": float("nan")}
    rank = np.arange(1, n_items + 1)
    return {"occurrences": total, "distinct": int((counts > 0).sum()),
            "top1pct_share": float(counts[-max(1, n_items // 100):].sum() / total),
            "gini": float(((2 * rank - n_items - 1) @ counts) / (n_items * total))}


def store_rows(store, arm, seed, n_items):
    """One row per finished round k >= 1 of ``store``: the sequences that round accepted."""
    rows = []
    for k in store.finished()[1:]:
        sequences = store.load(k)[1]
        rows.append({"arm": arm, "seed": seed, "round": k, "sequences": len(sequences),
                     **concentration(sequences.items, n_items)})
    return rows


def write(rows, folder, command, model):
    """Replace ``model``'s rows and command in the folder's concentration files, keep other models'."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "concentration.json")
    kept, commands = [], {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        commands = old.get("commands", {"SASRec": old.get("command")})     # files written before models counted
        kept = [r for r in old["rows"] if r.get("model", "SASRec") != model]
    commands[model] = command
    rows = sorted(kept + [{"model": model, **r} for r in rows], key=lambda r: r.get("model", "SASRec"))
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"commands": commands, "rows": rows}, f, indent=1)
    lines = ["# How narrow the generated items are", "",
             "Items of the sequences each round accepted, with the real prefixes they grew from (round 0: the real "
             "training sequences), over the catalogue: distinct items, the share of occurrences on the 1% most "
             "frequent items, and the Gini coefficient of item counts (0: every item as often). From the rounds "
             "saved in the study's work folder."]
    for name in sorted(commands):
        lines += ["", f"## {name}", "", f"`{commands[name]}`", "",
                  "| arm | seed | round | sequences | item occurrences | distinct items | top 1% share | Gini |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['arm']} | {r['seed']} | {r['round']} | {r['sequences']:,} | {r['occurrences']:,} | "
                  f"{r['distinct']:,} | {r['top1pct_share']:.1%} | {r['gini']:.3f} |"
                  for r in rows if r.get("model", "SASRec") == name]
    with open(os.path.join(folder, "concentration.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m recbole_rsir.study.concentration",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--model", default="SASRec")
    parser.add_argument("--arms", default="rsir,nofid,ft,strong", help="runs of the study, comma-separated")
    parser.add_argument("--seeds", default="2020", help="comma-separated")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results"))
    parser.add_argument("--work", default="study_work")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        print(f"error: --seeds must be comma-separated integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    _, train_data, _, _ = load_split(args.model, args.dataset, seeds[0])     # the split is the seeds' same
    n_items = train_data.dataset.item_num - 1
    real = training_sequences(train_data.dataset)
    rows = [{"arm": "real", "seed": "-", "round": 0, "sequences": len(real), **concentration(real.items, n_items)}]
    for arm in args.arms.split(","):
        for seed in seeds:
            store = RoundStore(run_dir(args.work, Run(args.dataset, args.model, arm, seed, 0)))
            rows += store_rows(store, arm, seed, n_items)
    for r in rows:
        print(f"{r['arm']} seed {r['seed']} round {r['round']}: {r['distinct']} distinct items, "
              f"top 1% {r['top1pct_share']:.1%}, Gini {r['gini']:.3f}", flush=True)
    write(rows, os.path.join(args.out, args.dataset),
          "python -m recbole_rsir.study.concentration " + " ".join(argv), args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
