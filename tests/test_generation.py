"""The batched generator against the plain reference loop, and the method's invariants.

Backbones decode through their own caches, any other RecBole model through its
full_sort_predict; both must give the reference's output.

Equivalence tests run the models in float64 so that no float32 near-tie between two
candidate items can make two correct implementations differ; the generators' scores are
float32 either way (the reference casts them), and one test runs a float32 model too.
"""
import copy
import dataclasses
import math
import os
import warnings

import numpy as np
import pytest
import torch
from conftest import build_tiny, make_rows
from recbole.model.sequential_recommender import GRU4Rec as RecBoleGRU4Rec

from recbole_rsir.data.convert import write_atomic
from recbole_rsir.data.loader import SequenceTrainLoader
from recbole_rsir.data.sequences import SequenceSet, training_sequences
from recbole_rsir.generation import full_sort as full_sort_module
from recbole_rsir.generation import generator as generator_module
from recbole_rsir.generation.full_sort import FullSortDecoder
from recbole_rsir.generation.generator import generate
from recbole_rsir.generation.rows import decoder_for
from recbole_rsir.generation.reference import generate_reference, score_context
from recbole_rsir.generation.rules import GenerationSettings
from recbole_rsir.generation.tau import generation_taus
from recbole_rsir.model.backbone import ReEncoder
from recbole_rsir.model.sequential_recommender.gru4rec import GRU4RecCache
from recbole_rsir.model.sequential_recommender.hstu import HSTUCache, RelativeAttentionBias
from recbole_rsir.model.sequential_recommender.sasrec import SASRecCache
from recbole_rsir.trainer.trainer import RSIRTrainer
from recbole_rsir.utils import get_model

SEED = 11


def build(data_path, model_name="SASRec", train_epochs=0, model_class=None, **overrides):
    """(config, train dataset, training sequences, model) for the atomic dataset 'tiny'."""
    config, _, train, valid, _ = build_tiny(data_path, model_name, **overrides)
    sequences = training_sequences(train.dataset)
    model = (model_class or get_model(model_name))(config, train.dataset).to(config["device"])
    if train_epochs:
        config["epochs"] = train_epochs
        loader = SequenceTrainLoader(sequences, config["train_batch_size"], config["MAX_ITEM_LIST_LENGTH"],
                                     config["seed"], dataset=train.dataset)
        RSIRTrainer(config, model).fit(loader, valid, saved=False)
    model.eval()
    return config, train.dataset, sequences, model


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread_module):
    """A SASRec trained a few epochs on the tiny data; its float64 copy is the one compared."""
    path = str(tmp_path_factory.mktemp("gen"))
    rows = make_rows()
    write_atomic(rows, os.path.join(path, "tiny", "tiny.inter"))
    config, dataset, seeds, model = build(path, train_epochs=6)
    settings = dataclasses.replace(GenerationSettings.from_config(config), m=2)
    return dict(path=path, rows=rows, config=config, dataset=dataset, seeds=seeds, settings=settings,
                model32=model, model=copy.deepcopy(model).double())


def as_lists(result):
    s = result.sequences
    return s.to_lists(), [s.times(i).tolist() for i in range(len(s))], s.users.tolist(), result.n_slots


def assert_same(a, b):
    assert as_lists(a) == as_lists(b)
    assert a.counts == b.counts


# ---- (a) the fast generator is the reference -------------------------------------------

@pytest.mark.parametrize("tau", [1, 10, 100])
@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_equals_reference_greedy_with_fidelity(trained, tau, p):
    settings = dataclasses.replace(trained["settings"], tau=tau, p=p, topk=1, fidelity=True)
    fast = generate(trained["model"], trained["seeds"], settings, SEED)
    assert_same(fast, generate_reference(trained["model"], trained["seeds"], settings, SEED))
    if tau == 10 and p == 0.5:
        assert len(fast.sequences) > 10 and fast.mean_length > 3  # a case with real content


@pytest.mark.parametrize("change", [
    dict(fidelity=False),
    dict(topk=3),
    dict(topk=5, p=1.0),
    dict(prefix_len="random"),
    dict(prefix_len=4, tau=5),
    dict(topk=4, fidelity=False, prefix_len="random", p=0.3),
])
def test_equals_reference_variants(trained, change):
    settings = dataclasses.replace(trained["settings"], **change)
    fast = generate(trained["model"], trained["seeds"], settings, SEED)
    assert_same(fast, generate_reference(trained["model"], trained["seeds"], settings, SEED))


