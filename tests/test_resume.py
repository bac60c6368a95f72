"""Interrupted runs resume where they stopped; bad state and bad outputs give clear errors."""
import json
import os
import shutil
import signal

import numpy as np
import pytest
import torch
from conftest import build_tiny, make_rows
from test_rounds import SMALL, run_cli

from recbole_rsir import cli
from recbole_rsir.data.convert import write_atomic
from recbole_rsir.data.merge import training_loader
from recbole_rsir.data.sequences import SequenceSet, training_sequences
from recbole_rsir.errors import ConfigError, NonFiniteLossError, OutputError
from recbole_rsir.rounds.loop import FAULT_ENV, RSIRRounds
from recbole_rsir.rounds.store import RoundStore, load_sequences, publish_state, restore_state
from recbole_rsir.trainer.trainer import RSIRTrainer
from recbole_rsir.utils import get_model


def _args(data_path, out, *extra):
    return ["--model=SASRec", "--dataset=tiny", f"--data_path={data_path}", f"--rsir_output_dir={out}",
            *SMALL, *extra]


def _outcome(out):
    """Everything a run decides, without wall-clock times."""
    rounds = json.load(open(os.path.join(out, "rsir_results.json")))["rounds"]
    keep = [{k: v for k, v in r.items() if k not in ("generate_seconds", "train_seconds")} for r in rounds]
    for r in keep:
        r["generation"].pop("atomic_file", None)
    synthetic = []
    for k in range(len(rounds)):
        with np.load(os.path.join(out, "rounds", f"round{k}", "synthetic.npz")) as data:
            synthetic.append({name: data[name].tolist() for name in data.files})
    return keep, synthetic


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    """An uninterrupted two-round run: what every killed and resumed run must end as."""
    data_path = str(tmp_path_factory.mktemp("whole"))
    write_atomic(make_rows(), os.path.join(data_path, "tiny", "tiny.inter"))
    whole = os.path.join(data_path, "whole")
    assert run_cli(_args(data_path, whole, "--rsir_rounds=2"), data_path).returncode == 0
    return _outcome(whole)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["generate:2", "train:2:0", "train:2:1"])
