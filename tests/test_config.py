"""Configuration layering and validation of RSIR keys."""
import pytest
import torch
from conftest import tiny_config_dict

from recbole_rsir.config import RSIR_KEYS, Config, parse_cmd_args
from recbole_rsir.errors import ConfigError


def test_layers_rsir_defaults_then_command_line(tiny_data_path):
    config = Config("SASRec", "tiny", config_dict=tiny_config_dict(tiny_data_path))
    assert (config["rsir_tau"], config["rsir_p"], config["rsir_m"], config["rsir_min_len"]) == (50, 0.5, 5, 3)
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"} and config["eval_args"]["order"] == "TO"
    assert config["topk"] == [10, 20] and config["valid_metric"] == "NDCG@10"
    assert config["hidden_size"] == 16               # config_dict over yaml
    config = Config("SASRec", "tiny", config_dict=tiny_config_dict(tiny_data_path),
                    cmd_args=["--rsir_tau=10", "--rsir_p=0.25", "--rsir_fidelity=False", "--hidden_size=8"])
    assert (config["rsir_tau"], config["rsir_p"], config["rsir_fidelity"], config["hidden_size"]) == (10, 0.25, False, 8)


@pytest.mark.parametrize("arg, message", [
    ("--rsir_p=1.5", "rsir_p must be a probability in [0, 1], got 1.5"),
    ("--rsir_p=-0.1", "rsir_p must be a probability in [0, 1]"),
    ("--rsir_tau=0", "rsir_tau must be an integer >= 1, got 0"),
    ("--rsir_m=0", "rsir_m must be an integer >= 1"),
    ("--rsir_rounds=-1", "rsir_rounds must be an integer >= 0"),
    ("--rsir_min_len=1", "rsir_min_len must be an integer >= 2"),
    ("--rsir_tau=ten", "rsir_tau must be an integer >= 1, got 'ten'"),
    ("--rsir_mode=warm", "rsir_mode must be 'scratch' or 'finetune'"),
    ("--rsir_prefix_len=0", "rsir_prefix_len must be an integer >= 1 or 'random'"),
    ("--rsir_fidelity=maybe", "rsir_fidelity must be true or false"),
    ("--rsir_tua=5", "unknown RSIR key(s) rsir_tua"),
    ("--train_loss=bpr", "train_loss must be 'full_ce' or 'sampled_softmax'"),
    ("--torch_threads=-1", "torch_threads must be an integer >= 0, got -1"),
    ("epochs=3", "is not of the form --key=value"),
])
def test_invalid_settings_are_rejected_with_one_line(tiny_data_path, arg, message):
    with pytest.raises(ConfigError) as err:
        Config("SASRec", "tiny", config_dict=tiny_config_dict(tiny_data_path), cmd_args=[arg])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_parse_cmd_args_keeps_equals_signs_in_values():
    assert parse_cmd_args(["--a=1", "--b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError, match="given twice"):
        parse_cmd_args(["--a=1", "--a=2"])


def test_every_rsir_key_is_documented_in_overall_yaml():
    assert {"rsir_rounds", "rsir_m", "rsir_tau", "rsir_p", "rsir_min_len", "rsir_fidelity", "rsir_mode",
            "rsir_output_dir", "rsir_prefix_len", "rsir_topk", "rsir_seed_synthetic"} <= set(RSIR_KEYS)


def test_models_without_per_position_outputs_need_the_recbole_path(tiny_data_path):
    with pytest.raises(ConfigError, match="BERT4Rec cannot give per-position outputs; pass --train_path=recbole"):
        Config("BERT4Rec", "tiny", config_dict=tiny_config_dict(tiny_data_path, train_path="all_positions"))
    config = Config("BERT4Rec", "tiny", config_dict=tiny_config_dict(tiny_data_path, train_path="recbole"))
    assert config["train_path"] == "recbole"


@pytest.mark.parametrize("model, path", [("BERT4Rec", "recbole"), ("Caser", "recbole"), ("SASRec", "all_positions"),
                                         ("GRU4Rec", "all_positions"), ("CL4SRec", "all_positions"),
                                         ("HSTU", "all_positions")])
def test_train_path_is_chosen_by_the_model_unless_given(tiny_data_path, model, path):
    assert Config(model, "tiny", config_dict=tiny_config_dict(tiny_data_path))["train_path"] == path


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_torch_threads_is_applied_and_recorded(tiny_data_path, restore_threads):
    config = Config("SASRec", "tiny", config_dict=tiny_config_dict(tiny_data_path))
    assert config["torch_threads"] == restore_threads      # 0: torch's own choice, recorded as a number
    wanted = 1 if restore_threads != 1 else 2
    config = Config("SASRec", "tiny", config_dict=tiny_config_dict(tiny_data_path), cmd_args=[f"--torch_threads={wanted}"])
    assert torch.get_num_threads() == wanted and config["torch_threads"] == wanted
