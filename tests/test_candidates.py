"""The approximate candidate stage (rsir_candidates: ann, generation/candidates.py).

Where the index cannot miss (an exact flat index, or L covering the catalogue) the sequences must
be the exact path's; with a real approximate index each step must stay a consistent
approximation of the exact one. Models run in float64, as in test_generation.py, so that no
float32 near-tie decides a comparison with the exact path.
"""
import copy
import dataclasses
import os
import sys

import numpy as np
import pytest
import torch
from conftest import build_tiny, make_rows, tiny_config_dict

from recbole_rsir.cli import main as cli_main
from recbole_rsir.config import Config
from recbole_rsir.data.convert import write_atomic
from recbole_rsir.data.loader import SequenceTrainLoader
from recbole_rsir.data.sequences import training_sequences
from recbole_rsir.errors import ConfigError
from recbole_rsir.generation import candidates as candidates_module
from recbole_rsir.generation import generator as generator_module
from recbole_rsir.generation.candidates import CandidateSettings, CandidateStage, steps_need, why_not_ann
from recbole_rsir.generation.generator import generate, score_catalogue
from recbole_rsir.generation.rows import SlotSource, decoder_for
from recbole_rsir.generation.rules import GenerationSettings, draw_randomness, prefix_lengths
from recbole_rsir.trainer.trainer import RSIRTrainer
from recbole_rsir.utils import get_model

SEED = 5
N_ITEMS = 600
MAX_LEN = 10


def ann(n_candidates, index="ivf", nlist=16, nprobe=2, hnsw_m=16, ef_search=0):
    return CandidateSettings(n_candidates, index, nlist, nprobe, hnsw_m, ef_search)


def rows_with_anchor(n_users=300, seed=0, held_out=None):
    """Rows whose user 0 lists the catalogue first, so item ids follow the tokens whatever the
    other users hold; ``held_out`` replaces each other user's last two items."""
    rows = make_rows(n_users=n_users, n_items=N_ITEMS, min_len=5, max_len=14, seed=seed)
    if held_out is not None:
        rows = [(u, items[:-2] + [held_out(i) for i in items[-2:]], times) for u, items, times in rows]
    anchor = (0, list(range(1, N_ITEMS + 1)), list(range(-N_ITEMS - 1, -1)))
    return [anchor] + rows


def build(path, rows, train_epochs=0):
    write_atomic(rows, os.path.join(path, "tiny", "tiny.inter"))
    config, _, train, valid, _ = build_tiny(path, MAX_ITEM_LIST_LENGTH=MAX_LEN)
    seeds = training_sequences(train.dataset)
    model = get_model("SASRec")(config, train.dataset)
    if train_epochs:
        config["epochs"] = train_epochs
        loader = SequenceTrainLoader(seeds, config["train_batch_size"], MAX_LEN, config["seed"],
                                     dataset=train.dataset)
        RSIRTrainer(config, model).fit(loader, valid, saved=False)
    return config, train.dataset, seeds, model.eval()


@pytest.fixture(scope="module")
def faiss():
    return pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def large(tmp_path_factory, one_thread_module, faiss):
    """A SASRec trained a few epochs on 600 items (enough for an index to miss); float64."""
    path = str(tmp_path_factory.mktemp("ann"))
    config, dataset, seeds, model = build(path, rows_with_anchor(), train_epochs=4)
    settings = dataclasses.replace(GenerationSettings.from_config(config), m=2, tau=20)
    return dict(path=path, config=config, seeds=seeds, settings=settings, model=copy.deepcopy(model).double())


def sequences(result):
    s = result.sequences
    return s.to_lists(), s.timestamps.tolist(), s.users.tolist(), result.counts


@pytest.fixture
def stages(monkeypatch):
    """Every CandidateStage the generator builds, to read its counters."""
    built = []

    class Recorded(CandidateStage):
        def __init__(self, *args):
            super().__init__(*args)
            built.append(self)

    monkeypatch.setattr(generator_module, "CandidateStage", Recorded)
    return built