def test_killed_run_resumes_to_the_same_results(tiny_data_path, fault, monkeypatch, whole_run):

    cut = os.path.join(tiny_data_path, "cut")
    monkeypatch.setenv(FAULT_ENV, fault)
    killed = run_cli(_args(tiny_data_path, cut, "--rsir_rounds=2"), tiny_data_path)
    assert killed.returncode == -signal.SIGKILL
    assert RoundStore(cut).finished() == [0, 1]
    round1 = os.path.join(cut, "rounds", "round1", "result.json")
    stamp = os.stat(round1).st_mtime_ns
    monkeypatch.delenv(FAULT_ENV)
    if fault.startswith("train"):                         # round 2 resumes from its checkpoint
        assert RoundStore(cut).interrupted(2)
    resumed = run_cli(_args(tiny_data_path, cut, "--rsir_rounds=2"), tiny_data_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert os.stat(round1).st_mtime_ns == stamp          # round 1 was reused, not redone
    assert _outcome(cut) == whole_run


@pytest.mark.slow
def test_a_judge_killed_in_training_resumes_from_its_checkpoint_to_the_same_results(tiny_data_path):
    """rsir_judge_model: a judge stopped after its first epoch goes on from judge.pth (training it
    again from the start would end alike, seeded as it is, so the log must say it resumed)."""
    def args(out):
        given = _args(tiny_data_path, out, "--rsir_rounds=1", "--rsir_judge_model=GRU4Rec")
        return [a if a != "--state=WARNING" else "--state=INFO" for a in given]

    whole = os.path.join(tiny_data_path, "whole")
    assert run_cli(args(whole), tiny_data_path).returncode == 0
    cut = os.path.join(tiny_data_path, "cut")
    killed = run_cli(args(cut), tiny_data_path, env={FAULT_ENV: "judge:1:0"})
    assert killed.returncode == -signal.SIGKILL
    store = RoundStore(cut)
    assert store.finished() == [0] and store.generated(1) is None
    assert torch.load(store.judge_checkpoint(1), weights_only=True)["epoch"] == 0
    resumed = run_cli(args(cut), tiny_data_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "round 1 judge GRU4Rec resumes after epoch 0" in resumed.stdout + resumed.stderr
    assert _outcome(cut) == _outcome(whole)
    assert os.path.isfile(os.path.join(cut, "rounds", "round1", "judge.pth"))


@pytest.fixture(scope="module")
def killed_in_round2(tmp_path_factory):
    """``(data path, run folder)`` of the run SIGKILLed in round 2's first epoch: rounds 0-1 finished,
    round 2's generation saved. Tests copy the folder."""
    data_path = str(tmp_path_factory.mktemp("killed"))
    write_atomic(make_rows(), os.path.join(data_path, "tiny", "tiny.inter"))
    out = os.path.join(data_path, "run")
    killed = run_cli(_args(data_path, out, "--rsir_rounds=2"), data_path, env={FAULT_ENV: "train:2:0"})
    assert killed.returncode == -signal.SIGKILL
    assert RoundStore(out).finished() == [0, 1] and RoundStore(out).generated(2) is not None
    return data_path, out


def _copy_of(killed_in_round2, name):
    data_path, out = killed_in_round2
    target = os.path.join(data_path, name)
    shutil.copytree(out, target)
    return data_path, target


def _resume(data_path, out, monkeypatch, rounds=2):
    """The command's own main in this process, as the resumed command would run."""
    monkeypatch.chdir(data_path)
    return cli.main(_args(data_path, out, f"--rsir_rounds={rounds}"))


def _weights(out):
    return [os.path.join(d, f) for d, _, files in os.walk(out) for f in files if f.endswith(".pth")]


@pytest.mark.slow
def test_a_run_without_its_weights_goes_on_from_its_saved_generation(killed_in_round2, monkeypatch, capsys,
                                                                     whole_run):
    """Weights are needed only to generate: with round 2's sequences saved, a run whose weights
    are all gone (moved to another machine) trains round 2 to the uninterrupted run's results;
    round 3, which must generate from round 2's weights, stops naming them when they are gone."""
    data_path, cut = _copy_of(killed_in_round2, "no-weights")
    weights = _weights(cut)
    assert len(weights) == 3                            # rounds 0 and 1, round 2's checkpoint
    for path in weights:
        os.remove(path)
    assert _resume(data_path, cut, monkeypatch) == 0
    assert _outcome(cut) == whole_run and not os.path.exists(os.path.join(cut, "rounds", "round1", "model.pth"))
    round2 = os.path.join(cut, "rounds", "round2")
    os.remove(os.path.join(round2, "model.pth"))
    capsys.readouterr()
    assert _resume(data_path, cut, monkeypatch, rounds=3) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0
    assert f"{round2} has no model.pth, which is needed to generate round 3; delete {round2}" in err
    assert RoundStore(cut).finished() == [0, 1, 2]


def test_a_run_not_started_yet_publishes_no_state(tmp_path):
    """A study copies shared rounds into a run's folder before the run starts (and writes its config):
    there is nothing to publish yet."""
    round0 = tmp_path / "run" / "rounds" / "round0"
    round0.mkdir(parents=True)
    (round0 / "result.json").write_text("{}")
    (round0 / "synthetic.npz").write_bytes(b"")
    assert not publish_state(str(tmp_path / "run"), str(tmp_path / "state"))
    assert not (tmp_path / "state").exists()


@pytest.mark.slow
@pytest.mark.parametrize("pending", [True, False])
def test_a_published_state_restores_on_another_machine_to_the_same_results(killed_in_round2, monkeypatch,
                                                                           whole_run, pending):
    """The study publishes a run's rounds without weights (store.publish_state); a machine with
    none of the run's files restores them and ends where the uninterrupted run ends. Without the
    round in progress's generation, round 1 is trained again from its own sequences."""
    data_path, cut = _copy_of(killed_in_round2, f"cut-{pending}")
    state, moved = os.path.join(data_path, f"published-{pending}"), os.path.join(data_path, f"moved-{pending}")
    assert publish_state(cut, state) and not publish_state(cut, state)     # published once
    assert sorted(os.listdir(state)) == ["config.yaml", "round0", "round1", "round2.tmp"]
    assert not _weights(state)
    if not pending:
        shutil.rmtree(os.path.join(state, "round2.tmp"))
    os.makedirs(moved)
    assert restore_state(state, moved) == ([0, 1, 2] if pending else [0, 1])
    assert restore_state(state, moved) == []                  # the folder now holds as much
    assert RoundStore(moved).finished() == ([0, 1] if pending else [0]) and not _weights(moved)
    assert _resume(data_path, moved, monkeypatch) == 0
    assert _outcome(moved) == whole_run
    assert publish_state(moved, state) and sorted(os.listdir(state)) == ["config.yaml", "round0", "round1",
                                                                          "round2"]
    for k in (0, 1, 2):                          # round 2's generation became its sequences
        published, here = (load_sequences(os.path.join(d, f"round{k}", "synthetic.npz"))
                           for d in (state, os.path.join(moved, "rounds")))
        assert all(np.array_equal(getattr(published, f), getattr(here, f))
                   for f in ("items", "offsets", "timestamps", "users"))


@pytest.mark.slow
def test_other_settings_are_refused_unless_overwritten_and_more_rounds_extend(tiny_data_path):
    out = os.path.join(tiny_data_path, "out")
    assert run_cli(_args(tiny_data_path, out, "--rsir_rounds=0"), tiny_data_path).returncode == 0
    refused = run_cli(_args(tiny_data_path, out, "--rsir_rounds=0", "--rsir_m=3", "--learning_rate=0.002"),
                      tiny_data_path)
    assert refused.returncode == 2
    assert "other settings (learning_rate, rsir_m)" in refused.stderr and "--rsir_overwrite=True" in refused.stderr
    stamp = os.stat(os.path.join(out, "rounds", "round0", "result.json")).st_mtime_ns
    more = run_cli(_args(tiny_data_path, out, "--rsir_rounds=1"), tiny_data_path)
    assert more.returncode == 0
    assert os.stat(os.path.join(out, "rounds", "round0", "result.json")).st_mtime_ns == stamp
    assert RoundStore(out).finished() == [0, 1]
    forced = run_cli(_args(tiny_data_path, out, "--rsir_rounds=0", "--rsir_m=3", "--rsir_overwrite=True"),
                     tiny_data_path)
    assert forced.returncode == 0 and RoundStore(out).finished() == [0]


def _fit(tiny_data_path, train_path, epochs, checkpoint, resume_from=None):
    """Train SASRec on the tiny data, a checkpoint after every epoch; optionally resume first."""
    config, _, train_data, _, _ = build_tiny(tiny_data_path, epochs=epochs, train_path=train_path, eval_step=0,
                                             train_neg_samples=5)
    trainer = RSIRTrainer(config, get_model("SASRec")(config, train_data.dataset))
    trainer.saved_model_file = checkpoint
    if resume_from:
        torch.manual_seed(12345)            # whatever the process did before, the checkpoint sets the streams
        trainer.resume_checkpoint(resume_from)
    loader = training_loader(config, train_data, training_sequences(train_data.dataset), SequenceSet.empty())
    trainer.fit(loader, None, saved=True, verbose=False)
    return trainer


@pytest.mark.parametrize("train_path", ["all_positions", "recbole"])
def test_training_resumed_from_a_checkpoint_repeats_the_uninterrupted_run(tiny_data_path, train_path):
    folder = lambda name: os.path.join(tiny_data_path, name)  # noqa: E731
    whole = _fit(tiny_data_path, train_path, 3, folder("whole.pth"))
    cut = _fit(tiny_data_path, train_path, 2, folder("cut.pth"))          # stopped after epoch 1
    stripped = torch.load(folder("cut.pth"), weights_only=True)
    del stripped["rng"]                                                   # as an older checkpoint
    torch.save(stripped, folder("old.pth"))

    resumed = _fit(tiny_data_path, train_path, 3, folder("cut.pth"), resume_from=folder("cut.pth"))
    without_streams = _fit(tiny_data_path, train_path, 3, folder("old.pth"), resume_from=folder("old.pth"))

    assert resumed.best_epoch == whole.best_epoch == 2
    weights = lambda t: list(t.model.state_dict().values())  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(weights(resumed), weights(whole)))
    assert not all(torch.equal(a, b) for a, b in zip(weights(cut), weights(whole)))       # epoch 2 did train
    assert not all(torch.equal(a, b) for a, b in zip(weights(without_streams), weights(whole)))


class _ScriptedValidation(RSIRTrainer):
    """Validation scores fixed by the test, so which epochs improve is known: epoch 1 is the best."""
    scores = (0.5, 0.6, 0.4, 0.3, 0.2)

    def _valid_epoch(self, valid_data, show_progress=False):
        score = self.scores[max(self.train_loss_dict)]
        return score, {"recall@10": score}


class _Stop(Exception):
    pass


def _fit_validated(tiny_data_path, checkpoint, stop_after=None, resume=False):
    config, _, train_data, valid_data, _ = build_tiny(tiny_data_path, epochs=5, stopping_step=10)
    trainer = _ScriptedValidation(config, get_model("SASRec")(config, train_data.dataset))
    trainer.saved_model_file = checkpoint
    if resume:
        torch.manual_seed(12345)            # whatever the process did before, the checkpoint sets the streams
        trainer.resume_checkpoint(checkpoint)

    def stop(epoch, score):
        if epoch == stop_after:
            raise _Stop

    loader = training_loader(config, train_data, training_sequences(train_data.dataset), SequenceSet.empty())
    try:
        trainer.fit(loader, valid_data, saved=True, verbose=False, callback_fn=stop)
    except _Stop:
        pass
    return trainer


def test_a_fit_stopped_after_an_epoch_that_did_not_improve_resumes_after_that_epoch(tiny_data_path):
    folder = lambda name: os.path.join(tiny_data_path, name)  # noqa: E731
    whole = _fit_validated(tiny_data_path, folder("whole.pth"))
    _fit_validated(tiny_data_path, folder("cut.pth"), stop_after=3)
    saved = torch.load(folder("cut.pth"), weights_only=True)
    assert (saved["epoch"], saved["latest"]["epoch"], saved["latest"]["cur_step"]) == (1, 3, 2)

    resumed = _fit_validated(tiny_data_path, folder("cut.pth"), resume=True)

    assert list(resumed.train_loss_dict) == [4]                    # epochs 2-3 were not trained again
    assert resumed.best_epoch == whole.best_epoch == 1 and resumed.cur_step == whole.cur_step == 3
    weights = lambda state: list(state.values())  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(weights(resumed.model.state_dict()),
                                                 weights(whole.model.state_dict())))
    best = [torch.load(folder(name), weights_only=True)["state_dict"] for name in ("cut.pth", "whole.pth")]
    assert all(torch.equal(a, b) for a, b in zip(weights(best[0]), weights(best[1])))
    assert not all(torch.equal(a, b) for a, b in zip(weights(best[0]), weights(resumed.model.state_dict())))


