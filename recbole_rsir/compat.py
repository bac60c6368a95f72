"""Workarounds for recbole 1.2.1 on today's numpy / torch / pandas, applied once on import.

Every workaround says what it answers and when it can go. ``import recbole_rsir`` applies
all of them before any RecBole module is used; tests/test_compat.py proves each one.
"""
import os

import numpy as np
import torch

# 1. numpy >= 1.24 removed np.float/np.int/np.bool and numpy 2 removed np.float_/np.bool8.
#    RecBole's Config does `np.float = np.float_` and its metrics use np.float; ray 2.6.3
#    (imported by recbole.quick_start) uses np.bool8. Can go when RecBole > 1.2.1 and
#    ray >= 2.7 are used (RecBole issue #1876 / PR "numpy 1.24 compatibility").
_NUMPY_ALIASES = {
    "float_": np.float64,
    "float": np.float64,  # what RecBole itself assigns (np.float_)
    "int": int,
    "bool": bool,
    "bool8": np.bool_,
    "complex_": np.complex128,
    "unicode_": np.str_,
}
for _name, _target in _NUMPY_ALIASES.items():
    if _name not in np.__dict__:
        setattr(np, _name, _target)

# 2. pandas 3 makes `df[col].fillna(..., inplace=True)` (RecBole dataset.py) a silent no-op
#    under copy-on-write, so missing values survive into feature tensors. We pin pandas<3
#    in pyproject.toml and refuse to run on pandas 3 rather than compute on wrong data.
#    Can go when RecBole assigns the result of fillna.
import pandas as _pd  # noqa: E402

if int(_pd.__version__.split(".")[0]) >= 3:
    raise ImportError(
        f"recbole_rsir needs pandas<3 (found {_pd.__version__}): RecBole 1.2.1's "
        "fillna(inplace=True) silently does nothing on pandas 3. pip install 'pandas<3'"
    )
import warnings  # noqa: E402

# pandas 2 warns about exactly that pattern on every dataset load; the pin makes it moot.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.data\.dataset")

# 3. Importing recbole.model.sequential_recommender runs sine.py, which calls
#    torch.autograd.set_detect_anomaly(True) for the whole process and slows every
#    backward pass several-fold. Import it once here, then switch anomaly detection off.
#    Can go when sine.py stops doing that at import time.
import recbole.model.sequential_recommender  # noqa: E402,F401

torch.autograd.set_detect_anomaly(False)

# 4. torch >= 2.6 loads with weights_only=True by default, but RecBole's Trainer saves its
#    Config object inside checkpoints, so Trainer.evaluate(load_best_model=True) and
#    resume_checkpoint fail. RecBole's trainer module gets a torch whose `load` trusts the
#    files RecBole itself wrote; every other torch.load in the process keeps the safe
#    default. Can go when RecBole saves only tensors and plain data.
import recbole.trainer.trainer as _recbole_trainer  # noqa: E402


class _TorchForRecBoleCheckpoints:
    """The torch module, except that load() defaults to weights_only=False."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return torch.load(*args, **kwargs)


_recbole_trainer.torch = _TorchForRecBoleCheckpoints()

# 5. recbole.quick_start imports ray 2.6.3, which imports pkg_resources (gone in
#    setuptools >= 81) and np.bool8 (aliased above). pyproject.toml pins setuptools<81.
#    Nothing to patch at run time; tests/test_compat.py imports recbole.quick_start.

# 6. Speed, not correctness: RecBole's FeedForward.gelu spells out x*0.5*(1+erf(x/sqrt 2))
#    in four separate tensor ops (and four more in backward); torch's fused F.gelu is the
#    same exact-erf function in one kernel. It was a third of SASRec's forward time here.
#    Models built after `import recbole_rsir` use it. Can go if RecBole switches to F.gelu.
import torch.nn.functional as _F  # noqa: E402
from recbole.model.layers import FeedForward as _FeedForward  # noqa: E402


def _fused_gelu(self, x):
    return _F.gelu(x)


_FeedForward.gelu = _fused_gelu

# 7. RecBole's preloaded weights (`preload_weight`, e.g. pretrained knowledge-graph vectors)
#    come back from Dataset.get_preload_weight as float64 arrays; KSR turns its relation
#    vectors into a float64 tensor and multiplies it with its float32 outputs, which fails on
#    every forward. They are returned as float32, the models' dtype. Can go when RecBole casts
#    them (KSR's relation_Matrix, recbole/model/sequential_recommender/ksr.py).
from recbole.data.dataset import Dataset as _Dataset  # noqa: E402

_get_preload_weight = _Dataset.get_preload_weight


def _float32_preload_weight(self, field):
    return _get_preload_weight(self, field).astype(np.float32)


_Dataset.get_preload_weight = _float32_preload_weight

# 8. RecBole's ensure_dir checks that a folder is missing, then creates it. Runs started
#    together in one folder (a study's two jobs, a distributed run's ranks) both see ./log
#    missing and the second makedirs raises FileExistsError, ending that run. Every RecBole
#    module that imported it by name gets one that tolerates the folder appearing meanwhile.
#    Can go when RecBole's ensure_dir passes exist_ok=True.
import importlib  # noqa: E402


def _ensure_dir(dir_path):
    os.makedirs(dir_path, exist_ok=True)


for _module in ("recbole.utils.utils", "recbole.utils", "recbole.utils.logger", "recbole.trainer",
                "recbole.trainer.trainer", "recbole.data", "recbole.data.utils", "recbole.data.dataset.dataset"):
    importlib.import_module(_module).ensure_dir = _ensure_dir