# ---- where the index cannot miss, the ann path is the exact path ----------------------

@pytest.mark.parametrize("change", [dict(), dict(topk=3, prefix_len="random"), dict(p=0.0, tau=5),
                                    dict(fidelity=False, topk=2), dict(p=1.0), dict(refine=3, topk=2)])
@pytest.mark.parametrize("stage", [
    dict(index="flat", n_candidates=32),              # exact search, L a little above the 20 needed
    dict(index="ivf", n_candidates=N_ITEMS, nprobe=1),   # L covers the catalogue: no search
    dict(index="flat", n_candidates=N_ITEMS + 50),       # L above the catalogue
])
def test_an_index_that_cannot_miss_gives_the_exact_sequences(large, stages, change, stage):
    settings = dataclasses.replace(large["settings"], **change)
    exact = generate(large["model"], large["seeds"], settings, SEED)
    approx = generate(large["model"], large["seeds"], dataclasses.replace(settings, ann=ann(**stage)), SEED)
    assert len(exact.sequences) > 5
    assert sequences(approx) == sequences(exact)
    (built,) = stages
    assert built.searches > 0
    assert (built.index is None) == (stage["n_candidates"] >= N_ITEMS)
    assert built.fallbacks == 0


class HalfEmpty:
    """An index that finds nothing for every other context (as an IVF whose probed lists hold
    fewer than L items) and the exact top L for the rest."""

    def __init__(self, vectors):
        self.vectors = vectors

    def search(self, queries, k):
        scores = queries @ self.vectors.T
        ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        ids[::2] = -1
        return None, ids


def test_contexts_the_index_finds_too_little_for_are_scored_exactly(large, stages, monkeypatch):
    monkeypatch.setattr(candidates_module, "build_index", lambda faiss, vectors, *_: HalfEmpty(vectors))
    settings = dataclasses.replace(large["settings"], topk=2, prefix_len="random")
    exact = generate(large["model"], large["seeds"], settings, SEED)
    approx = generate(large["model"], large["seeds"], dataclasses.replace(settings, ann=ann(32)), SEED)
    assert sequences(approx) == sequences(exact)
    (built,) = stages
    assert 0 < built.fallbacks < built.searches


def test_a_judge_model_is_scored_through_its_own_index(large, stages):
    judge = copy.deepcopy(large["model"])
    with torch.no_grad():
        judge.item_embedding.weight.mul_(torch.linspace(0.5, 1.5, judge.item_embedding.weight.size(0)).unsqueeze(1))
    settings = large["settings"]
    exact = generate(large["model"], large["seeds"], settings, SEED, judge=judge)
    assert sequences(exact) != sequences(generate(large["model"], large["seeds"], settings, SEED))
    approx = generate(large["model"], large["seeds"], dataclasses.replace(settings, ann=ann(32, index="flat")), SEED,
                      judge=judge)
    assert sequences(approx) == sequences(exact)
    assert len(stages) == 2 and all(stage.searches for stage in stages)


# ---- a real approximate index: each step a consistent approximation --------------------

