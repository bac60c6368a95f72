"""Two processes on CPU (gloo) give what one process gives: generation (exact, and through an ann
index each rank builds), a training epoch, and a whole run, started by torchrun (``--standalone``)
or by RecBole's ``--nproc``, killed and resumed."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import make_rows
from test_resume import _args, _outcome

from recbole_rsir.data.convert import write_atomic
from recbole_rsir.rounds.loop import FAULT_ENV
from recbole_rsir.rounds.store import RoundStore

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
NO_DROPOUT = ["--hidden_dropout_prob=0", "--attn_dropout_prob=0"]


def run(script, args, cwd, processes, env=None):
    """``script`` in one process, or in ``processes`` started by torchrun."""
    launcher = ([sys.executable] if processes == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": TESTS, **(env or {})}
    return subprocess.run(launcher + [script, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def worker(task, data_path, out, processes):
    done = run(os.path.join(TESTS, "distributed_worker.py"), [task, data_path, out], data_path, processes)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("task", ["generate", "generate-ann"])
def test_two_processes_generate_exactly_the_sequences_of_one(tiny_data_path, task):
    if task == "generate-ann":     # 300 items: the worker's index misses, its picks are not exact scoring's
        write_atomic(make_rows(n_users=60, n_items=300), os.path.join(tiny_data_path, "tiny", "tiny.inter"))
    one = np.load(worker(task, tiny_data_path, os.path.join(tiny_data_path, "one.npz"), 1))
    two = np.load(worker(task, tiny_data_path, os.path.join(tiny_data_path, "two.npz"), 2))
    assert len(one["offsets"]) > 10                       # some sequences were accepted
    for name in one.files:                                # sequences, users, times and step counts
        np.testing.assert_array_equal(one[name], two[name])


@pytest.mark.slow
def test_a_two_process_epoch_updates_the_weights_as_one_process_does(tiny_data_path):
    path = lambda name: os.path.join(tiny_data_path, name)
    start = torch.load(worker("init", tiny_data_path, path("start.pt"), 1), weights_only=True)
    one = torch.load(worker("epoch", tiny_data_path, path("one.pt"), 1), weights_only=True)
    two = torch.load(worker("epoch", tiny_data_path, path("two.pt"), 2), weights_only=True)
    assert one.keys() == two.keys()
    assert max(float((one[n] - start[n]).abs().max()) for n in one) > 1e-3   # the epoch moved them
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6)


def _cli(data_path, out, processes, *extra, env=None):
    return run(os.path.join(ROOT, "run_rsir.py"), _args(data_path, out, "--rsir_rounds=2", *extra), data_path,
               processes, env)


@pytest.mark.slow
def test_a_two_process_run_gives_one_process_results_and_resumes_after_a_kill(tiny_data_path):
    one = os.path.join(tiny_data_path, "one")
    assert _cli(tiny_data_path, one, 1, *NO_DROPOUT).returncode == 0
    spawned = os.path.join(tiny_data_path, "spawned")       # RecBole's way: --nproc starts the ranks
    done = _cli(tiny_data_path, spawned, 1, *NO_DROPOUT, "--nproc=2", f"--port={free_port()}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert _outcome(spawned) == _outcome(one)             # metrics, counts and synthetic sequences

    # torchrun's way, with dropout (each rank draws its own masks): a killed run resumes to the same results
    whole = os.path.join(tiny_data_path, "whole")
    assert _cli(tiny_data_path, whole, 2).returncode == 0
    cut = os.path.join(tiny_data_path, "cut")
    killed = _cli(tiny_data_path, cut, 2, env={FAULT_ENV: "train:2:0"})
    assert killed.returncode != 0
    assert RoundStore(cut).finished() == [0, 1] and RoundStore(cut).interrupted(2)
    resumed = _cli(tiny_data_path, cut, 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _outcome(cut) == _outcome(whole)
    saved = json.load(open(os.path.join(cut, "rsir_results.json")))["config"]
    assert saved["world_size"] == 2 and saved["single_spec"] is False
