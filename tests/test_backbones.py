"""What every backbone must do in RecBole: learn, score consistently, and run in its Trainer."""
import math

import pytest
import torch
from conftest import build_tiny
from recbole.trainer import Trainer

from recbole_rsir.utils import get_model

SMALL = {
    "SASRec": {},
    "CL4SRec": {},
    "HSTU": {"n_layers": 2, "n_heads": 2, "attention_dim": 4, "linear_dim": 4, "hidden_size": 8},
}


def _build(path, model_name, **overrides):
    config, dataset, train, valid, test = build_tiny(path, model=model_name, **{**SMALL[model_name], **overrides})
    return config, get_model(model_name)(config, train.dataset), train, valid, test


@pytest.mark.parametrize("model_name, train_loss", [("SASRec", "full_ce"), ("CL4SRec", "full_ce"),
                                                    ("HSTU", "full_ce"), ("HSTU", "sampled_softmax")])
def test_loss_falls(tiny_data_path, model_name, train_loss):
    torch.manual_seed(0)
    _, model, train, _, _ = _build(tiny_data_path, model_name, train_loss=train_loss, train_neg_samples=16,
                                   hidden_dropout_prob=0.1, attn_dropout_prob=0.1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batch = next(iter(train))
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses


@pytest.mark.parametrize("model_name", list(SMALL))
def test_full_sort_predict_agrees_with_predict(tiny_data_path, model_name):
    _, model, train, _, _ = _build(tiny_data_path, model_name)
    model.eval()
    batch = next(iter(train))
    full = model.full_sort_predict(batch)
    assert full.shape == (len(batch), model.n_items)
    torch.testing.assert_close(model.predict(batch), full[torch.arange(len(full)), batch["item_id"]])


@pytest.mark.parametrize("model_name", list(SMALL))
def test_recbole_trainer_fits_and_evaluates(tiny_data_path, model_name):
    config, model, train, valid, test = _build(tiny_data_path, model_name, epochs=1)
    stored = train.dataset.inter_feat["item_id_list"].clone()
    trainer = Trainer(config, model)
    best_score, _ = trainer.fit(train, valid, saved=False, show_progress=False)
    result = trainer.evaluate(test, load_best_model=False)
    assert math.isfinite(best_score)
    assert set(result) >= {"recall@10", "ndcg@10", "mrr@10"}
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in result.values()), result
    assert torch.equal(train.dataset.inter_feat["item_id_list"], stored)   # augmentations work on copies
