"""RecBole's Config, layered with this package's yaml and an explicit command line.

Layers, later wins: RecBole's own defaults -> properties/overall.yaml (RSIR keys) ->
properties/model/<model>.yaml -> properties/dataset/<dataset>.yaml -> config files ->
config_dict -> command line. Unlike RecBole's Config, the command line is read only when
given (``cmd_args``), so a Config built inside a user's script or a test never picks up
that program's own ``sys.argv``. Every input is checked before RecBole acts on it: config
files must be readable yaml mappings, every key must be known (RecBole's, a model's, a
dataset's or this package's; for a model class of the user's own, its ``rsir_`` keys), and the keys of ``recbole_rsir.schema`` must hold values they accept.
"""
import difflib
import glob
import os
from enum import Enum
from functools import lru_cache

import recbole
import torch
import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType, dataset_arguments, evaluation_arguments, general_arguments, training_arguments

from recbole_rsir import distributed
from recbole_rsir.errors import ConfigError, InputError
from recbole_rsir.model.backbone import is_backbone
from recbole_rsir.schema import KEYS
from recbole_rsir.utils import get_model

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
PROPERTIES_DIR = next(path for path in (os.path.join(_PACKAGE_DIR, "properties"),              # installed
                                        os.path.join(os.path.dirname(_PACKAGE_DIR), "properties"))  # checkout
                      if os.path.isdir(path))
RECBOLE_PROPERTIES_DIR = os.path.join(os.path.dirname(os.path.abspath(recbole.__file__)), "properties")

RECBOLE_SETS = ("model", "dataset", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "valid_metric_bigger",
                "single_spec", "valid_neg_sample_args", "test_neg_sample_args",
                "nproc", "offset", "world_size", "ip", "port")
"""Keys RecBole's Config (or run_recbole's distributed launch) sets itself, in no yaml of RecBole's."""


def _yaml_keys(pattern):
    keys = set()
    for path in glob.glob(pattern):
        with open(path, encoding="utf-8") as f:
            keys.update(yaml.safe_load(f) or {})
    return keys


@lru_cache(maxsize=None)
def known_keys():
    """Every key a config may set: RecBole's, every model's and dataset's yaml, and this package's.

    RecBole's ``dataset/url.yaml`` and ``kg_url.yaml`` map dataset names to download addresses;
    they are no config, so their names are no keys.
    """
    keys = set(KEYS) | set(RECBOLE_SETS)
    keys.update(general_arguments, training_arguments, evaluation_arguments, dataset_arguments)
    for root in (RECBOLE_PROPERTIES_DIR, PROPERTIES_DIR):
        for pattern in ("overall.yaml", "model/*.yaml", "dataset/*.yaml", "quick_start_config/*.yaml"):
            keys |= _yaml_keys(os.path.join(root, pattern))
    for table in ("url.yaml", "kg_url.yaml"):
        keys -= _yaml_keys(os.path.join(RECBOLE_PROPERTIES_DIR, "dataset", table))
    return frozenset(keys)


def check_known(config_dict, own_model=False):
    """Refuse keys no layer defines, naming the closest known one (a typo would be ignored).
    ``own_model``: the model is a class of the user's own, whose keys no yaml here declares
    (RecBole passes them in config files or config_dict); only ``rsir_`` keys are checked then."""
    unknown = sorted(str(k) for k in config_dict
                     if k not in known_keys() and not (own_model and not str(k).startswith("rsir_")))
    if unknown:
        closest = [difflib.get_close_matches(k, known_keys(), n=1, cutoff=0)[0] for k in unknown]
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"did you mean {', '.join(closest)}?")


def _is_registered(model_class):
    """Whether ``model_class`` is RecBole's or this package's (their yaml declare its keys)."""
    return model_class.__module__.split(".")[0] in ("recbole", "recbole_rsir")


def read_config_file(path, loader):
    """One config file as a dict, or a one-line error saying why it cannot be one."""
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.load(f.read(), Loader=loader)
    except OSError as err:
        raise ConfigError(f"config file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not utf-8 text") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ConfigError(f"config file {path} is not valid yaml{where}: {problem}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} holds a {type(values).__name__}, not a mapping of key: value")
    return values


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
    """RecBole Config that also finds this package's models and yaml files, and checks its input."""

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=()):
        self._cmd_args = list(cmd_args or [])
        self._own_model = isinstance(model, type) and not _is_registered(model)
        try:
            super().__init__(model, dataset, config_file_list, config_dict)
        except InputError:
            raise
        except (ValueError, TypeError, NotImplementedError, RuntimeError) as err:   # RecBole's own checks
            raise ConfigError(f"RecBole refuses the config: {' '.join(str(err).split())}") from None
        validate(self)
        self["torch_threads"] = set_torch_threads(self["torch_threads"])

    def _load_config_files(self, file_list):
        merged = {}
        for path in file_list or ():
            merged.update(read_config_file(path, self.yaml_loader))
        return merged

    def _load_cmd_line(self):
        return self._convert_config_dict(parse_cmd_args(self._cmd_args))

    def _merge_external_config_dict(self):
        super()._merge_external_config_dict()
        check_known(self.external_config_dict, own_model=self._own_model)

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

    def _init_device(self):
        """RecBole starts a process group only on GPUs; this one also runs on CPU (distributed.py)."""
        if distributed.requested(self.final_config_dict):
            distributed.start(self.final_config_dict)
        else:
            super()._init_device()

    def _set_default_parameters(self):
        """Check each declared key before RecBole reads it, so a bad value stops with its name."""
        for key in KEYS.values():
            key.check(self.final_config_dict.get(key.name))
        super()._set_default_parameters()


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
    """Rules that join keys, and the model's fit to RSIR; each key alone is checked in the schema."""
    _check(config["MODEL_TYPE"] == ModelType.SEQUENTIAL,
           f"model {config['model']} is not a sequential recommender; RSIR needs one")
    if config["train_path"] == "auto":
        config["train_path"] = "all_positions" if is_backbone(config.model_class) else "recbole"
    _check(config["train_path"] == "recbole" or is_backbone(config.model_class),
           f"{config['model']} cannot give per-position outputs; pass --train_path=recbole")
    _check(config["rsir_min_len"] <= config["MAX_ITEM_LIST_LENGTH"],
           f"rsir_min_len ({config['rsir_min_len']}) exceeds MAX_ITEM_LIST_LENGTH "
           f"({config['MAX_ITEM_LIST_LENGTH']})")
    reported = [f"{metric.lower()}@{k}" for metric in config["metrics"] for k in config["topk"]]
    _check(config["valid_metric"].lower() in reported,
           f"valid_metric must be one of metrics@topk ({', '.join(reported)}), got {config['valid_metric']!r}")
