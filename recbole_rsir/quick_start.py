"""``run_rsir``: config -> data -> RSIR rounds -> results table and files.

The one entry point behind ``run_rsir.py``; everything it does is also reachable from
Python (``RSIRRounds`` for users who already hold RecBole data loaders).
"""
import json
import logging
import os
import sys
import tempfile

from recbole.data import data_preparation
from recbole.utils import init_logger, init_seed, set_color

from recbole_rsir.config import Config, plain_config
from recbole_rsir.data import create_dataset
from recbole_rsir.data.bundled import check_dataset
from recbole_rsir.errors import ConfigError
from recbole_rsir.trainer.rounds import RSIRRounds

RESULTS_FILE = "rsir_results.json"
TABLE_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr@10")


def check_output_dir(path):
    """Fail before any training if results cannot be written to ``path``."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ConfigError(f"rsir_output_dir {path!r} is not writable: {err.strerror}") from None


def _relative(value, base):
    if not base or value is None:
        return None
    return (value - base) / base


def results_table(results):
    """The round-by-round table printed at the end of a run."""
    base = results[0]["test"]
    header = (f"{'round':>5} {'train seqs (real+syn)':>22} " +
              " ".join(f"{m:>10}" for m in TABLE_METRICS) +
              f" {'Δrecall@10':>11} {'Δndcg@10':>9} {'gen s':>8} {'train s':>8}")
    lines = [header, "-" * len(header)]
    for r in results:
        test = r["test"]
        seqs = f"{r['n_real_sequences']}+{r['n_synthetic_sequences']}"
        rel = [_relative(test.get(m), base.get(m)) for m in ("recall@10", "ndcg@10")]
        lines.append(
            f"{r['round']:>5} {seqs:>22} " + " ".join(f"{test.get(m, float('nan')):>10.4f}" for m in TABLE_METRICS)
            + "".join(f" {v:>+10.1%}" if v is not None else f" {'n/a':>10}" for v in rel)
            + f" {r['generate_seconds']:>8.1f} {r['train_seconds']:>8.1f}")
    return "\n".join(lines)


def write_results(config, results, path):
    payload = {
        "model": config["model"],
        "dataset": config["dataset"],
        "eval_protocol": {
            "split": "leave-one-out by time (valid = second-to-last, test = last item)",
            "ranking": "full ranking over all items",
            "exclude_history_items": config["exclude_history_items"],
        },
        "config": plain_config(config),
        "rounds": results,
    }
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)
    return payload


def build_config(model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=()):
    """Config with every input checked before anything is written or loaded."""
    config = Config(model, dataset, config_file_list, config_dict, cmd_args)
    check_dataset(config["data_path"], config["dataset"])
    check_output_dir(config["rsir_output_dir"])
    return config


def run_rsir(model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=(), extra=None):
    """Train the base model, run ``rsir_rounds`` RSIR rounds, write and return the results.

    ``extra(config, train_data) -> SequenceSet``, if given, makes fixed extra training
    sequences for every round (a study's augmentation or weak-to-strong arm).
    """
    config = build_config(model, dataset, config_file_list, config_dict, cmd_args)
    output_dir = config["rsir_output_dir"]
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = logging.getLogger()
    logger.info(sys.argv)
    logger.info(config)
    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)

    results_path = os.path.join(output_dir, RESULTS_FILE)
    records = []

    def save_round(result):
        records.append(result.as_dict())
        write_results(config, records, results_path)

    RSIRRounds(config, train_data, valid_data, test_data, on_round_end=save_round,
               extra=extra(config, train_data) if extra else None).run()
    table = results_table(records)
    logger.info("\n" + table)
    print(set_color("RSIR results (test set)", "yellow"))
    print(table)
    print(f"results: {results_path}")
    return write_results(config, records, results_path)