def test_batch_size_does_not_change_output(trained):
    settings = dataclasses.replace(trained["settings"], topk=3, prefix_len="random")
    results = [generate(trained["model"], trained["seeds"], dataclasses.replace(settings, batch_size=size), SEED)
               for size in (1, 7, 10_000)]
    for other in results[1:]:
        assert_same(results[0], other)
    assert_same(results[0], generate_reference(trained["model"], trained["seeds"], settings, SEED))


def test_cache_equals_reencoding(trained, monkeypatch):
    model = trained["model"]
    assert type(decoder_for(model, 1)) is SASRecCache
    settings = dataclasses.replace(trained["settings"], topk=2, prefix_len="random", batch_size=9)
    cached = generate(model, trained["seeds"], settings, SEED)
    monkeypatch.setattr(type(model), "cache_class", None)
    assert type(decoder_for(model, 1)) is ReEncoder
    assert_same(cached, generate(model, trained["seeds"], settings, SEED))


def test_cache_hidden_states_match_model(trained):
    model, seeds = trained["model32"], trained["seeds"]
    settings = dataclasses.replace(trained["settings"], m=1)
    source = generator_module.SlotSource(seeds, torch.full((len(seeds),), 3), settings, model.n_items,
                                         model.device)
    batch = source.rows(0, len(seeds))
    cache, plain = SASRecCache(model, len(seeds)), ReEncoder(model)
    torch.testing.assert_close(cache.start(batch), plain.start(batch))
    for item in (5, 6, 7):
        batch.append(torch.full((len(batch),), item))
        torch.testing.assert_close(cache.extend(batch), plain.extend(batch))
    finished = torch.arange(len(batch)) % 3 == 1
    keep = generator_module.survivors(finished)
    assert sorted(keep.tolist()) == (~finished).nonzero().squeeze(1).tolist()
    batch = batch.select(keep)
    cache.keep(keep)
    batch.append(torch.full((len(batch),), 8))
    torch.testing.assert_close(cache.extend(batch), plain.extend(batch))


def test_float32_model(trained):
    settings = trained["settings"]
    fast = generate(trained["model32"], trained["seeds"], settings, SEED, show_progress=True)
    assert_same(fast, generate_reference(trained["model32"], trained["seeds"], settings, SEED))


@pytest.mark.parametrize("model_name, model_class, decoder", [
    ("GRU4Rec", None, GRU4RecCache), ("HSTU", None, HSTUCache), ("CL4SRec", None, SASRecCache),
    ("BERT4Rec", None, FullSortDecoder), ("GRU4Rec", RecBoleGRU4Rec, FullSortDecoder),
    ("Caser", None, FullSortDecoder), ("DIN", None, FullSortDecoder)])
def test_other_models(trained, monkeypatch, model_name, model_class, decoder):
    """Untrained, so scores are arbitrary. Backbones decode through their caches (CL4SRec is a
    SASRec); BERT4Rec, Caser (which reads the user) and RecBole's own GRU4Rec class through
    full_sort_predict; DIN, which has none, through predict, here a context or two at a time."""
    monkeypatch.setattr(full_sort_module, "PREDICT_PAIRS", 50)
    _, _, seeds, model = build(trained["path"], model_name, model_class=model_class)
    assert type(decoder_for(model, 1)) is decoder
    settings = dataclasses.replace(trained["settings"], topk=2, batch_size=16, tau=10)
    model.double()
    fast = generate(model, seeds, settings, SEED)
    assert_same(fast, generate_reference(model, seeds, settings, SEED))
    assert len(fast.sequences)


def test_subclass_computing_otherwise_is_not_cached(trained):
    base = type(trained["model32"])

    class Scaled(base):
        def sequence_output(self, item_seq, item_seq_len, time_seq=None):
            return 2 * base.sequence_output(self, item_seq, item_seq_len) + 1

    model = copy.copy(trained["model32"])
    model.__class__ = Scaled
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert type(decoder_for(model, 1)) is ReEncoder
        assert not model.can_pack()
    assert any("re-encodes" in str(w.message) for w in caught)


# ---- HSTU's and GRU4Rec's caches -------------------------------------------------------

@pytest.fixture(scope="module")
def hstu(trained):
    """An HSTU (2 blocks, 2 heads) trained a few epochs on the tiny data; float32 and float64."""
    _, _, seeds, model = build(trained["path"], "HSTU", train_epochs=3, n_layers=2, n_heads=2,
                               attention_dim=4, linear_dim=4)
    return dict(seeds=seeds, model32=model, model=copy.deepcopy(model).double())


