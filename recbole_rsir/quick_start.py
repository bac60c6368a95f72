"""``run_rsir``: config -> data -> RSIR rounds -> results table and files.

The one entry point behind ``run_rsir.py``; everything it does is also reachable from
Python (``RSIRRounds`` for users who already hold RecBole data loaders).
"""
import logging
import os
import sys
import tempfile

from recbole.data import data_preparation
from recbole.utils import init_logger, init_seed, set_color

from recbole_rsir.config import Config
from recbole_rsir.data import create_dataset
from recbole_rsir.data.bundled import check_dataset
from recbole_rsir.errors import ConfigError
from recbole_rsir.rounds.loop import RSIRRounds
from recbole_rsir.rounds.results import RESULTS_FILE, results_table, write_results


def check_output_dir(path):
    """Fail before any training if results cannot be written to ``path``."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ConfigError(f"rsir_output_dir {path!r} is not writable: {err.strerror}") from None


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
