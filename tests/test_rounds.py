"""RSIR rounds through the Python API and through run_rsir.py, and what must never leak."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import build_tiny, make_rows
from recbole.data import create_dataset
from recbole.trainer import Trainer

from recbole_rsir import cli
from recbole_rsir.config import Config, plain_config
from recbole_rsir.data.convert import write_atomic
from recbole_rsir.data.sequences import eval_targets, training_sequences
from recbole_rsir.errors import ConfigError
from recbole_rsir.generation.generator import generate
from recbole_rsir.generation.reference import generate_reference
from recbole_rsir.generation.rules import GenerationSettings
from recbole_rsir.generation.tau import generation_taus
from recbole_rsir.rounds.loop import RSIRRounds
from recbole_rsir.trainer.trainer import RSIRTrainer
from recbole_rsir.utils import get_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--epochs=2", "--hidden_size=16", "--inner_size=32", "--n_layers=1", "--n_heads=1",
         "--MAX_ITEM_LIST_LENGTH=20", "--state=WARNING", "--show_progress=False", "--rsir_tau=10"]


def run_cli(args, cwd, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "run_rsir.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


def test_python_api_runs_rounds_on_recbole_loaders(tiny_data_path):
    config, dataset, train_data, valid_data, test_data = build_tiny(tiny_data_path, rsir_rounds=2, rsir_tau=10)
    valid_before = eval_targets(valid_data.dataset)
    test_before = eval_targets(test_data.dataset)
    rounds = RSIRRounds(config, train_data, valid_data, test_data)
    results = rounds.run()
    assert [r.round for r in results] == [0, 1, 2]
    assert results[0].n_synthetic_sequences == 0
    assert 0 < results[1].n_synthetic_sequences <= results[2].n_synthetic_sequences
    assert results[2].n_synthetic_sequences == len(rounds.synthetic)
    for r in results:
        assert all(math.isfinite(v) for v in {**r.valid, **r.test}.values())
    # evaluation users and targets are the same with and without RSIR
    assert eval_targets(valid_data.dataset) == valid_before and eval_targets(test_data.dataset) == test_before
    # every synthetic sequence was seeded by a real training user and starts with their first item
    real = {int(u): rounds.real[i] for i, u in enumerate(rounds.real.users)}
    for i in range(len(rounds.synthetic)):
        assert rounds.synthetic[i][0] == real[int(rounds.synthetic.users[i])][0]


def _replace_held_out(rows, n_items):
    """The same users and training items, with validation and test items replaced."""
    out = []
    for user, items, ts in rows:
        items = list(items)
        items[-2] = (items[-2] + 7) % n_items + 1
        items[-1] = (items[-1] + 11) % n_items + 1
        out.append((user, items, ts))
    return out


def test_generation_never_sees_validation_or_test_items(tmp_path):
    # user 0 lists the whole catalogue first, so RecBole's token -> id mapping is the same
    # in both files and the same weights mean the same model
    anchor = (0, list(range(1, 31)) + [1, 2], list(range(32)))
    rows = [anchor] + make_rows()
    paths = {}
    for name, data in (("tiny", rows), ("tiny", _replace_held_out(rows, 30))):
        path = tmp_path / str(len(paths))
        write_atomic(data, str(path / name / f"{name}.inter"))
        paths[len(paths)] = str(path)
    outputs = []
    state = None
    for path in paths.values():
        config, dataset, train_data, _, _ = build_tiny(path, rsir_tau=5)
        model = get_model("SASRec")(config, train_data.dataset)
        if state is None:
            state = model.state_dict()
        model.load_state_dict(state)
        seeds = training_sequences(train_data.dataset)
        result = generate_reference(model, seeds, GenerationSettings.from_config(config), seed=3)
        outputs.append([dataset.id2token("item_id", s).tolist() for s in result.sequences.to_lists()])
    assert len(outputs[0]) > 0 and outputs[0] == outputs[1]


def test_cli_end_to_end_writes_results_and_synthetic_data(tiny_data_path):
    out = os.path.join(tiny_data_path, "OUT")
    done = run_cli(["--model=SASRec", "--dataset=tiny", f"--data_path={tiny_data_path}", "--rsir_rounds=1",
                    f"--rsir_output_dir={out}", *SMALL], cwd=tiny_data_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Δrecall@10" in done.stdout
    results = json.load(open(os.path.join(out, "rsir_results.json")))
    assert results["model"] == "SASRec" and results["dataset"] == "tiny"
    assert results["config"]["rsir_tau"] == 10 and results["config"]["hidden_size"] == 16
    assert [r["round"] for r in results["rounds"]] == [0, 1]
    for r in results["rounds"]:
        assert r["n_real_sequences"] == 40
        for split in ("valid", "test"):
            assert set(r[split]) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr@10", "mrr@20"}
            assert all(math.isfinite(v) for v in r[split].values())
    assert results["rounds"][1]["n_synthetic_sequences"] > 0
    syn_dir = os.path.join(out, "tiny-rsir-round1")
    loaded = create_dataset(Config("SASRec", "tiny-rsir-round1", config_dict={"data_path": out, "state": "WARNING"}))
    assert loaded.user_num - 1 == results["rounds"][1]["n_synthetic_sequences"]
    assert os.path.isfile(os.path.join(syn_dir, "tiny-rsir-round1.inter"))
    with open(os.path.join(out, "config.yaml"), encoding="utf-8") as f:
        assert yaml.safe_load(f) == results["config"]              # saved config = the one the run used
    assert not os.path.exists(os.path.join(tiny_data_path, "saved"))   # nothing left in the cwd


@pytest.mark.parametrize("args, message", [
    (["--model=NoSuchRec"], "unknown model 'NoSuchRec'; sequential models:"),
    (["--dataset=no-such-data"], "unknown dataset 'no-such-data'"),
    (["--rsir_p=1.5"], "rsir_p must be a probability in [0, 1], got 1.5"),
    (["--rsir_tau=0"], "rsir_tau must be an integer >= 1, got 0"),
    (["--rsir_m=0"], "rsir_m must be an integer >= 1, got 0"),
    (["--rsir_rounds=-1"], "rsir_rounds must be an integer >= 0, got -1"),
    (["--rsir_min_len=1"], "rsir_min_len must be an integer >= 2, got 1"),
    (["--rsir_refine=-1"], "rsir_refine must be an integer >= 0, got -1"),
    (["--rsir_judge_model=NoSuchRec"], "rsir_judge_model must be 'none', 'previous' or a sequential model's name"),
    (["--rsir_tau_schedule=loosen"], "rsir_tau_schedule must be 'constant', 'tighten' or 'per_user', got 'loosen'"),
    (["--rsir_tau_quantile=0"], "rsir_tau_quantile must be a number in (0, 1], got 0"),
    (["--rsir_tau_quantile=1.5"], "rsir_tau_quantile must be a number in (0, 1], got 1.5"),
    (["--rsir_tau_max=0"], "rsir_tau_max must be an integer >= 1, got 0"),
    (["--train_los=full_ce"], "unknown key train_los; did you mean train_loss?"),
    (["--epochs=-1"], "epochs must be an integer >= 1, got -1"),
    (["--seed=abc"], "seed must be an integer, got 'abc'"),
    (["--train_batch_size=0"], "train_batch_size must be an integer >= 1, got 0"),
    (["--eval_batch_size=0"], "eval_batch_size must be an integer >= 1, got 0"),
    (["--valid_metric=NDCG@5"], "valid_metric must be one of metrics@topk"),
])
def test_cli_bad_input_stops_at_once_and_writes_nothing(tmp_path, monkeypatch, capsys, args, message):
    """The command's own main in this process (the real command's exit code: the test below)."""
    monkeypatch.chdir(tmp_path)
    code = cli.main(["--dataset=amazon-beauty", *args, f"--rsir_output_dir={tmp_path / 'OUT'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and err.startswith("error: ") and message in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, message", [
    (None, "No such file or directory"),
    ("epochs: [1, 2\n", "is not valid yaml at line 2"),
    ("- epochs\n", "holds a list, not a mapping of key: value"),
])
def test_cli_bad_config_file_stops_at_once_and_writes_nothing(tmp_path_factory, monkeypatch, capsys, content,
                                                             message):
    given = tmp_path_factory.mktemp("given") / "my.yaml"
    if content is not None:
        given.write_text(content)
    cwd = tmp_path_factory.mktemp("run")
    monkeypatch.chdir(cwd)
    code = cli.main(["--dataset=amazon-beauty", f"--config_files={given}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and err.startswith(f"error: config file {given}") and message in err
    assert list(cwd.iterdir()) == []


def test_the_real_command_exits_2_with_one_line_and_writes_nothing(tmp_path):
    done = run_cli(["--dataset=amazon-beauty", "--rsir_tua=5", f"--rsir_output_dir={tmp_path / 'OUT'}"], cwd=tmp_path)
    assert (done.returncode, done.stderr) == (2, "error: unknown key rsir_tua; did you mean rsir_tau?\n")
    assert list(tmp_path.iterdir()) == []


def test_cli_malformed_or_too_small_dataset_exits_2_naming_file_and_line(tmp_path):
    bad = tmp_path / "dataset" / "bad"
    bad.mkdir(parents=True)
    (bad / "bad.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t0\n1\tx\n")
    done = run_cli(["--dataset=bad", f"--rsir_output_dir={tmp_path / 'OUT'}"], cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == "error: dataset/bad/bad.inter:3: 2 fields, header has 3"
    write_atomic([(1, [1, 2, 3, 4], [0, 1, 2, 3]), (2, [2, 3, 4], [0, 1, 2])],
                 str(tmp_path / "dataset" / "small" / "small.inter"))
    done = run_cli(["--dataset=small", "--state=WARNING", f"--rsir_output_dir={tmp_path / 'OUT'}"], cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: dataset small is too small to split")


@pytest.mark.slow
def test_cli_recbole_train_path_and_finetune(tiny_data_path):
    out = os.path.join(tiny_data_path, "OUT2")
    done = run_cli(["--model=SASRec", "--dataset=tiny", f"--data_path={tiny_data_path}", "--rsir_rounds=2",
                    "--train_path=recbole", "--rsir_mode=finetune", f"--rsir_output_dir={out}", *SMALL],
                   cwd=tiny_data_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.load(open(os.path.join(out, "rsir_results.json")))
    assert (results["config"]["train_path"], results["config"]["rsir_mode"]) == ("recbole", "finetune")
    rounds = results["rounds"]
    assert len(rounds) == 3 and np.all(np.diff([r["n_synthetic_sequences"] for r in rounds]) >= 0)


class StartRecorder(RSIRTrainer):
    """Records the weights each fit starts from."""
    starts = []

    def fit(self, *args, **kwargs):
        StartRecorder.starts.append({k: v.clone() for k, v in self.model.state_dict().items()})
        return super().fit(*args, **kwargs)


@pytest.mark.parametrize("mode", ["finetune", "scratch"])
def test_finetune_starts_each_round_from_the_last_best_weights_and_scratch_from_new_ones(tiny_data_path, mode):
    config, _, train_data, valid_data, test_data = build_tiny(tiny_data_path, rsir_rounds=2, rsir_tau=10,
                                                              rsir_mode=mode, epochs=2)
    StartRecorder.starts = []
    rounds = RSIRRounds(config, train_data, valid_data, test_data, trainer_class=StartRecorder)
    rounds.run()
    assert len(StartRecorder.starts) == 3
    for k in (1, 2):
        best = rounds.store.weights(k - 1)
        same = all(torch.equal(StartRecorder.starts[k][name], best[name]) for name in best)
        assert same == (mode == "finetune")


class UsersTrainer(Trainer):
    """A user's own RecBole trainer."""


