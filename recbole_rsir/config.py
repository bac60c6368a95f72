"""RecBole's Config, layered with this package's yaml and an explicit command line.

Layers, later wins: RecBole's own defaults -> properties/overall.yaml (RSIR keys) ->
properties/model/<model>.yaml -> properties/dataset/<dataset>.yaml -> config files ->
config_dict -> command line. Unlike RecBole's Config, the command line is read only when
given (``cmd_args``), so a Config built inside a user's script or a test never picks up
that program's own ``sys.argv``.
"""
import os
from enum import Enum

import torch
import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType

from recbole_rsir.errors import ConfigError
from recbole_rsir.model.backbone import is_backbone
from recbole_rsir.utils import get_model

PROPERTIES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "properties")


def _rsir_defaults():
    with open(os.path.join(PROPERTIES_DIR, "overall.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


RSIR_KEYS = sorted(k for k in _rsir_defaults() if k.startswith("rsir_"))


def parse_cmd_args(args):
    """``--key=value`` pairs -> dict of strings; anything else is an error, not a warning."""
    parsed = {}
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"command-line argument {arg!r} is not of the form --key=value")
        key, value = arg[2:].split("=", 1)
        if key in parsed and parsed[key] != value:
            raise ConfigError(f"--{key} is given twice with different values")
        parsed[key] = value
    return parsed


class Config(RecBoleConfig):
    """RecBole Config that also finds this package's models and yaml files."""

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=()):
        self._cmd_args = list(cmd_args or [])
        super().__init__(model, dataset, config_file_list, config_dict)
        validate(self)
        self["torch_threads"] = set_torch_threads(self["torch_threads"])

    def _load_cmd_line(self):
        return self._convert_config_dict(parse_cmd_args(self._cmd_args))

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise ConfigError("no model given: pass --model=NAME")
        if dataset is None and "dataset" not in self.external_config_dict:
            raise ConfigError("no dataset given: pass --dataset=NAME")
        model_class = get_model(model) if isinstance(model, str) else model
        return super()._get_model_and_dataset(model_class, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        for path in (
            os.path.join(PROPERTIES_DIR, "overall.yaml"),
            os.path.join(PROPERTIES_DIR, "model", f"{model}.yaml"),
            os.path.join(PROPERTIES_DIR, "dataset", f"{dataset}.yaml"),
        ):
            if os.path.isfile(path):
                self._update_internal_config_dict(path)


def set_torch_threads(n):
    """Fix torch's CPU threads here, as RecBole's Config fixes the device, so a run states what it used."""
    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def _plain_value(value):
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, dict):
        return {str(k): _plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def plain_config(config):
    """Every final config value as JSON/YAML-safe data (enums by name, devices as text)."""
    return {k: _plain_value(v) for k, v in sorted(config.final_config_dict.items())}


def _check(ok, message):
    if not ok:
        raise ConfigError(message)


def validate(config):
    """Reject RSIR settings the method does not define, before any work starts."""
    _check(config["MODEL_TYPE"] == ModelType.SEQUENTIAL,
           f"model {config['model']} is not a sequential recommender; RSIR needs one")
    given = set(config.external_config_dict)
    typos = sorted(k for k in given if k.startswith("rsir_") and k not in RSIR_KEYS)
    _check(not typos, f"unknown RSIR key(s) {', '.join(typos)}; known: {', '.join(RSIR_KEYS)}")

    def integer(key, low):
        value = config[key]
        _check(isinstance(value, int) and not isinstance(value, bool) and value >= low,
               f"{key} must be an integer >= {low}, got {value!r}")

    integer("rsir_rounds", 0)
    integer("rsir_m", 1)
    integer("rsir_tau", 1)
    integer("rsir_min_len", 2)
    integer("rsir_topk", 1)
    integer("rsir_gen_batch_size", 1)
    integer("rsir_score_chunk", 0)
    p = config["rsir_p"]
    _check(isinstance(p, (int, float)) and not isinstance(p, bool) and 0.0 <= p <= 1.0,
           f"rsir_p must be a probability in [0, 1], got {p!r}")
    prefix = config["rsir_prefix_len"]
    _check(prefix == "random" or (isinstance(prefix, int) and not isinstance(prefix, bool) and prefix >= 1),
           f"rsir_prefix_len must be an integer >= 1 or 'random', got {prefix!r}")
    for key in ("rsir_fidelity", "rsir_seed_synthetic", "rsir_overwrite", "exclude_history_items"):
        _check(isinstance(config[key], bool), f"{key} must be true or false, got {config[key]!r}")
    _check(config["rsir_mode"] in ("scratch", "finetune"),
           f"rsir_mode must be 'scratch' or 'finetune', got {config['rsir_mode']!r}")
    _check(config["train_path"] in ("auto", "all_positions", "recbole"),
           f"train_path must be 'auto', 'all_positions' or 'recbole', got {config['train_path']!r}")
    if config["train_path"] == "auto":
        config["train_path"] = "all_positions" if is_backbone(config.model_class) else "recbole"
    _check(config["train_path"] == "recbole" or is_backbone(config.model_class),
           f"{config['model']} cannot give per-position outputs; pass --train_path=recbole")
    _check(config["train_loss"] in ("full_ce", "sampled_softmax"),
           f"train_loss must be 'full_ce' or 'sampled_softmax', got {config['train_loss']!r}")
    integer("train_neg_samples", 1)
    integer("torch_threads", 0)
    integer("train_length_groups", 1)
    _check(config["rsir_min_len"] <= config["MAX_ITEM_LIST_LENGTH"],
           f"rsir_min_len ({config['rsir_min_len']}) exceeds MAX_ITEM_LIST_LENGTH "
           f"({config['MAX_ITEM_LIST_LENGTH']})")
