"""The key schema and what is rendered or derived from it."""
import os

import pytest
from conftest import tiny_config_dict

from recbole_rsir.config import PROPERTIES_DIR, Config
from recbole_rsir.errors import ConfigError
from recbole_rsir.schema import IGNORED_KEYS, KEYS, RECBOLE, render_markdown, render_yaml
from recbole_rsir.schema.__main__ import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_overall_yaml_is_rendered_from_the_schema():
    with open(os.path.join(PROPERTIES_DIR, "overall.yaml"), encoding="utf-8") as f:
        assert f.read() == render_yaml(), "run: python -m recbole_rsir.schema --yaml > properties/overall.yaml"


def test_the_command_prints_what_the_tests_compare(capsys):
    for flag, render in (("--yaml", render_yaml), ("--markdown", render_markdown)):
        main([flag])
        assert capsys.readouterr().out == render()


def test_every_default_is_accepted_and_wins_over_recbole_s(tiny_data_path):
    config = Config("SASRec", "tiny", config_dict=tiny_config_dict(tiny_data_path))
    for key in KEYS.values():
        if key.default is not RECBOLE:
            key.check(key.default)
            assert config.internal_config_dict[key.name] == key.default, key.name


def test_ignored_keys_are_the_ones_that_do_not_change_results():
    assert IGNORED_KEYS == {
        "rsir_rounds", "rsir_output_dir", "rsir_overwrite", "rsir_gen_batch_size", "rsir_score_chunk",
        "show_progress", "state", "checkpoint_dir", "data_path", "device", "gpu_id", "use_gpu",
        "worker", "local_rank", "log_wandb", "wandb_project", "eval_batch_size", "config_files",
        "torch_threads"}


@pytest.mark.parametrize("name, value, message", [
    ("rsir_p", True, "rsir_p must be a probability in [0, 1], got True"),
    ("rsir_prefix_len", "all", "rsir_prefix_len must be an integer >= 1 or 'random', got 'all'"),
    ("train_path", "fast", "train_path must be 'all_positions', 'recbole' or 'auto', got 'fast'"),
    ("learning_rate", 0, "learning_rate must be a number > 0, got 0"),
    ("weight_decay", -0.1, "weight_decay must be a number >= 0, got -0.1"),
    ("topk", [10, 0], "topk must be a list of integers >= 1, got [10, 0]"),
    ("topk", [], "topk must be a list of integers >= 1, got []"),
    ("metrics", ["Recall", "AUC"], "metrics must be a list of RecBole ranking metrics (averagepopularity, "),
    ("state", 3, "state must be 'INFO', 'DEBUG', 'WARNING', 'ERROR' or 'CRITICAL', got 3"),
    ("seed", 1.5, "seed must be an integer, got 1.5"),
])
def test_a_key_refuses_what_it_does_not_accept(name, value, message):
    with pytest.raises(ConfigError) as err:
        KEYS[name].check(value)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("name, value", [
    ("topk", 5), ("metrics", "ndcg"), ("state", "warning"), ("learner", "AdamW"), ("rsir_prefix_len", "random"),
    ("rsir_p", 1), ("seed", -3),
])
def test_a_key_accepts_the_forms_recbole_accepts(name, value):
    KEYS[name].check(value)


@pytest.mark.parametrize("marker, recbole, flag", [("keys", False, "--markdown"),
                                                   ("recbole-keys", True, "--markdown-recbole")])
def test_properties_readme_holds_the_key_tables_rendered_from_the_schema(marker, recbole, flag):
    with open(os.path.join(ROOT, "properties", "README.md"), encoding="utf-8") as f:
        doc = f.read()
    begin, end = f"<!-- {marker}:begin -->\n", f"<!-- {marker}:end -->"
    assert doc.count(begin) == doc.count(end) == 1
    table = doc[doc.index(begin) + len(begin):doc.index(end)]
    assert table == render_markdown(recbole), f"paste the output of: python -m recbole_rsir.schema {flag}"
    assert doc.count("| key |") == 2                      # the two tables and no third beside them


def test_readme_links_to_the_key_tables_instead_of_copying_them():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert "| key |" not in readme and "properties/README.md#" in readme
