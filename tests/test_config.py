"""Configuration layering and validation of RSIR keys."""
import os

import pytest
import torch
import yaml
from conftest import tiny_config_dict
from recbole.model.sequential_recommender import SASRec as RecBoleSASRec

from recbole_rsir.config import PROPERTIES_DIR, Config, parse_cmd_args
from recbole_rsir.errors import ConfigError
from recbole_rsir.schema import RSIR_KEYS


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
    ("--rsir_tua=5", "unknown key rsir_tua; did you mean rsir_tau?"),
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
    with open(os.path.join(PROPERTIES_DIR, "overall.yaml"), encoding="utf-8") as f:
        documented = {key for key in yaml.safe_load(f) if key.startswith("rsir_")}
    assert documented == set(RSIR_KEYS)
    assert {"rsir_rounds", "rsir_m", "rsir_tau", "rsir_p", "rsir_min_len", "rsir_fidelity", "rsir_mode",
            "rsir_refine", "rsir_judge_model", "rsir_tau_schedule"} <= documented      # the paper's and the variants'


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


def _refusal(tiny_data_path, cmd_args=(), config_file_list=None, **config_dict):
    with pytest.raises(ConfigError) as err:
        Config("SASRec", "tiny", config_file_list=config_file_list,
               config_dict=tiny_config_dict(tiny_data_path, **config_dict), cmd_args=cmd_args)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_unknown_keys_are_refused_from_every_source(tiny_data_path, tmp_path):
    expected = "unknown key train_los; did you mean train_loss?"
    assert _refusal(tiny_data_path, cmd_args=["--train_los=full_ce"]) == expected
    assert _refusal(tiny_data_path, train_los="full_ce") == expected
    (tmp_path / "mine.yaml").write_text("train_los: full_ce\n")
    assert _refusal(tiny_data_path, config_file_list=[str(tmp_path / "mine.yaml")]) == expected
    assert (_refusal(tiny_data_path, cmd_args=["--epoch=3", "--rsir_tua=5"])
            == "unknown keys epoch, rsir_tua; did you mean epochs, rsir_tau?")
    # RecBole's dataset download table names datasets, not keys
    assert _refusal(tiny_data_path, cmd_args=["--amazon-books=1"]).startswith("unknown key amazon-books;")


def test_keys_of_recbole_models_datasets_and_this_package_are_known(tiny_data_path):
    config = Config("SASRec", "tiny", config_dict=tiny_config_dict(tiny_data_path),
                    cmd_args=["--mask_ratio=0.3",           # BERT4Rec's yaml
                              "--lmd=0.2",                  # this package's CL4SRec yaml
                              "--field_separator=\t",       # RecBole's dataset keys
                              "--weight_decay=0.0", "--rsir_m=2"])
    assert (config["mask_ratio"], config["lmd"], config["rsir_m"]) == (0.3, 0.2, 2)


@pytest.mark.parametrize("arg, message", [
    ("--epochs=-1", "epochs must be an integer >= 1, got -1"),
    ("--seed=abc", "seed must be an integer, got 'abc'"),
    ("--train_batch_size=0", "train_batch_size must be an integer >= 1, got 0"),
    ("--eval_batch_size=0", "eval_batch_size must be an integer >= 1, got 0"),
    ("--learning_rate=0", "learning_rate must be a number > 0, got 0"),
    ("--learning_rate=fast", "learning_rate must be a number > 0, got 'fast'"),
    ("--stopping_step=0", "stopping_step must be an integer >= 1, got 0"),
    ("--metrics=['Recall','Foo']", "metrics must be a list of RecBole ranking metrics"),
    ("--metrics=AUC", "metrics must be a list of RecBole ranking metrics"),
    ("--topk=0", "topk must be a list of integers >= 1, got 0"),
    ("--topk=[10,-5]", "topk must be a list of integers >= 1, got [10, -5]"),
    ("--valid_metric=NDCG@5", "valid_metric must be one of metrics@topk (recall@10, recall@20, ndcg@10, "
                              "ndcg@20, mrr@10, mrr@20), got 'NDCG@5'"),
    ("--valid_metric=Hit@10", "valid_metric must be one of metrics@topk"),
    ("--MAX_ITEM_LIST_LENGTH=1", "MAX_ITEM_LIST_LENGTH must be an integer >= 2, got 1"),
    ("--reproducibility=maybe", "reproducibility must be true or false, got 'maybe'"),
    ("--learner=adamm", "learner must be 'adam', 'adamw', 'sgd', 'adagrad', 'rmsprop' or 'sparse_adam'"),
    ("--state=LOUD", "state must be 'INFO', 'DEBUG', 'WARNING', 'ERROR' or 'CRITICAL', got 'LOUD'"),
    ("--train_path=fast", "train_path must be 'all_positions', 'recbole' or 'auto', got 'fast'"),
    ("--train_neg_sample_args={'distribution':'uniform','sample_num':1}",
     "RecBole refuses the config: train_neg_sample_args [{'distribution': 'uniform', 'sample_num': 1}] should "
     "be None when the loss_type is CE."),
])
def test_recbole_keys_the_run_depends_on_are_checked(tiny_data_path, arg, message):
    assert message in _refusal(tiny_data_path, cmd_args=[arg])


