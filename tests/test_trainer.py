"""The all-position training path and evaluation against RecBole's own computations."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import build_tiny
from recbole.evaluator import Collector
from recbole.model.sequential_recommender import SASRec as RecBoleSASRec
from recbole.trainer import Trainer

from recbole_rsir.data.loader import SequenceTrainLoader, length_chunks, pack
from recbole_rsir.data.merge import prefix_rows
from recbole_rsir.data.sequences import eval_targets, training_sequences
from recbole_rsir.errors import NonFiniteLossError
from recbole_rsir.evaluation.by_length import full_sort_by_length
from recbole_rsir.evaluation.collector import TopkCollector
from recbole_rsir.evaluation.history_mask import mask_earlier_items
from recbole_rsir.model.dropout import FastDropout
from recbole_rsir.trainer import positions as positions_module
from recbole_rsir.trainer.trainer import RSIRTrainer
from recbole_rsir.utils import get_model


def _setup(tiny_data_path, **overrides):
    config, dataset, train_data, valid_data, test_data = build_tiny(tiny_data_path, **overrides)
    model = get_model(config["model"])(config, train_data.dataset).double().eval()
    return config, train_data, valid_data, test_data, model, RSIRTrainer(config, model)


@pytest.mark.parametrize("model_name", ["SASRec", "GRU4Rec"])
def test_all_position_loss_equals_recbole_loss_over_all_prefixes(tiny_data_path, model_name):
    config, train_data, _, _, model, trainer = _setup(tiny_data_path, model=model_name, MAX_ITEM_LIST_LENGTH=50,
                                                      train_loss="full_ce")
    real = training_sequences(train_data.dataset)
    loader = SequenceTrainLoader(real, batch_size=len(real), max_len=50, seed=0)
    items, lengths, times = next(iter(loader))
    ours = trainer.position_loss(items, lengths, times)
    # RecBole's own loss on one row per prefix, averaged over every training target
    rows = prefix_rows(train_data.dataset, real)
    recbole = model.calculate_loss(rows)
    assert torch.allclose(ours, recbole, atol=1e-10)


def test_every_target_weighs_the_same_whatever_its_batch(tiny_data_path):
    config, train_data, _, _, model, trainer = _setup(tiny_data_path, MAX_ITEM_LIST_LENGTH=50, train_loss="full_ce")
    real = training_sequences(train_data.dataset)
    whole = trainer.position_loss(*next(iter(SequenceTrainLoader(real, len(real), 50, seed=0))))
    loader = SequenceTrainLoader(real, batch_size=4, max_len=50, seed=0)
    batches = list(loader)
    assert len({int((lengths - 1).sum()) for _, lengths, _ in batches}) > 1
    weighted = torch.stack([trainer.position_loss(*b, loader.targets_per_batch) for b in batches])
    per_batch_mean = torch.stack([trainer.position_loss(*b) for b in batches])
    # an epoch of weighted batches is the mean over all targets, once per batch: each target counts alike
    assert torch.allclose(weighted.sum(), whole * len(batches), atol=1e-10)
    assert not torch.allclose(per_batch_mean.sum(), whole * len(batches), atol=1e-6)


def _varied_batch(train_data):
    """A tiny batch whose rows are cut to lengths 2 to 12: several length parts, short rows."""
    real = training_sequences(train_data.dataset)
    items, lengths, times = next(iter(SequenceTrainLoader(real, 32, 20, seed=3)))
    lengths = lengths.minimum(torch.tensor([2, 3, 5, 9, 2, 4, 12, 7]))
    cut = torch.arange(items.shape[1]) >= lengths.unsqueeze(1)
    return items.masked_fill(cut, 0), lengths, times.masked_fill(cut, 0.0)


def _loss_and_grads(trainer, batch):
    trainer.model.zero_grad()
    torch.manual_seed(0)                   # CL4SRec's augmentations draw from torch's generator
    loss = trainer.position_loss(*batch, targets_per_batch=40.0)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]


@pytest.mark.parametrize("model_name", ["SASRec", "HSTU", "CL4SRec", "GRU4Rec"])
def test_length_chunks_give_the_loss_and_gradient_of_one_pass(tiny_data_path, monkeypatch, model_name):
    config, train_data, _, _, model, trainer = _setup(tiny_data_path, model=model_name, train_loss="full_ce")
    batch = _varied_batch(train_data)
    assert len(length_chunks(batch[1])) == 3
    monkeypatch.setattr(model, "packs_rows", False)    # SASRec would pack

    loss, grads = _loss_and_grads(trainer, batch)
    monkeypatch.setattr(positions_module, "length_chunks", lambda lengths: [torch.arange(len(lengths))])
    one_loss, one_grads = _loss_and_grads(trainer, batch)
    assert torch.allclose(loss, one_loss, atol=1e-10)
    assert len(grads) == len(one_grads) > 0
    assert all(torch.allclose(g, h, atol=1e-9) for g, h in zip(grads, one_grads))


@pytest.mark.parametrize("model_name", ["SASRec", "CL4SRec"])
def test_packed_rows_give_the_loss_and_gradient_of_separate_rows(tiny_data_path, monkeypatch, model_name):
    """CL4SRec packs its next-item rows and its augmented views alike."""
    config, train_data, _, _, model, trainer = _setup(tiny_data_path, model=model_name, train_loss="full_ce")
    batch = _varied_batch(train_data)
    assert len(pack(*batch[:2]).inputs) < len(batch[1])         # some rows do hold several sequences

    assert model.can_pack()
    loss, grads = _loss_and_grads(trainer, batch)
    monkeypatch.setattr(model, "packs_rows", False)
    chunked_loss, chunked_grads = _loss_and_grads(trainer, batch)
    assert torch.allclose(loss, chunked_loss, atol=1e-10)
    assert len(grads) == len(chunked_grads) > 0
    assert all(torch.allclose(g, h, atol=1e-9) for g, h in zip(grads, chunked_grads))


def test_adam_is_fused_and_steps_as_recboles_adam(tiny_data_path):
    config, train_data, _, _, model, trainer = _setup(tiny_data_path, learning_rate=0.01, weight_decay=0.1)
    assert type(trainer.optimizer) is torch.optim.Adam and trainer.optimizer.defaults["fused"]
    plain = torch.optim.Adam([p.detach().clone().requires_grad_() for p in model.parameters()],
                             lr=0.01, weight_decay=0.1)
    for _ in range(3):
        for p, q in zip(model.parameters(), plain.param_groups[0]["params"]):
            p.grad = torch.sin(p.detach() * 3 + 1)
            q.grad = p.grad.clone()
        trainer.optimizer.step()
        plain.step()
    assert all(torch.allclose(p, q, atol=1e-12) for p, q in zip(model.parameters(), plain.param_groups[0]["params"]))
    assert not torch.allclose(next(model.parameters()), next(iter(_setup(tiny_data_path)[4].parameters())))
    assert type(_setup(tiny_data_path, learner="sgd")[5].optimizer) is torch.optim.SGD   # others untouched


def test_trainer_gives_the_model_fast_dropout(tiny_data_path):
    config, train_data, _, _, model, _ = _setup(tiny_data_path, hidden_dropout_prob=0.3, attn_dropout_prob=0.1)
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) > 2 and {type(m) for m in drops} == {FastDropout}
    stock = RecBoleSASRec(config, train_data.dataset)           # the same modules, the same rates
    assert [m.p for m in drops] == [m.p for m in stock.modules() if isinstance(m, torch.nn.Dropout)]
    assert {m.p for m in drops} == {0.3, 0.1}


def test_sampled_softmax_loss_equals_manual_computation(tiny_data_path):
    config, train_data, _, _, model, trainer = _setup(tiny_data_path, train_loss="sampled_softmax",
                                                      train_neg_samples=5)
    real = training_sequences(train_data.dataset)
    items, lengths, times = next(iter(SequenceTrainLoader(real, 8, 20, seed=0)))
    state = trainer._neg_generator.get_state()
    loss = trainer.position_loss(items, lengths, times)
    negatives = torch.randint(1, model.n_items, (5,), generator=torch.Generator().set_state(state))
    out = model.sequence_output(items[:, :-1], lengths - 1)
    expected = []
    for b in range(len(lengths)):
        for t in range(int(lengths[b]) - 1):
            h, target = out[b, t], int(items[b, t + 1])
            scores = [h @ model.item_embedding.weight[target]]
            scores += [h @ model.item_embedding.weight[n] if n != target else torch.tensor(-math.inf).double()
                       for n in negatives.tolist()]
            expected.append(-F.log_softmax(torch.stack(scores), 0)[0])
    assert torch.allclose(loss, torch.stack(expected).mean(), atol=1e-10)


def test_length_trimmed_evaluation_scores_equal_padded_scores(tiny_data_path):
    config, _, valid_data, _, model, _ = _setup(tiny_data_path)
    for batch in valid_data:
        interaction = batch[0]
        assert torch.allclose(full_sort_by_length(model, interaction), model.full_sort_predict(interaction)
                              .view(len(interaction), -1), atol=1e-10)


def test_topk_rows_equal_recboles_collector(tiny_data_path):
    """Ties, rows without positives, rows with several, a repeated pair, positives outside the top k."""
    config, *_ = _setup(tiny_data_path)
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (40, 30), generator=generator).float()     # many ties
    scores[:, 0] = -math.inf
    positive_u = torch.tensor([0, 0, 0, 3, 5, 5, 7, 7, 7, 7, 39, 12, 12])
    positive_i = torch.tensor([1, 2, 29, 4, 6, 6, 1, 2, 3, 4, 29, 8, 9])
    collected = []
    for collector in (Collector(config), TopkCollector(config)):
        for _ in range(2):                                     # two batches: rows are appended
            collector.eval_batch_collect(scores, None, positive_u, positive_i)
        collected.append(collector.get_data_struct()["rec.topk"])
    recbole, own = collected
    assert own.dtype == recbole.dtype and own.shape == (80, max(config["topk"]) + 1)
    assert torch.equal(own, recbole) and own[:, -1].sum() == 2 * 12


def test_evaluation_with_the_topk_collector_equals_recboles(tiny_data_path):
    config, _, valid_data, test_data, model, trainer = _setup(tiny_data_path)
    assert isinstance(trainer.eval_collector, TopkCollector)
    own = [trainer.evaluate(data, load_best_model=False) for data in (valid_data, test_data)]
    trainer.eval_collector = Collector(config)
    assert own == [trainer.evaluate(data, load_best_model=False) for data in (valid_data, test_data)]
    assert any(v > 0 for result in own for v in result.values())


def test_exclude_history_masks_exactly_the_users_earlier_items(tiny_data_path):
    config, train_data, valid_data, test_data, model, trainer = _setup(tiny_data_path, exclude_history_items=True)
    real = training_sequences(train_data.dataset)
    history = {int(u): real[i].tolist() for i, u in enumerate(real.users)}
    valid_targets = eval_targets(valid_data.dataset)
    loaders = mask_earlier_items(train_data.dataset, valid_data, test_data)
    recbole_trainer = Trainer(config, model)         # RecBole's own evaluation reads the same mask
    recbole_trainer.tot_item_num = valid_data.dataset.item_num     # as its evaluate() sets it
    for data, extra in zip(loaders, ({}, valid_targets)):
        for batch in data:
            for evaluating in (trainer, recbole_trainer):
                interaction, scores, _, _ = evaluating._full_sort_batch_eval(batch)
                for row, user in enumerate(interaction["user_id"].tolist()):
                    masked = set(torch.nonzero(torch.isinf(scores[row])).view(-1).tolist())
                    assert masked == {0} | set(history[user]) | ({extra[user]} if user in extra else set())
    result = trainer.evaluate(loaders[1], load_best_model=False)
    assert all(math.isfinite(v) for v in result.values())


def test_fit_saves_weights_only_checkpoint_and_stops_on_nan(tiny_data_path):
    config, train_data, valid_data, _, model, trainer = _setup(tiny_data_path)
    model.float().train()
    real = training_sequences(train_data.dataset)
    loader = SequenceTrainLoader(real, 16, 20, seed=0, dataset=train_data.dataset)
    trainer.fit(loader, valid_data, saved=True, show_progress=False, verbose=False)
    state = torch.load(trainer.saved_model_file, weights_only=True)
    assert set(state["state_dict"]) == set(model.state_dict())
    assert state["epoch"] == trainer.best_epoch >= 0
    with torch.no_grad():
        model.item_embedding.weight[3].fill_(math.nan)
    with pytest.raises(NonFiniteLossError, match="nan"):
        trainer.fit(loader, valid_data, saved=False, show_progress=False, verbose=False)


def test_training_reduces_loss_and_beats_untrained_model(tiny_data_path):
    config, train_data, valid_data, test_data, model, trainer = _setup(tiny_data_path, epochs=15,
                                                                       learning_rate=0.01)
    model.float()
    before = trainer.evaluate(test_data, load_best_model=False)
    real = training_sequences(train_data.dataset)
    loader = SequenceTrainLoader(real, 16, 20, seed=0, dataset=train_data.dataset)
    trainer.fit(loader, valid_data, saved=True, show_progress=False, verbose=False)
    losses = list(trainer.train_loss_dict.values())
    assert losses[-1] < losses[0]
    trainer.load_best()
    after = trainer.evaluate(test_data, load_best_model=False)
    assert after["recall@10"] > before["recall@10"] + 0.2