@pytest.mark.parametrize("trainer_class", [Trainer, UsersTrainer])
def test_rounds_run_with_recboles_own_trainer_on_recboles_path(tiny_data_path, trainer_class):
    config, _, train_data, valid_data, test_data = build_tiny(tiny_data_path, rsir_rounds=1, rsir_tau=10)
    assert config["train_path"] == "all_positions"            # chosen for SASRec, a backbone
    rounds = RSIRRounds(config, train_data, valid_data, test_data, trainer_class=trainer_class)
    assert config["train_path"] == "recbole"                  # the only path RecBole's Trainer has
    results = rounds.run()
    assert [r.round for r in results] == [0, 1] and results[1].n_synthetic_sequences > 0
    for r in results:
        assert set(r.protocols) == {"recbole", "exclude_history"} and r.best_epoch >= 0
        assert all(math.isfinite(v) for p in r.protocols.values() for s in p.values() for v in s.values())
    with open(os.path.join(config["rsir_output_dir"], "config.yaml"), encoding="utf-8") as f:
        assert yaml.safe_load(f) == plain_config(config)       # the saved config is the one used
    state = rounds.store.weights(1)                            # RecBole's checkpoint became weights only
    assert set(state) == set(get_model("SASRec")(config, train_data.dataset).state_dict())