@pytest.fixture(scope="module")
def gru(trained):
    """This package's GRU4Rec (2 GRU layers), untrained; float32 and float64."""
    _, _, seeds, model = build(trained["path"], "GRU4Rec", num_layers=2)
    return dict(seeds=seeds, model32=model, model=copy.deepcopy(model).double())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name, cache_class", [("hstu", HSTUCache), ("gru", GRU4RecCache)])
def test_cache_hidden_states_match_model_as_rows_come_and_go(trained, request, name, cache_class, dtype):
    """Rows of different lengths, rows dropped and reordered, new rows started after them:
    as in the generator, the cache's last hidden states are the re-encoded ones."""
    fixture = request.getfixturevalue(name)
    model, seeds = fixture["model" if dtype == torch.float64 else "model32"], fixture["seeds"]
    tolerance = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    check = lambda got, want: torch.testing.assert_close(got, want, **tolerance)
    settings = dataclasses.replace(trained["settings"], m=1)
    prefix = torch.minimum(torch.from_numpy(seeds.lengths), 1 + torch.arange(len(seeds)) % 6)
    source = generator_module.SlotSource(seeds, prefix, settings, model.n_items, model.device)
    appended = lambda batch, step: 1 + (batch.slot * 7 + step) % (model.n_items - 1)
    half = len(seeds) // 2
    batch = source.rows(0, half)
    assert len(set(batch.length.tolist())) > 1
    cache, plain = cache_class(model, len(seeds)), ReEncoder(model)
    check(cache.start(batch), plain.start(batch))
    for step in range(3):
        batch.append(appended(batch, step))
        check(cache.extend(batch), plain.extend(batch))
    keep = generator_module.survivors(torch.arange(len(batch)) % 3 == 1)
    assert keep.tolist() != list(range(len(keep)))  # some rows move
    batch = batch.select(keep)
    cache.keep(keep)
    new = source.rows(half, len(seeds))
    check(cache.start(new), plain.start(new))
    batch = batch.cat(new)
    for step in range(3, 6):
        batch.append(appended(batch, step))
        check(cache.extend(batch), plain.extend(batch))


@pytest.mark.parametrize("change", [
    dict(tau=10, p=0.5, topk=2, prefix_len="random", batch_size=9),
    dict(tau=100, p=0.0, topk=3, prefix_len=2),
    dict(tau=5, p=1.0, topk=1, fidelity=True),
])
def test_hstu_generation_equals_reference(trained, hstu, change):
    model, seeds = hstu["model"], hstu["seeds"]
    assert type(decoder_for(model, 1)) is HSTUCache
    settings = dataclasses.replace(trained["settings"], **change)
    fast = generate(model, seeds, settings, SEED)
    assert len(fast.sequences)
    assert_same(fast, generate_reference(model, seeds, settings, SEED))


def test_same_items_at_other_times_are_other_contexts(trained, hstu):
    """Seeds twice, the second time at other timestamps: HSTU reads time, so equal items are
    not equal contexts (the generator once scored such rows alike)."""
    seeds = hstu["seeds"]
    times = [seeds.times(i) for i in range(len(seeds))]
    twins = SequenceSet.from_lists([seeds[i] for i in range(len(seeds))] * 2,
                                   times + [7 * t + 3600.0 for t in times], np.arange(2 * len(seeds)))
    settings = dataclasses.replace(trained["settings"], m=1, tau=100, p=0.0, topk=3, prefix_len=3)
    fast = generate(hstu["model"], twins, settings, SEED)
    assert_same(fast, generate_reference(hstu["model"], twins, settings, SEED))
    by_user = dict(zip(fast.sequences.users.tolist(), fast.sequences.to_lists()))
    assert any(by_user.get(u) != by_user.get(u + len(seeds)) for u in range(len(seeds)))