def test_an_interrupted_round_counts_as_started_for_the_settings_check(tiny_data_path):
    out = os.path.join(tiny_data_path, "out")
    store = RoundStore(out)
    store.check_config({"rsir_m": 5}, overwrite=False)
    store.begin(0)
    torch.save({"epoch": 0}, store.checkpoint(0))
    open(os.path.join(out, "rounds", "round0.tmp", "stale.json"), "w").close()
    assert store.begin(0) and os.listdir(os.path.join(out, "rounds", "round0.tmp")) == ["model.pth"]
    with pytest.raises(ConfigError, match=r"other settings \(rsir_m\)"):
        store.check_config({"rsir_m": 10}, overwrite=False)
    store.check_config({"rsir_m": 10}, overwrite=True)
    assert store.interrupted(0) is None


def test_corrupt_saved_round_names_the_file(tiny_data_path):
    out = os.path.join(tiny_data_path, "out")
    config, _, train_data, valid_data, test_data = build_tiny(tiny_data_path, rsir_rounds=0, rsir_output_dir=out)
    RSIRRounds(config, train_data, valid_data, test_data).run()
    model_file = os.path.join(out, "rounds", "round0", "model.pth")
    with open(model_file, "r+b") as f:
        f.truncate(100)
    with pytest.raises(ConfigError.__mro__[1], match=f"{model_file} is unreadable .*delete .*round0"):
        RSIRRounds(config, train_data, valid_data, test_data).run()