def one_step(large, candidates, n_rows=400):
    """Exact and ann Scores of the first step of ``n_rows`` slots, with the rows."""
    model, seeds = large["model"], large["seeds"]
    settings = dataclasses.replace(large["settings"], prefix_len="random", ann=candidates)
    n_slots = min(n_rows, len(seeds) * settings.m)
    prefix = prefix_lengths(seeds.lengths, settings, draw_randomness(len(seeds) * settings.m, MAX_LEN, SEED))
    decoder = decoder_for(model, n_slots)
    source = SlotSource(seeds, prefix, settings, decoder.n_items, model.device)
    rows = source.rows(0, n_slots)
    hidden = decoder.start(rows)
    stage = CandidateStage(model, settings, decoder.n_items)
    exact = score_catalogue(decoder, hidden, rows, settings, catalogue=True)
    approx = score_catalogue(decoder, hidden, rows, settings, catalogue=True, ann=stage)
    return settings, rows, exact, approx


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_an_approximate_step_is_consistent_with_the_exact_one(large, index):
    candidates = ann(steps_need(large["settings"], N_ITEMS + 1), index=index, nprobe=1, hnsw_m=4, ef_search=1)
    settings, rows, exact, approx = one_step(large, candidates)
    # history items are scored exactly, retrieved or not
    torch.testing.assert_close(approx.history, exact.history, rtol=1e-6, atol=1e-6)
    # the tau-th score of a subset of the catalogue is at most the catalogue's
    assert torch.all(approx.tau_th <= exact.tau_th + 1e-6)
    # the catalogue pool's top k: real items outside the context, never above the exact top k
    k = approx.catalogue_items.size(1)
    assert k == exact.catalogue_items.size(1) == settings.topk
    items = approx.catalogue_items
    assert torch.all((items >= 1) & (items <= N_ITEMS))
    in_context = (items.unsqueeze(2) == rows.context.unsqueeze(1)).any(2)
    assert not in_context.any()
    assert torch.all(approx.catalogue_top <= exact.catalogue_top + 1e-6)
    # where the scores agree with exact, so do the decisions: the fidelity test and the pick
    remaining = ~rows.used
    passes = lambda scores: ((scores.history >= scores.tau_th.unsqueeze(1)) & remaining).any(1)
    same_threshold = approx.tau_th == exact.tau_th
    assert torch.equal(passes(approx)[same_threshold], passes(exact)[same_threshold])
    same_best = approx.catalogue_top[:, 0] == exact.catalogue_top[:, 0]
    assert torch.equal(approx.catalogue_items[same_best, 0], exact.catalogue_items[same_best, 0])
    # and the index really is approximate here: it misses for some rows, not for all
    assert (~same_threshold).any() and same_best.any()


def test_an_approximate_generation_keeps_the_sequence_invariants(large, stages):
    n_prefix = 2
    settings = dataclasses.replace(large["settings"], topk=2, p=0.3, prefix_len=n_prefix,
                                   ann=ann(steps_need(large["settings"], N_ITEMS + 1), nprobe=1))
    result = generate(large["model"], large["seeds"], settings, SEED)
    exact = generate(large["model"], large["seeds"], dataclasses.replace(settings, ann=None), SEED)
    assert len(result.sequences) and sequences(result) != sequences(exact)
    seeds = large["seeds"]
    by_user = {int(u): seeds[i].tolist() for i, u in enumerate(seeds.users)}
    for i, seq in enumerate(result.sequences.to_lists()):
        seed = by_user[int(result.sequences.users[i])]
        assert settings.min_len <= len(seq) <= settings.max_len
        assert seq[:n_prefix] == seed[:n_prefix]
        generated = seq[n_prefix:]
        assert all(1 <= item <= N_ITEMS for item in generated)
        assert len(set(generated)) == len(generated) and not set(generated) & set(seq[:n_prefix])
    assert stages[0].searches > 0


def test_held_out_items_never_reach_the_ann_path(tmp_path, one_thread_module, faiss):
    """Two datasets that differ only in every user's validation and test items, same weights and
    item ids: the same index, the same sequences."""
    results = []
    state = None
    for name, held_out in (("a", None), ("b", lambda item: item % N_ITEMS + 1)):
        config, _, seeds, model = build(str(tmp_path / name), rows_with_anchor(n_users=120, held_out=held_out))
        state = state or copy.deepcopy(model.state_dict())
        model.load_state_dict(state)
        model.double()
        settings = dataclasses.replace(GenerationSettings.from_config(config), m=2, tau=20, topk=2,
                                       ann=ann(24, nprobe=1))
        results.append((seeds.to_lists(), sequences(generate(model, seeds, settings, SEED))))
    (seeds_a, out_a), (seeds_b, out_b) = results
    assert seeds_a == seeds_b
    assert out_a[0] and out_a == out_b