def test_rounds_refuse_an_explicit_all_position_path_for_recboles_trainer(tiny_data_path):
    config, _, train_data, valid_data, test_data = build_tiny(tiny_data_path, train_path="all_positions")
    with pytest.raises(ConfigError, match="train_path all_positions needs RSIRTrainer or a subclass of it; "
                                          "Trainer trains on RecBole's path"):
        RSIRRounds(config, train_data, valid_data, test_data, trainer_class=Trainer)


def test_previous_round_judges_and_tau_tightens(tiny_data_path):
    """rsir_judge_model previous: round 1 judges itself, round 2's generator (round 1's model) is
    judged by round 0's; under tighten, round 2 generates with half of round 1's tau."""
    config, _, train_data, valid_data, test_data = build_tiny(
        tiny_data_path, rsir_rounds=2, rsir_tau=10, rsir_judge_model="previous", rsir_tau_schedule="tighten",
        epochs=1)
    rounds = RSIRRounds(config, train_data, valid_data, test_data)
    results = rounds.run()
    assert [r.generation["tau"] for r in results[1:]] == [10, 5]
    models = []
    for k in (0, 1):
        model = get_model("SASRec")(config, train_data.dataset)
        model.load_state_dict(rounds.store.weights(k))
        models.append(model)
    settings = GenerationSettings.from_config(config)
    for k, judge in ((1, None), (2, models[0])):
        again = generate(models[k - 1], rounds.real, settings.for_round(k), seed=config["seed"] + k, judge=judge)
        assert again.counts.as_dict().items() <= results[k].generation.items()
        assert len(again.sequences) == results[k].generation["n_accepted"]
    other = generate(models[1], rounds.real, settings.for_round(2), seed=config["seed"] + 2)
    assert other.counts != again.counts          # round 0's model, not round 1's, judged round 2
    # round 1 is plain RSIR's, which lets the study take it from the plain run (plan.ROUND1_AS_PLAIN)
    plain_config, _, *plain_data = build_tiny(tiny_data_path, rsir_rounds=1, rsir_tau=10, epochs=1,
                                              rsir_output_dir=os.path.join(tiny_data_path, "plain-round1"))
    plain = RSIRRounds(plain_config, *plain_data)
    plain_round1 = plain.run()[1]
    assert plain_round1.protocols == results[1].protocols and plain_round1.best_epoch == results[1].best_epoch
    assert {k: v for k, v in plain_round1.generation.items() if k != "atomic_file"} == {
        k: v for k, v in results[1].generation.items() if k != "atomic_file"}
    assert np.array_equal(plain.store.load(1)[1].items, rounds.store.load(1)[1].items)


