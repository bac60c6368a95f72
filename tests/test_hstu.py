import math

import pytest
import torch
import torch.nn.functional as F
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction

from conftest import tiny_config_dict
from recbole_rsir.config import Config
from recbole_rsir.model.backbone import time_field
from recbole_rsir.model.sequential_recommender import HSTU
from recbole_rsir.model.sequential_recommender.hstu import time_buckets
from recbole_rsir.utils import get_model

SMALL = {"n_layers": 2, "n_heads": 2, "attention_dim": 4, "linear_dim": 4, "hidden_size": 8}


def build(data_path, **overrides):
    config = Config(model="HSTU", dataset="tiny", config_dict=tiny_config_dict(data_path, **{**SMALL, **overrides}))
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    return config, HSTU(config, train._dataset), train, valid, test


def sequences(model, batch=3, width=8, seed=0):
    """Random items with lengths width, width - 2, ...; day-scale timestamps, zero on padding."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([max(1, width - 2 * b) for b in range(batch)])
    valid = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)
    items = torch.randint(1, model.n_items, (batch, width), generator=g) * valid
    gaps = torch.randint(0, 5 * 86400, (batch, width), generator=g).float()
    times = (1.6e9 + torch.cumsum(gaps, 1)) * valid
    return items, lengths, times


def test_yaml_defaults_and_lookup(tiny_data_path):
    config = Config(model="HSTU", dataset="tiny", config_dict={"data_path": tiny_data_path})
    assert get_model("HSTU") is HSTU
    assert (config["hidden_size"], config["n_layers"], config["n_heads"]) == (64, 4, 4)
    assert (config["attention_dim"], config["linear_dim"], config["temperature"]) == (16, 16, 0.05)
    assert (config["num_time_buckets"], config["train_loss"], config["loss_type"]) == (128, "sampled_softmax", "CE")
    assert HSTU.TIME_SEQ == "timestamp_list" == time_field(HSTU)


def test_shapes_and_normalised_scores(tiny_data_path):
    _, model, train, _, _ = build(tiny_data_path)
    model.eval()
    batch = next(iter(train))
    seq, length, times = batch["item_id_list"], batch["item_length"], batch["timestamp_list"]
    out = model.sequence_output(seq, length, times)
    assert out.shape == (*seq.shape, 8)
    valid = seq > 0
    torch.testing.assert_close(out[valid].norm(dim=-1), torch.ones(int(valid.sum())))
    last = model.forward(seq, length, times)
    torch.testing.assert_close(last, out[torch.arange(len(seq)), length - 1])
    logits = model.item_logits(last)
    assert logits.shape == (len(seq), model.n_items)
    assert logits.abs().max() <= 1 / model.temperature + 1e-4
    items = torch.tensor([5, 2, 9])
    torch.testing.assert_close(model.item_logits(last, items), logits[:, items])
    targets = batch["item_id"]
    torch.testing.assert_close(model.target_logits(last, targets), logits[torch.arange(len(seq)), targets])


def reference_output(model, items, time_seq):
    """HSTU written out loop by loop from the method's description (eval mode)."""
    d = model.hidden_size
    valid = items > 0
    x = (model.item_embedding(items) * math.sqrt(d) + model.position_embedding.weight[: items.size(1)]) * valid.unsqueeze(-1)
    batch, length, _ = x.shape
    for block in model.blocks:
        h_, da, dl = block.n_heads, block.attention_dim, block.linear_dim
        proj = F.silu(F.layer_norm(x, (d,), eps=block.eps) @ block.uvqk.weight.T)
        u, v, q, k = proj.split([h_ * dl, h_ * dl, h_ * da, h_ * da], dim=-1)
        mixed = torch.zeros(batch, length, h_ * dl)
        for b in range(batch):
            for i in range(length):
                for h in range(h_):
                    for j in range(i + 1):
                        if not valid[b, j]:
                            continue
                        s = q[b, i, h * da:(h + 1) * da] @ k[b, j, h * da:(h + 1) * da]
                        s = s + block.rab.position_bias.weight[i - j, 0]
                        if time_seq is not None:
                            gap = max(abs(float(time_seq[b, i]) - float(time_seq[b, j])), 1.0)
                            bucket = min(int(math.log(gap) / math.log(model.time_bucket_base)),
                                         model.num_time_buckets - 1)
                            s = s + block.rab.time_bias.weight[bucket, 0]
                        mixed[b, i, h * dl:(h + 1) * dl] += F.silu(s) / model.max_seq_length * v[b, j, h * dl:(h + 1) * dl]
        x = x + block.output(u * F.layer_norm(mixed, (h_ * dl,), eps=block.eps))
    return F.normalize(x, dim=-1)


@pytest.mark.parametrize("with_time", [True, False])
def test_matches_a_plain_loop_computation(tiny_data_path, with_time):
    _, model, _, _, _ = build(tiny_data_path)
    model.eval()
    items, lengths, times = sequences(model, batch=2, width=6)
    times = times if with_time else None
    with torch.no_grad():
        out = model.sequence_output(items, lengths, times)
        expected = reference_output(model, items, times)
    valid = items > 0
    torch.testing.assert_close(out[valid], expected[valid], rtol=1e-4, atol=1e-5)