def test_recbole_forms_of_metrics_and_topk_are_accepted(tiny_data_path):
    config = Config("SASRec", "tiny", config_dict=tiny_config_dict(tiny_data_path),
                    cmd_args=["--metrics=Recall", "--topk=5", "--valid_metric=recall@5", "--state=warning"])
    assert (config["metrics"], config["topk"], config["valid_metric"]) == (["Recall"], [5], "recall@5")


def test_train_path_auto_picks_all_positions_where_the_model_can(tiny_data_path):
    for model, path in (("SASRec", "all_positions"), ("BERT4Rec", "recbole")):
        config = Config(model, "tiny", config_dict=tiny_config_dict(tiny_data_path, train_path="auto"))
        assert config["train_path"] == path


@pytest.mark.parametrize("content, message", [
    (None, "config file {path}: No such file or directory"),
    ("", "config file {path}: Is a directory"),
    ("epochs: [1, 2\n",
     "config file {path} is not valid yaml at line 2: expected ',' or ']', but got '<stream end>'"),
    ("- epochs\n- 3\n", "config file {path} holds a list, not a mapping of key: value"),
    ("just words\n", "config file {path} holds a str, not a mapping of key: value"),
    (b"epochs: \xff\n", "config file {path} is not utf-8 text"),
])
def test_bad_config_files_are_refused_with_one_line(tiny_data_path, tmp_path, content, message):
    path = tmp_path / "given.yaml"
    if content == "":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    assert _refusal(tiny_data_path, config_file_list=[str(path)]) == message.format(path=path)


def test_config_files_apply_and_an_empty_one_is_no_error(tiny_data_path, tmp_path):
    (tmp_path / "a.yaml").write_text("rsir_m: 2\nlearning_rate: 1e-3\n")
    (tmp_path / "b.yaml").write_text("# nothing yet\n")
    config = Config("SASRec", "tiny", config_file_list=[str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")],
                    config_dict=tiny_config_dict(tiny_data_path))
    assert (config["rsir_m"], config["learning_rate"]) == (2, 0.001)


class OwnSASRec(RecBoleSASRec):
    """A model of a user's own, outside RecBole and this package."""


def test_a_model_class_of_your_own_may_carry_keys_no_yaml_declares(tiny_data_path, tmp_path):
    own = tmp_path / "own.yaml"
    own.write_text("own_alpha: 0.3\n")
    keys = tiny_config_dict(tiny_data_path)
    config = Config(OwnSASRec, "tiny", config_file_list=[str(own)], config_dict={**keys, "own_beta": 2})
    assert (config["model"], config["own_alpha"], config["own_beta"]) == ("OwnSASRec", 0.3, 2)
    with pytest.raises(ConfigError, match="unknown key rsir_tua; did you mean rsir_tau"):
        Config(OwnSASRec, "tiny", config_dict={**keys, "rsir_tua": 5})
    with pytest.raises(ConfigError, match="unknown key own_alpha"):
        Config("SASRec", "tiny", config_file_list=[str(own)], config_dict=keys)
    with pytest.raises(ConfigError, match="unknown key own_beta"):
        Config(RecBoleSASRec, "tiny", config_dict={**keys, "own_beta": 2})    # RecBole's own class: checked