def test_hstu_cache_follows_the_models_own_computation(trained, hstu, monkeypatch):
    """The cache runs the blocks' own code: a subclass computing otherwise re-encodes, and a
    change to a block's computation reaches the cache and the whole-sequence pass alike."""
    model = hstu["model32"]

    class Shifted(type(model)):
        def sequence_output(self, item_seq, item_seq_len, time_seq=None):
            return super().sequence_output(item_seq, item_seq_len, time_seq) + 1

    shifted = copy.copy(model)
    shifted.__class__ = Shifted
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert type(decoder_for(shifted, 1)) is ReEncoder
    assert any("re-encodes" in str(w.message) for w in caught)
    seeds = hstu["seeds"]
    settings = dataclasses.replace(trained["settings"], m=1)
    rows = generator_module.SlotSource(seeds, torch.full((len(seeds),), 4), settings, model.n_items,
                                       model.device).rows(0, len(seeds))
    timed = HSTUCache(model, len(seeds)).start(rows)
    bias = RelativeAttentionBias.bias        # a time bias that forgets the time: both paths follow
    monkeypatch.setattr(RelativeAttentionBias, "bias", lambda rab, offset, gap=None: bias(rab, offset, None))
    untimed = HSTUCache(model, len(seeds)).start(rows)
    torch.testing.assert_close(untimed, ReEncoder(model).start(rows), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(untimed, timed)


# ---- (e) chunked scoring ---------------------------------------------------------------

@pytest.mark.parametrize("change", [dict(), dict(fidelity=False, topk=3, p=0.0), dict(tau=100, topk=2)])
@pytest.mark.parametrize("chunk", [1, 7])
def test_chunked_equals_unchunked(trained, change, chunk):
    settings = dataclasses.replace(trained["settings"], **change)
    whole = generate(trained["model"], trained["seeds"], settings, SEED)
    assert len(whole.sequences)
    chunked = dataclasses.replace(settings, score_chunk=chunk)
    assert_same(whole, generate(trained["model"], trained["seeds"], chunked, SEED))


# ---- (b) fidelity only cuts ------------------------------------------------------------

@pytest.mark.parametrize("change", [dict(), dict(topk=3, prefix_len="random"), dict(tau=3, p=0.0)])
def test_fidelity_sequences_are_prefixes_of_unfiltered_ones(trained, change):
    settings = dataclasses.replace(trained["settings"], **change)
    kept = generate(trained["model"], trained["seeds"], settings, SEED).sequences.to_lists()
    free = generate(trained["model"], trained["seeds"], dataclasses.replace(settings, fidelity=False), SEED)
    free = free.sequences.to_lists()
    assert kept
    for seq in kept:
        assert any(other[:len(seq)] == seq for other in free)


# ---- (c) no leakage from validation and test -------------------------------------------

def test_output_ignores_validation_and_test_items(trained, tmp_path):
    n_items = max(max(items) for _, items, _ in trained["rows"])
    rows = [(user, items[:-2] + [(i + 6) % n_items + 1 for i in items[-2:]], times)
            for user, items, times in trained["rows"]]
    assert all(a[1][-2:] != b[1][-2:] for a, b in zip(rows, trained["rows"]))
    write_atomic(rows, os.path.join(tmp_path, "tiny", "tiny.inter"))
    _, dataset, seeds, model = build(str(tmp_path))
    old = trained["dataset"]
    item_field, user_field = old.iid_field, old.uid_field
    assert sorted(dataset.field2id_token[item_field]) == sorted(old.field2id_token[item_field])
    assert list(dataset.field2id_token[user_field]) == list(old.field2id_token[user_field])
    # same weights, item rows moved to the new dataset's ids of the same tokens
    to_old = torch.as_tensor([old.field2token_id[item_field][t] for t in dataset.field2id_token[item_field]])
    state = trained["model"].state_dict()
    state["item_embedding.weight"] = state["item_embedding.weight"][to_old]
    model.double().load_state_dict(state)
    model.eval()

    def tokens(ds, sequences):
        return [ds.id2token(item_field, np.asarray(s)).tolist() for s in sequences.to_lists()]

    assert tokens(dataset, seeds) == tokens(old, trained["seeds"])
    settings = dataclasses.replace(trained["settings"], topk=2, prefix_len="random")
    before = generate(trained["model"], trained["seeds"], settings, SEED)
    after = generate(model, seeds, settings, SEED)
    assert len(before.sequences)
    assert tokens(old, before.sequences) == tokens(dataset, after.sequences)
    assert before.sequences.timestamps.tolist() == after.sequences.timestamps.tolist()
    assert before.sequences.users.tolist() == after.sequences.users.tolist()


# ---- (d) invariants of every accepted sequence -----------------------------------------

def repeating_seeds(seeds):
    """The tiny seeds, each with its first items repeated inside it."""
    lists = [s[:3].tolist() + s.tolist() for s in (seeds[i] for i in range(len(seeds)))]
    times = [np.r_[seeds.times(i)[:3], seeds.times(i)] for i in range(len(seeds))]
    return SequenceSet.from_lists([x[:20] for x in lists], [t[:20] for t in times], seeds.users)


@pytest.mark.parametrize("prefix_len", [1, 4, 7])
@pytest.mark.parametrize("fidelity", [True, False])
def test_sequence_invariants(trained, prefix_len, fidelity):
    seeds = repeating_seeds(trained["seeds"])
    settings = dataclasses.replace(trained["settings"], prefix_len=prefix_len, fidelity=fidelity,
                                   p=0.3, topk=2)
    result = generate(trained["model"], seeds, settings, SEED)
    assert_same(result, generate_reference(trained["model"], seeds, settings, SEED))
    by_user = {int(u): seeds[i].tolist() for i, u in enumerate(seeds.users)}
    times_of = {int(u): seeds.times(i) for i, u in enumerate(seeds.users)}
    assert len(result.sequences)
    for i, seq in enumerate(result.sequences.to_lists()):
        seed = by_user[int(result.sequences.users[i])]
        n_prefix = min(prefix_len, len(seed))
        assert settings.min_len <= len(seq) <= settings.max_len
        assert len(seq) > n_prefix
        assert seq[:n_prefix] == seed[:n_prefix]
        generated = seq[n_prefix:]
        assert len(set(generated)) == len(generated)
        assert not set(generated) & set(seq[:n_prefix])
        ts, seed_times = result.sequences.times(i), times_of[int(result.sequences.users[i])]
        gap = np.median(np.diff(seed_times))           # the seed's median gap after each generated item
        assert np.array_equal(ts[:n_prefix], seed_times[:n_prefix])
        assert np.allclose(ts[n_prefix:], ts[n_prefix - 1] + gap * np.arange(1, len(seq) - n_prefix + 1))
    assert len(set(map(tuple, result.sequences.to_lists()))) == len(result.sequences)


def test_prefix_never_exceeds_max_len(trained):
    """Seeds longer than MAX_ITEM_LIST_LENGTH: a 'random' prefix used to overrun the model's
    position embeddings (IndexError in the reference)."""
    seeds = trained["seeds"]
    rng = np.random.default_rng(0)
    long = [rng.permutation(np.arange(1, 31))[:25] for _ in range(len(seeds))]
    long_seeds = SequenceSet.from_lists(long, [np.arange(25) * 10.0] * len(seeds), seeds.users)
    settings = dataclasses.replace(trained["settings"], prefix_len="random", fidelity=False)
    fast = generate(trained["model"], long_seeds, settings, SEED)
    assert_same(fast, generate_reference(trained["model"], long_seeds, settings, SEED))
    assert all(len(s) <= settings.max_len for s in fast.sequences.to_lists())


def test_pool_runs_out_on_a_tiny_catalogue(tmp_path):
    write_atomic(make_rows(n_users=12, n_items=6, min_len=5, max_len=6, seed=3),
                 os.path.join(tmp_path, "tiny", "tiny.inter"))
    config, _, seeds, model = build(str(tmp_path))
    model.double()
    for change in (dict(fidelity=False, p=0.0), dict(fidelity=False, p=1.0, topk=3), dict(tau=2)):
        settings = dataclasses.replace(GenerationSettings.from_config(config), m=3, **change)
        fast = generate(model, seeds, settings, SEED)
        assert_same(fast, generate_reference(model, seeds, settings, SEED))
        assert_same(fast, generate(model, seeds, dataclasses.replace(settings, score_chunk=2), SEED))
        if change.get("p") == 0.0:  # the catalogue pool ran out: all 6 items, then nothing left
            assert max(len(s) for s in fast.sequences.to_lists()) == 6


def test_no_seeds(trained):
    result = generate(trained["model"], SequenceSet.empty(), trained["settings"], SEED)
    assert len(result.sequences) == 0 and result.n_slots == 0


@pytest.mark.parametrize("p, fidelity", [(0.0, True), (1.0, True), (0.5, False)])
def test_step_counts_follow_the_settings(trained, p, fidelity):
    settings = dataclasses.replace(trained["settings"], p=p, fidelity=fidelity)
    counts = generate(trained["model"], trained["seeds"], settings, SEED).counts
    assert counts.history_picks + counts.catalogue_picks > 0
    assert (counts.history_picks == 0) == (p == 0.0)
    assert (counts.catalogue_picks == 0) == (p == 1.0)
    assert (counts.fidelity_tests > 0) == fidelity
    assert 0 <= counts.fidelity_failures <= counts.fidelity_tests


# ---- (f) refine on miss, a separate judge, tau per round -------------------------------

def assert_counts_add_up(counts, refine):
    """Each refine attempt follows a failure; a failure is rescued by at most one success."""
    assert 0 <= counts.refine_successes <= counts.refine_attempts <= refine * counts.fidelity_failures
    assert counts.refine_successes <= counts.fidelity_failures <= counts.fidelity_tests


@pytest.mark.parametrize("refine, topk", [(1, 1), (3, 1), (2, 3), (4, 5)])
@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_refine_equals_reference(trained, refine, topk, p):
    settings = dataclasses.replace(trained["settings"], refine=refine, topk=topk, p=p, tau=5)
    fast = generate(trained["model"], trained["seeds"], settings, SEED)
    assert_same(fast, generate_reference(trained["model"], trained["seeds"], settings, SEED))
    assert fast.counts.refine_attempts > 0          # the refine path ran
    assert_counts_add_up(fast.counts, refine)


@pytest.mark.parametrize("change", [dict(batch_size=5), dict(score_chunk=7), dict(prefix_len="random", topk=2),
                                    dict(tau=1, p=1.0)])
def test_refine_equals_reference_variants(trained, change):
    settings = dataclasses.replace(trained["settings"], **{"refine": 2, "tau": 5, **change})
    fast = generate(trained["model"], trained["seeds"], settings, SEED)
    assert_same(fast, generate_reference(trained["model"], trained["seeds"], settings, SEED))
    assert fast.counts.refine_attempts > 0


def test_refine_only_extends(trained):
    """Up to its first failed test a slot grows as without refine; there, refine replaces the
    item instead of ending, so every sequence kept without refine starts a kept refined one."""
    settings = dataclasses.replace(trained["settings"], tau=5, p=0.5)
    plain = generate(trained["model"], trained["seeds"], settings, SEED)
    refined = generate(trained["model"], trained["seeds"], dataclasses.replace(settings, refine=3), SEED)
    assert refined.counts.refine_successes > 0
    longer = refined.sequences.to_lists()
    for seq in plain.sequences.to_lists():
        assert any(other[:len(seq)] == seq for other in longer)
    assert int(refined.sequences.lengths.sum()) > int(plain.sequences.lengths.sum())


def test_refine_without_fidelity_changes_nothing(trained):
    settings = dataclasses.replace(trained["settings"], fidelity=False, topk=2)
    assert_same(generate(trained["model"], trained["seeds"], settings, SEED),
                generate(trained["model"], trained["seeds"], dataclasses.replace(settings, refine=3), SEED))


@pytest.mark.parametrize("name", ["hstu", "gru"])
@pytest.mark.parametrize("change", [dict(p=0.5, topk=1), dict(p=0.0, topk=3), dict(p=1.0, topk=2)])
def test_refine_through_other_caches_equals_reference(trained, request, name, change):
    fixture = request.getfixturevalue(name)
    model, seeds = fixture["model"], fixture["seeds"]
    settings = dataclasses.replace(trained["settings"], refine=2, tau=5, batch_size=9, **change)
    fast = generate(model, seeds, settings, SEED)
    assert_same(fast, generate_reference(model, seeds, settings, SEED))
    assert fast.counts.refine_attempts > 0


@pytest.mark.parametrize("model_name, model_class", [("BERT4Rec", None), ("GRU4Rec", RecBoleGRU4Rec)])
def test_refine_through_full_sort_equals_reference(trained, model_name, model_class):
    _, _, seeds, model = build(trained["path"], model_name, model_class=model_class)
    assert type(decoder_for(model, 1)) is FullSortDecoder
    model.double()
    settings = dataclasses.replace(trained["settings"], refine=2, tau=5, topk=2, batch_size=16)
    fast = generate(model, seeds, settings, SEED)
    assert_same(fast, generate_reference(model, seeds, settings, SEED))
    assert fast.counts.refine_attempts > 0


@pytest.mark.parametrize("name, cache_class", [("trained", SASRecCache), ("hstu", HSTUCache),
                                               ("gru", GRU4RecCache)])
def test_cache_re_encodes_its_last_position(trained, request, name, cache_class):
    """An item put in place of the newest one (refine) gives the outputs of re-encoding the
    whole context, also after rows moved and a replacement was replaced again."""
    fixture = request.getfixturevalue(name)
    model, seeds = fixture["model"], fixture["seeds"]
    check = lambda got, want: torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    settings = dataclasses.replace(trained["settings"], m=1)
    prefix = torch.minimum(torch.from_numpy(seeds.lengths), 1 + torch.arange(len(seeds)) % 4)
    batch = generator_module.SlotSource(seeds, prefix, settings, model.n_items, model.device).rows(0, len(seeds))
    cache, plain = cache_class(model, len(seeds)), ReEncoder(model)
    check(cache.start(batch), plain.start(batch))
    unused = lambda b, salt: torch.tensor([next(i for i in range(1 + salt % 5, model.n_items)
                                                if i not in row[:n].tolist())
                                           for row, n in zip(b.context, b.length)])
    for step in range(4):
        replace = (batch.slot + step) % 2 == 0 if step else torch.zeros(len(batch), dtype=torch.bool)
        before = batch.context.clone()
        batch.place(unused(batch, step), replace)
        rows = replace.nonzero().squeeze(1)
        assert (batch.context[rows] != before[rows]).sum() == len(rows)   # one item changed per replaced row
        check(cache.extend(batch, replace), plain.extend(batch))
        if step == 1:
            keep = generator_module.survivors(torch.arange(len(batch)) % 3 == 1)
            batch = batch.select(keep)
            cache.keep(keep)


@pytest.mark.parametrize("judge_name", ["hstu", "gru", "BERT4Rec"])
@pytest.mark.parametrize("change", [dict(), dict(refine=2, topk=2, p=0.0), dict(p=1.0, tau=3, batch_size=7)])
def test_judge_equals_reference(trained, request, judge_name, change):
    """A judge of another kind (its own cache, or full_sort_predict) decodes beside the generator."""
    if judge_name == "BERT4Rec":
        judge = build(trained["path"], "BERT4Rec")[3].double()
    else:
        judge = request.getfixturevalue(judge_name)["model"]
    settings = dataclasses.replace(trained["settings"], **{"tau": 5, **change})
    fast = generate(trained["model"], trained["seeds"], settings, SEED, judge=judge)
    assert_same(fast, generate_reference(trained["model"], trained["seeds"], settings, SEED, judge=judge))
    assert len(fast.sequences)
    own = generate(trained["model"], trained["seeds"], settings, SEED)
    assert as_lists(fast) != as_lists(own)          # the judge's scores, not the generator's, decided


def test_the_generator_as_its_own_judge_is_no_judge(trained):
    settings = dataclasses.replace(trained["settings"], tau=5, refine=1)
    assert_same(generate(trained["model"], trained["seeds"], settings, SEED, judge=trained["model"]),
                generate(trained["model"], trained["seeds"], settings, SEED))


def test_tau_tightens_per_round(trained):
    settings = dataclasses.replace(trained["settings"], tau=50, tau_schedule="tighten", tau_factor=0.3)
    assert [settings.for_round(k).tau for k in (1, 2, 3, 6)] == [50, 15, 4, 1]
    constant = dataclasses.replace(settings, tau_schedule="constant")
    assert {constant.for_round(k).tau for k in (1, 2, 3)} == {50}
    third = settings.for_round(3)
    fast = generate(trained["model"], trained["seeds"], third, SEED)
    assert_same(fast, generate_reference(trained["model"], trained["seeds"], third, SEED))
    assert fast.counts != generate(trained["model"], trained["seeds"], settings, SEED).counts


# ---- (g) tau per user ------------------------------------------------------------------

def plain_seed_taus(model, seeds, settings):
    """The per_user rule written out: each seed's first max_len items teacher-forced one prefix
    at a time through the reference's scores, the rank of every real next item, its quantile."""
    taus = []
    for s in range(len(seeds)):
        items, times = seeds[s].tolist()[:settings.max_len], seeds.times(s).tolist()[:settings.max_len]
        ranks = []
        for t in range(1, len(items)):
            scores = score_context(model, items[:t], times[:t], int(seeds.users[s]))
            ranks.append(1 + int((scores > scores[items[t]]).sum()))
        if not ranks:
            taus.append(settings.tau)
            continue
        quantile = float(np.quantile(ranks, settings.tau_quantile))
        taus.append(min(max(math.ceil(round(quantile, 9)), 1), settings.tau_max))
    return taus


def mixed_seeds(seeds):
    """The tiny seeds with a one-item seed (no rank: rsir_tau) and one longer than MAX_ITEM_LIST_LENGTH."""
    lists = [seeds[i] for i in range(len(seeds))]
    times = [seeds.times(i) for i in range(len(seeds))]
    lists[0], times[0] = lists[0][:1], times[0][:1]
    lists[1], times[1] = np.r_[lists[1], lists[2], lists[3]], np.r_[times[1], times[2] + 1e6, times[3] + 2e6]
    return SequenceSet.from_lists(lists, times, seeds.users)


def per_user(settings, **change):
    return dataclasses.replace(settings, **{"tau_schedule": "per_user", "fidelity": True, **change})


@pytest.mark.parametrize("name", ["trained", "hstu", "gru", "BERT4Rec"])
@pytest.mark.parametrize("change", [dict(), dict(tau_quantile=0.1, score_chunk=7, batch_size=5),
                                    dict(tau_quantile=1.0, tau_max=12, tau=3)])
def test_per_user_taus_equal_a_plain_loop(trained, request, name, change):
    """The shared per-seed taus (tau.py, both generators read them) against the rule written out."""
    model = (build(trained["path"], "BERT4Rec")[3].double() if name == "BERT4Rec"
             else request.getfixturevalue(name)["model"])
    seeds = mixed_seeds(request.getfixturevalue(name)["seeds"] if name != "BERT4Rec" else trained["seeds"])
    assert seeds.lengths.max() > trained["settings"].max_len
    settings = per_user(trained["settings"], **change)
    taus = generation_taus(model, seeds, settings)
    assert taus.tolist() == plain_seed_taus(model, seeds, settings)
    assert taus[0] == settings.tau                                      # the one-item seed
    if settings.tau_max < 200:
        assert taus.max() == settings.tau_max                           # the clamp bites
    else:
        assert len(set(taus.tolist())) > 2                              # the taus differ between seeds


def test_per_user_taus_are_only_for_per_user_with_fidelity(trained):
    settings = per_user(trained["settings"])
    for other in (dataclasses.replace(settings, tau_schedule="constant"),
                  dataclasses.replace(settings, fidelity=False)):
        taus = generation_taus(trained["model"], trained["seeds"], other)
        assert taus.tolist() == [other.tau] * len(trained["seeds"])
    assert settings.for_round(3) == settings


@pytest.mark.parametrize("change", [dict(), dict(topk=3, p=0.5), dict(refine=2, topk=2, p=0.5),
                                    dict(score_chunk=7, batch_size=5, prefix_len="random"),
                                    dict(tau_quantile=0.25, tau_max=6, p=1.0)])
def test_per_user_equals_reference(trained, change):
    seeds = mixed_seeds(trained["seeds"])
    settings = per_user(trained["settings"], **change)
    fast = generate(trained["model"], seeds, settings, SEED)
    assert_same(fast, generate_reference(trained["model"], seeds, settings, SEED))
    assert fast.taus.tolist() == generation_taus(trained["model"], seeds, settings).tolist()
    constant = generate(trained["model"], seeds, dataclasses.replace(settings, tau_schedule="constant"), SEED)
    assert fast.counts != constant.counts                              # the per-seed taus decided
    if change.get("refine"):
        assert fast.counts.refine_attempts > 0


@pytest.mark.parametrize("name", ["hstu", "gru", "BERT4Rec"])
@pytest.mark.parametrize("change", [dict(topk=2), dict(refine=2, topk=1, p=0.0)])
def test_per_user_through_other_decoders_equals_reference(trained, request, name, change):
    if name == "BERT4Rec":
        _, _, seeds, model = build(trained["path"], "BERT4Rec")
        model.double()
    else:
        model, seeds = request.getfixturevalue(name)["model"], request.getfixturevalue(name)["seeds"]
    settings = per_user(trained["settings"], batch_size=9, **change)
    fast = generate(model, seeds, settings, SEED)
    assert_same(fast, generate_reference(model, seeds, settings, SEED))
    assert len(fast.sequences)


@pytest.mark.parametrize("change", [dict(), dict(refine=2, topk=2, p=0.0)])
def test_per_user_with_a_judge_takes_the_judges_ranks(trained, hstu, change):
    """The judge scores the test, so its teacher-forced ranks set the taus."""
    judge, seeds = hstu["model"], trained["seeds"]
    settings = per_user(trained["settings"], **change)
    fast = generate(trained["model"], seeds, settings, SEED, judge=judge)
    assert_same(fast, generate_reference(trained["model"], seeds, settings, SEED, judge=judge))
    assert fast.taus.tolist() == generation_taus(judge, seeds, settings).tolist()
    assert fast.taus.tolist() != generation_taus(trained["model"], seeds, settings).tolist()


def test_per_user_stats_summarise_the_taus(trained):
    settings = per_user(trained["settings"])
    result = generate(trained["model"], trained["seeds"], settings, SEED)
    stats = result.stats()
    taus = generation_taus(trained["model"], trained["seeds"], settings)
    assert stats["tau_mean"] == pytest.approx(float(np.mean(taus)))
    assert (stats["tau_min"], stats["tau_q50"], stats["tau_max"]) == (taus.min(), np.median(taus), taus.max())
    constant = generate(trained["model"], trained["seeds"], dataclasses.replace(settings, tau_schedule="constant"),
                        SEED)
    assert constant.taus is None and not any(k.startswith("tau") for k in constant.stats())
