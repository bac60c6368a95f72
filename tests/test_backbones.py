"""What every backbone must do in RecBole: learn, score consistently, and run in its Trainer."""
import math

import pytest
import recbole.model.sequential_recommender as recbole_seq
import torch
from conftest import build_tiny
from recbole.trainer import Trainer

from recbole_rsir.model.backbone import is_backbone
from recbole_rsir.utils import get_model

SMALL = {
    "SASRec": {},
    "CL4SRec": {},
    "HSTU": {"n_layers": 2, "n_heads": 2, "attention_dim": 4, "linear_dim": 4, "hidden_size": 8},
    "GRU4Rec": {},
}


def _build(path, model_name, **overrides):
    config, dataset, train, valid, test = build_tiny(path, model=model_name, **{**SMALL[model_name], **overrides})
    return config, get_model(model_name)(config, train.dataset), train, valid, test


@pytest.mark.parametrize("model_name, train_loss", [("SASRec", "full_ce"), ("CL4SRec", "full_ce"),
                                                    ("HSTU", "full_ce"), ("HSTU", "sampled_softmax"),
                                                    ("GRU4Rec", "full_ce")])
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


@pytest.mark.parametrize("model_name", ["SASRec", "GRU4Rec"])
def test_registered_recbole_models_are_recboles_own(tiny_data_path, model_name):
    """Same parameters and state_dict keys as RecBole's class, so its checkpoints load; same scores
    and gradients, to the bit, in evaluation and in training mode (dropout drawn in the same order)."""
    config, _, train, _, _ = build_tiny(tiny_data_path, model=model_name, n_layers=2, num_layers=2, n_heads=2,
                                        hidden_size=32, inner_size=64)
    recbole_class = getattr(recbole_seq, model_name)
    ours_class = get_model(model_name)
    assert ours_class is not recbole_class and issubclass(ours_class, recbole_class) and is_backbone(ours_class)
    theirs, ours = recbole_class(config, train.dataset), ours_class(config, train.dataset)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    batch = next(iter(train))
    for train_mode in (False, True):
        theirs.train(train_mode), ours.train(train_mode)
        torch.manual_seed(3)
        expected = theirs.full_sort_predict(batch)
        torch.manual_seed(3)
        assert torch.equal(ours.full_sort_predict(batch), expected)
    for model in (theirs, ours):
        torch.manual_seed(4)
        model.calculate_loss(batch).backward()
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours.parameters(), theirs.parameters()))