def test_time_buckets_are_logarithmic_and_clamped():
    base = 1.35
    gaps = [0.0, 0.5, 1.0, 2.0, 60.0, 86400.0, 3.15e8, 1e30]
    times = torch.tensor([[0.0] + gaps[1:]], dtype=torch.float64)
    buckets = time_buckets(times, 128, base)
    expected = [0 if g <= 1 else min(127, math.floor(math.log(g) / math.log(base))) for g in gaps]
    assert buckets[0, :, 0].tolist() == expected  # query i against key 0 (time 0)
    assert torch.equal(buckets, buckets.transpose(1, 2))
    assert buckets[0, 6, 0] == 65  # ten years: well inside 128 buckets
    assert time_buckets(times, 10, base).max() == 9


def test_causal_in_items_and_times(tiny_data_path):
    _, model, _, _, _ = build(tiny_data_path)
    model.eval()
    items, lengths, times = sequences(model, batch=2, width=8)
    lengths[:] = 8
    items[items == 0] = 1
    times = 1.6e9 + torch.arange(8).float() * 86400 * 3
    times = times.expand(2, 8).clone()
    base = model.sequence_output(items, lengths, times)
    for t in (1, 5, 7):
        later_item = items.clone()
        later_item[:, t] = later_item[:, t] % (model.n_items - 1) + 1
        later_time = times.clone()
        later_time[:, t:] += 86400 * 300
        for out in (model.sequence_output(later_item, lengths, times),
                    model.sequence_output(items, lengths, later_time)):
            torch.testing.assert_close(out[:, :t], base[:, :t])
            assert not torch.allclose(out[:, t], base[:, t])


def test_output_does_not_depend_on_batch_padding_width(tiny_data_path):
    _, model, _, _, _ = build(tiny_data_path)
    model.eval()
    items, lengths, times = sequences(model, batch=3, width=8)
    wide = model.sequence_output(F.pad(items, (0, 12)), lengths, F.pad(times, (0, 12)))
    valid = items > 0
    torch.testing.assert_close(model.sequence_output(items, lengths, times)[valid], wide[:, :8][valid])


def test_time_bias_reacts_to_gaps_and_is_inert_without_timestamps(tiny_data_path):
    _, model, _, _, _ = build(tiny_data_path)
    model.eval()
    items, lengths, times = sequences(model)
    valid = items > 0
    with torch.no_grad():
        timed = model.sequence_output(items, lengths, times)
        stretched = model.sequence_output(items, lengths, times.clamp(max=1.6e9) + (times - 1.6e9).clamp(min=0) * 50)
        untimed = model.sequence_output(items, lengths, None)
        # position 0 only sees itself (gap 0); later positions see the stretched gaps
        torch.testing.assert_close(stretched[:, 0], timed[:, 0])
        assert (stretched - timed)[:, 1:][valid[:, 1:]].abs().amax(-1).min() > 1e-4
        assert not torch.allclose(untimed[valid], timed[valid])
        for block in model.blocks:
            block.rab.time_bias.weight.zero_()
        torch.testing.assert_close(model.sequence_output(items, lengths, times), untimed)


def test_sampled_softmax_masks_accidental_hits(tiny_data_path):
    _, model, train, _, _ = build(tiny_data_path, train_loss="sampled_softmax", train_neg_samples=40)
    model.eval()  # no dropout: the negatives are the only random draw
    batch = next(iter(train))
    torch.manual_seed(5)
    loss = model.calculate_loss(batch)
    torch.manual_seed(5)
    negatives = torch.randint(1, model.n_items, (40,))
    output = model.forward(batch["item_id_list"], batch["item_length"], batch["timestamp_list"])
    scores = model.item_logits(output)
    rows = []
    for r, target in enumerate(batch["item_id"].tolist()):
        kept = [scores[r, n] for n in negatives.tolist() if n != target]
        row = torch.stack([scores[r, target]] + kept)
        rows.append(-F.log_softmax(row, dim=0)[0])
    assert (negatives.unsqueeze(0) == batch["item_id"].unsqueeze(1)).any()  # hits do occur here
    assert loss.item() == pytest.approx(torch.stack(rows).mean().item(), rel=1e-5)


def test_full_sort_predict_agrees_with_predict_and_reads_time(tiny_data_path):
    _, model, train, _, _ = build(tiny_data_path)
    model.eval()
    batch = next(iter(train))
    full = model.full_sort_predict(batch)
    torch.testing.assert_close(model.predict(batch), full[torch.arange(len(full)), batch["item_id"]])
    untimed = Interaction({k: batch[k] for k in batch.interaction if k != "timestamp_list"})
    seq, length = batch["item_id_list"], batch["item_length"]
    torch.testing.assert_close(model.full_sort_predict(untimed), model.item_logits(model.forward(seq, length)))
    assert not torch.allclose(model.full_sort_predict(untimed), full)