# ---- which models, which settings --------------------------------------------------------

def test_the_backbones_score_output_dot_item_vector(large):
    """What an inner-product index ranks is what each backbone's decoder scores."""
    settings = dataclasses.replace(large["settings"], m=1, prefix_len="random")
    seeds = large["seeds"]
    prefix = prefix_lengths(seeds.lengths, settings, draw_randomness(len(seeds), MAX_LEN, SEED))
    for name in ("SASRec", "GRU4Rec", "CL4SRec", "HSTU"):
        model_class = get_model(name)
        assert why_not_ann(model_class) is None, name
        config, _, train, _, _ = build_tiny(large["path"], name, MAX_ITEM_LIST_LENGTH=MAX_LEN)
        torch.manual_seed(0)
        model = model_class(config, train.dataset).eval().double()
        decoder = decoder_for(model, 50)
        rows = SlotSource(seeds, prefix, settings, decoder.n_items, model.device).rows(0, 50)
        with torch.no_grad():
            hidden = decoder.start(rows)
            torch.testing.assert_close(decoder.scores(hidden), hidden @ model.item_embeddings().T)


def test_models_not_scored_by_inner_product_are_refused(tiny_data_path):
    assert "full_sort_predict" in why_not_ann(get_model("BERT4Rec"))

    class Reweighted(get_model("SASRec")):
        def item_logits(self, output, items=None):
            return 2 * super().item_logits(output, items)

    assert "item_logits" in why_not_ann(Reweighted)
    pytest.importorskip("faiss")
    config = Config(model="BERT4Rec", dataset="tiny", config_dict=tiny_config_dict(
        tiny_data_path, rsir_candidates="ann", train_path="recbole"))
    with pytest.raises(ConfigError, match="BERT4Rec is scored by its own full_sort_predict"):
        GenerationSettings.from_config(config)


def test_too_few_candidates_is_refused(large):
    settings = dataclasses.replace(large["settings"], ann=ann(steps_need(large["settings"], N_ITEMS + 1) - 1))
    with pytest.raises(ConfigError, match="rsir_ann_candidates .* must be at least"):
        generate(large["model"], large["seeds"], settings, SEED)


def test_without_faiss_asking_for_ann_is_one_line_and_exit_2(tiny_data_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    code = cli_main(["--model=SASRec", "--dataset=tiny", f"--data_path={tiny_data_path}", "--rsir_candidates=ann",
                     "--state=WARNING", "--show_progress=False"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "faiss" in err and "pip install" in err
    # exact scoring, the default, never needs it
    config = Config(model="SASRec", dataset="tiny", config_dict=tiny_config_dict(tiny_data_path))
    assert GenerationSettings.from_config(config).ann is None


def test_per_user_taus_get_a_long_enough_candidate_list(large, faiss):
    """rsir_tau_schedule: per_user: L is checked against the largest tau a seed gets; with an exact
    flat index and that L, the sequences are the exact path's, and one candidate fewer is refused."""
    from recbole_rsir.generation.tau import generation_taus

    settings = dataclasses.replace(large["settings"], tau_schedule="per_user", tau_max=60, p=0.5, topk=2)
    largest = int(generation_taus(large["model"], large["seeds"], settings).max())
    need = steps_need(settings, N_ITEMS + 1, largest)
    assert need == largest > steps_need(dataclasses.replace(settings, fidelity=False), N_ITEMS + 1)  # tau decides
    exact = generate(large["model"], large["seeds"], settings, SEED)
    flat = generate(large["model"], large["seeds"], dataclasses.replace(settings, ann=ann(need, index="flat")), SEED)
    assert len(exact.sequences) and sequences(flat) == sequences(exact)
    with pytest.raises(ConfigError, match=r"must be at least max\(the largest per-user tau"):
        generate(large["model"], large["seeds"], dataclasses.replace(settings, ann=ann(need - 1, index="flat")), SEED)
