import math

import pytest
import torch
import torch.nn.functional as F
from recbole.data import create_dataset, data_preparation

from recbole_rsir.config import Config
from recbole_rsir.model.sequential_recommender import CL4SRec
from recbole_rsir.model.sequential_recommender.cl4srec import CROP, MASK, REORDER, crop, mask, operator_pairs, reorder
from recbole_rsir.utils import get_model
from conftest import tiny_config_dict


def build(data_path, **overrides):
    config = Config(model="CL4SRec", dataset="tiny", config_dict=tiny_config_dict(data_path, **overrides))
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = CL4SRec(config, train._dataset)
    return config, model, train, valid, test


def first_batch(train):
    return next(iter(train))


def random_rows(batch=64, width=12, n_items=50, seed=0):
    """Rows of distinct items (so a permutation is visible), left-aligned, zero-padded."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (batch,), generator=g)
    seq = torch.stack([torch.randperm(n_items - 1, generator=g)[:width] + 1 for _ in range(batch)])
    seq = seq.masked_fill(torch.arange(width).unsqueeze(0) >= lengths.unsqueeze(1), 0)
    return seq, lengths


def test_yaml_defaults_and_lookup(tiny_data_path):
    config = Config(model="CL4SRec", dataset="tiny", config_dict={"data_path": tiny_data_path})
    assert get_model("CL4SRec") is CL4SRec
    assert (config["hidden_size"], config["n_layers"], config["n_heads"], config["inner_size"]) == (64, 2, 2, 256)
    assert (config["lmd"], config["tau"], config["eta"], config["gamma"], config["beta"]) == (0.1, 1.0, 0.6, 0.3, 0.6)
    assert config["rsir_tau"] == 50  # the model's tau does not touch RSIR's


def test_shapes_and_mask_token_never_scored(tiny_data_path):
    _, model, train, _, _ = build(tiny_data_path)
    model.eval()
    batch = first_batch(train)
    seq, length = batch["item_id_list"], batch["item_length"]
    b, width = seq.shape
    assert model.mask_token == model.n_items
    assert model.item_embedding.weight.shape[0] == model.n_items
    assert model.sequence_output(seq, length).shape == (b, width, 16)
    out = model.forward(seq, length)  # SASRec's own forward
    assert out.shape == (b, 16)
    torch.testing.assert_close(out, model.sequence_output(seq, length)[torch.arange(b), length - 1])
    assert model.item_logits(out).shape == (b, model.n_items)
    assert model.full_sort_predict(batch).shape == (b, model.n_items)
    items = torch.tensor([3, 1, 7])
    torch.testing.assert_close(model.item_logits(out, items), model.item_logits(out)[:, items])
    # the mask token has its own vector, different from every item's
    masked = seq.clone()
    masked[:, 0] = model.mask_token
    assert not torch.allclose(model.sequence_output(masked, length)[:, 0], model.sequence_output(seq, length)[:, 0])
    # scores are SASRec's: outputs dotted with the item table, the mask token never scored
    torch.testing.assert_close(model.item_logits(out), out @ model.item_embedding.weight.T)


def test_generation_kv_cache_applies(tiny_data_path):
    from recbole_rsir.model.sequential_recommender.sasrec import SASRecCache

    _, model, _, _, _ = build(tiny_data_path)
    assert type(model.new_cache(1)) is SASRecCache


def test_causal(tiny_data_path):
    _, model, train, _, _ = build(tiny_data_path)
    model.eval()
    seq = torch.randint(1, model.n_items, (8, 10), generator=torch.Generator().manual_seed(1))
    length = torch.full((8,), 10)
    base = model.sequence_output(seq, length)
    for t in (0, 4, 9):
        changed = seq.clone()
        changed[:, t] = changed[:, t] % (model.n_items - 1) + 1
        out = model.sequence_output(changed, length)
        torch.testing.assert_close(out[:, :t], base[:, :t])
        assert not torch.allclose(out[:, t], base[:, t])


def test_crop_is_a_contiguous_subsequence():
    seq, length = random_rows(seed=2)
    before = seq.clone()
    view, view_len = crop(seq, length, 0.6)
    assert torch.equal(seq, before)
    assert torch.equal(view_len, torch.clamp((0.6 * length.float()).floor().long(), min=1))
    for row in range(len(seq)):
        n, k = int(length[row]), int(view_len[row])
        original, kept = seq[row, :n].tolist(), view[row, :k].tolist()
        starts = [s for s in range(n - k + 1) if original[s:s + k] == kept]
        assert starts, (original, kept)
        assert (view[row, k:] == 0).all()


def test_mask_replaces_a_gamma_fraction_by_the_mask_token_only():
    seq, length = random_rows(seed=3)
    before = seq.clone()
    token = 50
    view, view_len = mask(seq, length, 0.3, token)
    assert torch.equal(seq, before) and torch.equal(view_len, length)
    changed = view != seq
    assert (view[changed] == token).all()
    assert torch.equal(changed.sum(1), (0.3 * length.float()).floor().long())
    assert not changed[torch.arange(seq.size(1)).unsqueeze(0) >= length.unsqueeze(1)].any()


def test_reorder_permutes_one_contiguous_window():
    seq, length = random_rows(seed=4)
    before = seq.clone()
    view, view_len = reorder(seq, length, 0.6)
    assert torch.equal(seq, before) and torch.equal(view_len, length)
    assert not torch.equal(view, seq)  # something moved somewhere
    for row in range(len(seq)):
        n, size = int(length[row]), int(0.6 * int(length[row]))
        assert sorted(view[row].tolist()) == sorted(seq[row].tolist())
        moved = (view[row] != seq[row]).nonzero().flatten()
        if len(moved):
            lo, hi = int(moved.min()), int(moved.max())
            assert hi - lo + 1 <= size and hi < n
            # some window of that size containing the moved items holds a permutation of its items
            assert any(sorted(view[row, s:s + size].tolist()) == sorted(seq[row, s:s + size].tolist())
                       for s in range(max(0, hi - size + 1), min(lo, n - size) + 1))


def test_views_use_two_different_operators_chosen_per_row():
    pairs = operator_pairs(6000, torch.device("cpu"))
    assert (pairs[:, 0] != pairs[:, 1]).all()
    counts = torch.bincount(pairs[:, 0] * 3 + pairs[:, 1], minlength=9).float()
    assert counts[[0, 4, 8]].sum() == 0
    assert (counts[[1, 2, 3, 5, 6, 7]] > 850).all()  # each of the six ordered pairs ~ 1000


def test_augment_picks_each_rows_operator(tiny_data_path):
    _, model, _, _, _ = build(tiny_data_path)
    seq, length = random_rows(n_items=model.n_items, seed=5)
    ops = torch.arange(len(seq)) % 3
    torch.manual_seed(11)
    view, view_len = model.augment(seq, length, ops)
    torch.manual_seed(11)
    expected = (crop(seq, length, model.eta), mask(seq, length, model.gamma, model.mask_token),
                reorder(seq, length, model.beta))
    for op in (CROP, MASK, REORDER):
        rows = ops == op
        assert torch.equal(view[rows], expected[op][0][rows])
        assert torch.equal(view_len[rows], expected[op][1][rows])


@pytest.mark.parametrize("packs", [True, False])
def test_view_outputs_are_each_views_own_last_output(tiny_data_path, monkeypatch, packs):
    """Packed side by side or trimmed, every view (mask tokens included) gets the output it has alone."""
    _, model, _, _, _ = build(tiny_data_path, MAX_ITEM_LIST_LENGTH=12)
    model = model.double().eval()
    monkeypatch.setattr(model, "packs_rows", packs)
    assert model.can_pack() == packs
    seq, length = random_rows(batch=40, n_items=model.n_items, seed=2)
    seq[::3, 0] = model.mask_token
    out = model.view_outputs(seq, length)
    alone = torch.cat([model.forward(seq[b:b + 1, :n], length[b:b + 1]) for b, n in enumerate(length.tolist())])
    assert out.shape == (40, model.hidden_size)
    assert torch.allclose(out, alone, atol=1e-10)


def test_info_nce_matches_a_plain_computation(tiny_data_path):
    _, model, _, _, _ = build(tiny_data_path, tau=0.7)
    z1, z2 = torch.randn(5, 4), torch.randn(5, 4)
    views = torch.cat([z1, z2])
    total = 0.0
    for a in range(10):
        twin = (a + 5) % 10
        others = [math.exp(float(views[a] @ views[c]) / 0.7) for c in range(10) if c != a]
        total += -math.log(math.exp(float(views[a] @ views[twin]) / 0.7) / sum(others))
    assert model.info_nce(z1, z2).item() == pytest.approx(total / 10, rel=1e-5)


def test_loss_is_next_item_ce_plus_lmd_infonce_and_leaves_data_alone(tiny_data_path):
    _, model, train, _, _ = build(tiny_data_path, lmd=0.5)
    model.eval()
    batch = first_batch(train)
    seq_before = batch["item_id_list"].clone()
    torch.manual_seed(3)
    loss = model.calculate_loss(batch)
    torch.manual_seed(3)
    aux = model.auxiliary_loss(batch["item_id_list"], batch["item_length"])
    out = model.forward(batch["item_id_list"], batch["item_length"])
    ce = F.cross_entropy(model.item_logits(out), batch["item_id"])
    assert loss.item() == pytest.approx((ce + aux).item(), rel=1e-5)
    assert aux.item() > 0
    assert torch.equal(batch["item_id_list"], seq_before)
