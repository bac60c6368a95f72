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

from recbole_rsir import distributed
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


def _run_rank(local_rank, launch, kwargs):
    run_rsir(**kwargs, config_dict={**(kwargs["config_dict"] or {}), **launch, "local_rank": local_rank})


def spawn_ranks(config, model, dataset, config_file_list, config_dict, cmd_args, extra):
    """RecBole's way of starting a distributed run (``--nproc=N``, with ``world_size``, ``ip``,
    ``port``, ``offset`` for several machines): this process starts N ranks and waits for them."""
    import torch.multiprocessing as mp

    nproc = config["nproc"]
    world = config["world_size"] if (config["world_size"] or -1) > 0 else nproc
    launch = {"nproc": nproc, "world_size": world, "ip": config["ip"] or "localhost",
              "port": config["port"] or 5678, "offset": config["offset"] or 0}
    kwargs = dict(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict,
                  cmd_args=cmd_args, extra=extra)
    mp.spawn(_run_rank, args=(launch, kwargs), nprocs=nproc, join=True)
    with open(os.path.join(config["rsir_output_dir"], RESULTS_FILE), encoding="utf-8") as f:
        return json.load(f)


def run_rsir(model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=(), extra=None):
    """Train the base model, run ``rsir_rounds`` RSIR rounds, write and return the results.

    ``extra(config, train_data) -> SequenceSet``, if given, makes fixed extra training
    sequences for every round (a study's augmentation or weak-to-strong arm).
    """
    config = build_config(model, dataset, config_file_list, config_dict, cmd_args)
    if (config["nproc"] or 1) > 1 and not distributed.requested(config.final_config_dict):
        return spawn_ranks(config, model, dataset, config_file_list, config_dict, cmd_args, extra)
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

    main = distributed.is_main()        # in a distributed run, rank 0 writes and reports

    def save_round(result):
        records.append(result.as_dict())
        if main:
            write_results(config, records, results_path)

    RSIRRounds(config, train_data, valid_data, test_data, on_round_end=save_round,
               extra=extra(config, train_data) if extra else None).run()
    table = results_table(records)
    logger.info("\n" + table)
    if main:
        print(set_color("RSIR results (test set)", "yellow"))
        print(table)
        print(f"results: {results_path}")
        payload = write_results(config, records, results_path)
    distributed.barrier()
    if not main:
        with open(results_path, encoding="utf-8") as f:
            payload = json.load(f)
    return payload
