"""Property test: no validation or test item ever reaches generation or training."""
import os
import shutil
import tempfile

from conftest import build_tiny
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recbole_rsir.data.convert import write_atomic
from recbole_rsir.data.merge import training_loader
from recbole_rsir.data.sequences import eval_targets, training_sequences
from recbole_rsir.generation.generator import generate
from recbole_rsir.generation.rules import GenerationSettings
from recbole_rsir.utils import get_model


@st.composite
def datasets(draw):
    n_items = draw(st.integers(4, 15))
    n_users = draw(st.integers(2, 8))
    users = [draw(st.lists(st.integers(1, n_items), min_size=4, max_size=9)) for _ in range(n_users)]
    # replacements for each user's validation and test items
    swaps = [draw(st.tuples(st.integers(1, n_items), st.integers(1, n_items))) for _ in range(n_users)]
    return n_items, users, swaps


def _rows(n_items, users):
    # user 0 lists the catalogue first, so both files map tokens to the same internal ids
    anchor = [(0, list(range(1, n_items + 1)) + [1, 1], list(range(n_items + 2)))]
    return anchor + [(u + 1, items, list(range(len(items)))) for u, items in enumerate(users)]


def _setup(path, rows, **overrides):
    write_atomic(rows, os.path.join(path, "tiny", "tiny.inter"))
    return build_tiny(path, hidden_size=8, inner_size=8, **overrides)


def _rows_of(loader):
    return sorted(tuple(row[:n].tolist()) for row, n in zip(loader.items, loader.lengths))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=datasets(), tau=st.integers(1, 20), p=st.floats(0, 1), m=st.integers(1, 3),
       fidelity=st.booleans(), prefix=st.sampled_from([1, 2, "random"]), seed=st.integers(0, 1000))
def test_held_out_items_never_reach_generation_or_training(data, tau, p, m, fidelity, prefix, seed):
    n_items, users, swaps = data
    swapped = [items[:-2] + [a, b] for items, (a, b) in zip(users, swaps)]
    root = tempfile.mkdtemp()
    try:
        runs = []
        state = None
        for name, seqs in (("a", users), ("b", swapped)):
            config, dataset, train_data, valid_data, test_data = _setup(
                os.path.join(root, name), _rows(n_items, seqs), rsir_tau=tau, rsir_p=p, rsir_m=m,
                rsir_fidelity=fidelity, rsir_prefix_len=prefix, rsir_min_len=2)
            model = get_model("SASRec")(config, train_data.dataset).eval()
            state = state or model.state_dict()
            model.load_state_dict(state)
            real = training_sequences(train_data.dataset)
            valid_before, test_before = eval_targets(valid_data.dataset), eval_targets(test_data.dataset)
            synthetic = generate(model, real, GenerationSettings.from_config(config), seed=seed).sequences
            loader = training_loader(config, train_data, real, synthetic)
            token = lambda ids: tuple(dataset.id2token("item_id", ids).tolist())  # noqa: E731
            # the real part of the training data is exactly each user's history minus its last two items
            expected = {str(u): tuple(str(i) for i in items[:-2]) for u, items in enumerate(seqs, start=1)}
            got = {dataset.id2token("user_id", u): token(real[i]) for i, u in enumerate(real.users)}
            assert {u: v for u, v in got.items() if u != "0"} == expected
            # training rows = the windows of the real and the synthetic sequences, nothing else
            width = config["MAX_ITEM_LIST_LENGTH"]
            assert _rows_of(loader) == sorted(tuple(seq[k:k + width + 1])
                                              for seq in real.to_lists() + synthetic.to_lists()
                                              for k in range(0, max(1, len(seq) - 1), width) if len(seq[k:]) >= 2)
            # synthetic sequences never enter evaluation; users and targets are unchanged
            assert eval_targets(valid_data.dataset) == valid_before and eval_targets(test_data.dataset) == test_before
            assert len(valid_data.dataset.inter_feat) == len(test_data.dataset.inter_feat) == len(seqs) + 1
            runs.append(([token(s) for s in synthetic.to_lists()], synthetic.users.tolist()))
        assert runs[0] == runs[1]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_judge_model_never_sees_validation_or_test_items(tmp_path):
    """rsir_judge_model: a model trained beside the generator. On two datasets that differ only in
    their validation and test items, trained for one epoch (so validation cannot pick another
    one), the judges are the same weights and judge the same sequences into being."""
    import random

    import torch
    from recbole.utils import init_seed

    from recbole_rsir.rounds.loop import RSIRRounds

    rng = random.Random(5)
    n_items = 25                      # at least the metrics' largest cutoff
    users = [[rng.randint(1, n_items) for _ in range(rng.randint(5, 9))] for _ in range(8)]
    swapped = [items[:-2] + [items[-1] % n_items + 1, items[-2] % n_items + 1] for items in users]
    judges, outputs, generator_state = [], [], None
    for name, seqs in (("a", users), ("b", swapped)):
        config, _, train_data, valid_data, test_data = _setup(
            str(tmp_path / name), _rows(n_items, seqs), rsir_judge_model="HSTU", epochs=1, rsir_tau=3,
            rsir_min_len=2)
        rounds = RSIRRounds(config, train_data, valid_data, test_data, show_progress=False)
        init_seed(config["seed"] + 1, config["reproducibility"])
        rounds.store.begin(1)
        judge = rounds.judge(1)
        assert type(judge).__name__ == "HSTU"
        judges.append(judge.state_dict())
        generator = get_model("SASRec")(config, train_data.dataset).eval()
        generator_state = generator_state or generator.state_dict()      # the same generator for both
        generator.load_state_dict(generator_state)
        result = generate(generator, rounds.real, rounds.settings, seed=3, judge=judge)
        assert result.counts.fidelity_tests > 0
        outputs.append(result.sequences.to_lists())
    assert judges[0].keys() == judges[1].keys()
    assert all(torch.equal(judges[0][k], judges[1][k]) for k in judges[0])
    assert outputs[0] == outputs[1]


def test_per_user_taus_read_only_the_training_sequences(tmp_path):
    """rsir_tau_schedule: per_user teacher-forces the model along the seeds: on two datasets that
    differ only in their validation and test items, the same weights give the same per-seed
    taus and the same sequences."""
    import random

    from recbole_rsir.generation.tau import generation_taus

    rng = random.Random(7)
    n_items = 20
    users = [[rng.randint(1, n_items) for _ in range(rng.randint(4, 9))] for _ in range(8)]
    swapped = [items[:-2] + [items[-1] % n_items + 1, items[-2] % n_items + 1] for items in users]
    taus, outputs, state = [], [], None
    for name, seqs in (("a", users), ("b", swapped)):
        config, _, train_data, _, _ = _setup(str(tmp_path / name), _rows(n_items, seqs), rsir_tau_schedule="per_user",
                                             rsir_tau=4, rsir_min_len=2, rsir_p=0.5)
        model = get_model("SASRec")(config, train_data.dataset).eval()
        state = state or model.state_dict()
        model.load_state_dict(state)
        real, settings = training_sequences(train_data.dataset), GenerationSettings.from_config(config)
        result = generate(model, real, settings, seed=3)
        assert result.taus.tolist() == generation_taus(model, real, settings).tolist()
        taus.append(result.taus.tolist())
        outputs.append(result.sequences.to_lists())
    assert len(set(taus[0])) > 1 and outputs[0]
    assert taus[0] == taus[1] and outputs[0] == outputs[1]