def test_unwritable_output_dir_fails_before_training(tiny_data_path):
    blocker = os.path.join(tiny_data_path, "a-file")
    open(blocker, "w").close()
    done = run_cli(_args(tiny_data_path, os.path.join(blocker, "out")), tiny_data_path)
    assert done.returncode == 2 and "is not writable" in done.stderr
    assert done.stderr.strip().count("\n") == 0


def test_full_disk_while_saving_a_round_is_a_clear_error(tiny_data_path, monkeypatch):
    store = RoundStore(os.path.join(tiny_data_path, "out"))
    store.begin(0)

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", no_space)
    with pytest.raises(OutputError, match="cannot save round 0 in .*: No space left on device"):
        store.commit(0, {}, SequenceSet.empty(), {})


def test_nan_loss_stops_with_round_and_epoch_and_keeps_finished_rounds(tiny_data_path):
    out = os.path.join(tiny_data_path, "out")
    config, _, train_data, valid_data, test_data = build_tiny(tiny_data_path, rsir_rounds=1, rsir_output_dir=out,
                                                              rsir_tau=10)

    class BreaksInRound1(RSIRTrainer):
        def position_loss(self, *batch):
            loss = super().position_loss(*batch)
            return loss * torch.tensor(float("nan")) if self.round_index == 1 else loss

    with pytest.raises(NonFiniteLossError, match="round 1, epoch 0: training loss is nan"):
        RSIRRounds(config, train_data, valid_data, test_data, trainer_class=BreaksInRound1).run()
    assert RoundStore(out).finished() == [0]
