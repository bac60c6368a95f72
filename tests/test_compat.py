"""Each RecBole 1.2.1 workaround in recbole_rsir/compat.py, shown to be needed and to work."""
import math
import os
import subprocess
import sys

import numpy as np
import torch
from recbole.data import create_dataset
from recbole.model.layers import FeedForward
from recbole.trainer import Trainer

from recbole_rsir.config import Config
from recbole_rsir.errors import UnknownModelError
from recbole_rsir.utils import get_model


class _Opaque:
    """A class torch's weights_only loader has never heard of."""


def _python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_numpy_aliases_that_recbole_and_ray_use():
    assert np.float is np.float64 and np.float_ is np.float64 and np.bool8 is np.bool_
    # RecBole's metrics build arrays with dtype=np.float
    assert np.zeros(2, dtype=np.float).dtype == np.float64


def test_anomaly_detection_switched_off_after_import():
    plain = _python("import torch, recbole.model.sequential_recommender; print(torch.is_anomaly_enabled())")
    fixed = _python("import recbole_rsir, recbole.model.sequential_recommender, torch; "
                    "print(torch.is_anomaly_enabled())")
    assert plain == "True"      # what RecBole does on its own (sine.py)
    assert fixed == "False"


def test_recbole_quick_start_imports_with_ray():
    assert _python("import recbole_rsir, recbole.quick_start; print('ok')") == "ok"


def test_pandas_fillna_fills_missing_float_values(tmp_path):
    folder = tmp_path / "gaps"
    folder.mkdir()
    lines = ["user_id:token\titem_id:token\ttimestamp:float\tscore:float"]
    for u in range(1, 4):
        for i in range(1, 6):
            score = "" if (u, i) == (2, 3) else str(float(i))
            lines.append(f"{u}\t{i}\t{i}\t{score}")
    (folder / "gaps.inter").write_text("\n".join(lines) + "\n")
    config = Config("SASRec", "gaps", config_dict={
        "data_path": str(tmp_path), "load_col": {"inter": ["user_id", "item_id", "timestamp", "score"]},
        "state": "WARNING"})
    dataset = create_dataset(config)
    score = dataset.inter_feat["score"]
    assert score.notna().all()  # under pandas 3 the missing value would survive as NaN
    assert score.iloc[7] == np.mean([float(i) for u in range(1, 4) for i in range(1, 6) if (u, i) != (2, 3)])


def test_recbole_trainer_loads_its_own_best_checkpoint(tiny):
    config, dataset, train_data, valid_data, test_data = tiny
    model = get_model("SASRec")(config, train_data.dataset)
    trainer = Trainer(config, model)       # RecBole's own trainer, not ours
    trainer.fit(train_data, valid_data, saved=True, show_progress=False, verbose=False)
    result = trainer.evaluate(test_data, load_best_model=True)   # fails on torch>=2.6 unpatched
    assert all(math.isfinite(v) for v in result.values())
    best = torch.load(trainer.saved_model_file, weights_only=False)["state_dict"]
    assert all(torch.equal(value, best[name]) for name, value in model.state_dict().items())
    # every other torch.load in the process keeps the safe default
    path = os.path.join(config["checkpoint_dir"], "plain.pth")
    torch.save({"x": _Opaque()}, path)
    try:
        torch.load(path)
    except Exception as err:  # noqa: BLE001  (torch raises UnpicklingError)
        assert "weights_only" in str(err)
    else:
        raise AssertionError("torch.load lost its weights_only default")


def test_fused_gelu_equals_recboles_formula():
    ff = FeedForward(8, 16, 0.0, "gelu", 1e-12)
    x = torch.randn(100, dtype=torch.float64)
    assert torch.allclose(ff.intermediate_act_fn(x), x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))), atol=1e-12)


def test_get_model_finds_recbole_models_and_rejects_unknown():
    from recbole.model.sequential_recommender import BERT4Rec, SASRec

    assert get_model("BERT4Rec") is BERT4Rec
    assert issubclass(get_model("SASRec"), SASRec)      # this package's registered subclass
    try:
        get_model("NoSuchRec")
    except UnknownModelError as err:
        assert "NoSuchRec" in str(err) and "SASRec" in str(err)
    else:
        raise AssertionError("unknown model accepted")


def test_config_reads_only_the_command_line_it_is_given(tiny_data_path, monkeypatch):
    from conftest import tiny_config_dict

    monkeypatch.setattr(sys, "argv", ["some_program", "--epochs=999", "-x"])
    config = Config("SASRec", "tiny", config_dict=tiny_config_dict(tiny_data_path))
    assert config["epochs"] == 2
    config = Config("SASRec", "tiny", config_dict=tiny_config_dict(tiny_data_path), cmd_args=["--epochs=7"])
    assert config["epochs"] == 7


def test_preloaded_weights_come_back_as_float32(tmp_path):
    from recbole_rsir import compat
    from test_every_model import build, write_featured_dataset

    write_featured_dataset(str(tmp_path))
    config, train_data, _, _ = build(str(tmp_path), "KSR")
    dataset = train_data.dataset
    assert compat._get_preload_weight(dataset, "rel_id").dtype == np.float64     # RecBole's own
    assert dataset.get_preload_weight("rel_id").dtype == np.float32
    assert np.array_equal(dataset.get_preload_weight("rel_id"), compat._get_preload_weight(dataset, "rel_id")
                          .astype(np.float32))
    model = get_model("KSR")(config, dataset)                                     # float64 broke its forward
    batch = next(iter(train_data))
    assert torch.isfinite(model.calculate_loss(batch))


_FOLDER_APPEARS_MEANWHILE = """
import os, sys
{imports}
from recbole.utils.logger import ensure_dir
os.makedirs("{path}", exist_ok=True)
os.path.exists = lambda path: False      # another run created it after the check
try:
    ensure_dir("{path}")
    print("ok", os.path.isdir("{path}"))
except FileExistsError:
    print("FileExistsError")
"""


def test_a_folder_another_run_creates_meanwhile_does_not_end_this_one(tmp_path):
    path = tmp_path / "log" / "SASRec"
    plain = _python(_FOLDER_APPEARS_MEANWHILE.format(imports="", path=path))
    fixed = _python(_FOLDER_APPEARS_MEANWHILE.format(imports="import recbole_rsir", path=path))
    assert plain == "FileExistsError"      # RecBole's check-then-create on its own
    assert fixed == "ok True"


def test_every_recbole_module_holding_ensure_dir_holds_the_tolerant_one():
    holders = _python("import sys, recbole_rsir, recbole.quick_start; from recbole_rsir import compat; "
                      "print(sorted(n for n, m in list(sys.modules.items()) if n.startswith('recbole.') and "
                      "getattr(m, 'ensure_dir', None) is not None and m.ensure_dir is not compat._ensure_dir))")
    assert holders == "[]"