def test_per_user_rounds_record_the_taus_summary_instead_of_one_tau(tiny_data_path):
    """rsir_tau_schedule: per_user: round 1's generation record holds the per-seed taus' summary
    (the taus of round 0's model, which generates), not one tau."""
    config, _, train_data, valid_data, test_data = build_tiny(
        tiny_data_path, rsir_rounds=1, rsir_tau_schedule="per_user", rsir_tau_quantile=0.75, rsir_tau_max=25,
        epochs=1)
    rounds = RSIRRounds(config, train_data, valid_data, test_data)
    generation = rounds.run()[1].generation
    model = get_model("SASRec")(config, train_data.dataset)
    model.load_state_dict(rounds.store.weights(0))
    taus = generation_taus(model, rounds.real, GenerationSettings.from_config(config))
    assert "tau" not in generation and taus.max() <= 25
    assert generation["tau_mean"] == pytest.approx(float(taus.mean()))
    assert (generation["tau_min"], generation["tau_q75"], generation["tau_max"]) == (
        taus.min(), np.quantile(taus, 0.75), taus.max())


def test_a_judge_model_is_trained_for_each_generation(tiny_data_path):
    config, _, train_data, valid_data, test_data = build_tiny(
        tiny_data_path, rsir_rounds=1, rsir_tau=10, rsir_judge_model="HSTU", rsir_refine=2, epochs=1)
    rounds = RSIRRounds(config, train_data, valid_data, test_data)
    results = rounds.run()
    assert os.path.isfile(os.path.join(rounds.store.round_dir(1), "judge.pth"))
    assert not os.path.exists(os.path.join(rounds.store.round_dir(0), "judge.pth"))
    generation = results[1].generation
    assert generation["fidelity_tests"] > 0 and generation["refine_attempts"] > 0
    assert results[1].n_synthetic_sequences == generation["n_accepted"]
    # round 0's model generating, judged by the saved HSTU, gives round 1's sequences and counts again
    judge_config = Config("HSTU", "tiny", config_dict={k: v for k, v in config.external_config_dict.items()
                                                       if k != "model"})
    judge = get_model("HSTU")(judge_config, train_data.dataset)
    judge.load_state_dict(torch.load(os.path.join(rounds.store.round_dir(1), "judge.pth"),
                                     weights_only=True)["state_dict"])
    generator = get_model("SASRec")(config, train_data.dataset)
    generator.load_state_dict(rounds.store.weights(0))
    settings = GenerationSettings.from_config(config)
    again = generate(generator, rounds.real, settings, seed=config["seed"] + 1, judge=judge)
    assert again.counts.as_dict().items() <= generation.items()
    assert again.sequences.to_lists() == rounds.store.load(1)[1].to_lists()
    assert generate(generator, rounds.real, settings, seed=config["seed"] + 1).counts != again.counts
