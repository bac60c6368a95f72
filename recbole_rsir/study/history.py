"""``python -m recbole_rsir.study.history``: how much of each round's top 10 is the user's own past.

The two protocols differ only in the items a user has already interacted with: RecBole's keeps
them in the ranking, the filtered one removes them. A training change that teaches a model to
rank those items lower gains on RecBole's protocol and not on the filtered one, where they are
gone anyway. This reads a study's saved rounds (weights, in ``--work``) and measures, on the test
split under RecBole's protocol, the share of the top-10 slots that hold one of the user's earlier
items (training sequence and validation item) and the share of users with at least one there,
beside Recall@10 on both protocols from the run's results file. Writes
``<out>/<dataset>/history-share.{md,json}``.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from recbole.data import data_preparation
from recbole.utils import init_seed

from recbole_rsir.config import Config
from recbole_rsir.data import create_dataset
from recbole_rsir.evaluation.by_length import full_sort_by_length
from recbole_rsir.evaluation.history_mask import mask_earlier_items
from recbole_rsir.rounds.store import RoundStore
from recbole_rsir.study.plan import STRONG_PRESET, Run
from recbole_rsir.study.results import partial_path, result_path
from recbole_rsir.study.worker import run_dir

K = 10


@torch.no_grad()
def history_share(model, test_data, earlier, user_field, k=K):
    """``(share of top-k slots holding an earlier item of the user, share of users with one)``
    under RecBole's protocol (only the padding item masked); ``earlier``: csr [users, items]."""
    model.eval()
    slots = users_with = n_users = 0
    for batch in test_data:
        interaction = batch[0]
        scores = full_sort_by_length(model, interaction)
        scores[:, 0] = -torch.inf
        top = torch.topk(scores, k, dim=-1).indices.numpy()
        users = interaction[user_field].numpy()
        seen = np.asarray(earlier[users[:, None], top].todense()) > 0      # [users, k]
        slots += int(seen.sum())
        users_with += int(seen.any(1).sum())
        n_users += len(top)
    return slots / (n_users * k), users_with / n_users


def load_split(model_name, dataset, seed, config_files=()):
    """``(config, train, valid, test)`` as a study run of ``model_name`` with ``seed`` splits the data."""
    config = Config(model_name, dataset, config_file_list=list(config_files) or None,
                    config_dict={"seed": seed, "state": "WARNING", "show_progress": False})
    init_seed(config["seed"], config["reproducibility"])
    return (config, *data_preparation(config, create_dataset(config)))


def measure(model_name, dataset, arm, seed, work, out, config_files=()):
    """One row per saved round of the run ``(model_name, arm, seed)``."""
    config, train_data, valid_data, test_data = load_split(model_name, dataset, seed, config_files)
    earlier = mask_earlier_items(train_data.dataset, valid_data, test_data)[1].earlier
    run = Run(dataset, model_name, arm, seed, 0)
    rounds = {}
    for path in (partial_path(out, run), result_path(out, run)):     # the complete file wins
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                rounds = {r["round"]: r for r in json.load(f)["rounds"]}
    rows, k = [], 0
    while os.path.isfile(weights := RoundStore(run_dir(work, run)).checkpoint(k, pending=False)):
        model = config.model_class(config, train_data.dataset)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True)["state_dict"])
        slot_share, user_share = history_share(model, test_data, earlier, config["USER_ID_FIELD"])
        recall = {p: rounds[k]["protocols"][p]["test"]["recall@10"] for p in ("recbole", "exclude_history")} \
            if k in rounds else {}
        rows.append({"arm": arm, "seed": seed, "round": k, "history_slot_share": slot_share,
                     "users_with_history_in_top10": user_share, "recall@10": recall})
        print(f"{arm} seed {seed} round {k}: {slot_share:.1%} of top-{K} slots, {user_share:.1%} of users; "
              f"recall@10 {recall}", flush=True)
        k += 1
    return rows


def write(rows, folder, command):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "history-share.json"), "w", encoding="utf-8") as f:
        json.dump({"command": command, "k": K, "rows": rows}, f, indent=1)
    lines = ["# The user's earlier items in the top 10", "",
             "Test split, RecBole's protocol (earlier items stay in the ranking): the share of top-10 slots that "
             "hold one of the user's earlier items (training sequence and validation item), and the share of "
             "users with at least one there; Recall@10 on both protocols from the run's results. From the saved "
             f"weights of each round, by `{command}`.", "",
             "| arm | seed | round | top-10 slots holding an earlier item | users with one | Recall@10 RecBole "
             "| Recall@10 filtered |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        recall = r["recall@10"]
        lines.append(f"| {r['arm']} | {r['seed']} | {r['round']} | {r['history_slot_share']:.1%} | "
                     f"{r['users_with_history_in_top10']:.1%} | {recall.get('recbole', float('nan')):.4f} | "
                     f"{recall.get('exclude_history', float('nan')):.4f} |")
    with open(os.path.join(folder, "history-share.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m recbole_rsir.study.history", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--model", default="SASRec")
    parser.add_argument("--arms", default="rsir,strong", help="runs of the study, comma-separated")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--out", default=os.path.join("benchmarks", "results"))
    parser.add_argument("--work", default="study_work")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for arm in args.arms.split(","):
        files = (os.path.relpath(STRONG_PRESET),) if arm.startswith("strong") else ()
        rows += measure(args.model, args.dataset, arm, args.seed, args.work, args.out, files)
    write(rows, os.path.join(args.out, args.dataset), "python -m recbole_rsir.study.history " + " ".join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
