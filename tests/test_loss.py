"""The chunked catalogue cross-entropy against ``F.cross_entropy`` on the full logits."""
import pytest
import torch
import torch.nn.functional as F

from recbole_rsir.model.loss import catalogue_cross_entropy


def _inputs(rows=37, d=8, n_items=23, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, d, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(n_items, d, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, n_items, (rows,), generator=g)
    return hidden, weight, target


@pytest.mark.parametrize("chunk_rows", [1, 5, 36, 37, 1000])
def test_loss_and_gradients_equal_full_logits_cross_entropy(chunk_rows):
    hidden, weight, target = _inputs()
    ours = catalogue_cross_entropy(hidden, weight, target, chunk_elements=chunk_rows * weight.shape[0])
    grads = torch.autograd.grad(3.0 * ours, (hidden, weight))
    reference = F.cross_entropy(hidden @ weight.T, target)
    expected = torch.autograd.grad(3.0 * reference, (hidden, weight))
    assert torch.allclose(ours, reference, atol=1e-12)
    for got, want in zip(grads, expected):
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-12)


def test_gradient_flows_through_a_transformed_item_table():
    """HSTU scores against normalised embeddings over a temperature: the chain rule must reach them."""
    hidden, raw, target = _inputs(rows=19, n_items=11, seed=1)
    table = lambda w: F.normalize(w, dim=-1) / 0.05
    ours = catalogue_cross_entropy(hidden, table(raw), target, chunk_elements=4 * 11)
    reference = F.cross_entropy(hidden @ table(raw).T, target)
    assert torch.allclose(torch.autograd.grad(ours, raw)[0], torch.autograd.grad(reference, raw)[0], atol=1e-10)


def test_large_logits_stay_finite():
    hidden, weight, target = _inputs(rows=6, n_items=9, seed=2)
    hidden = (hidden.detach() * 1e3).requires_grad_()
    ours = catalogue_cross_entropy(hidden, weight, target, chunk_elements=2 * 9)
    assert torch.isfinite(ours)
    assert torch.allclose(ours, F.cross_entropy(hidden @ weight.T, target), rtol=1e-12)


def test_without_grad_gives_the_same_value():
    hidden, weight, target = _inputs(seed=3)
    with torch.no_grad():
        ours = catalogue_cross_entropy(hidden, weight, target, chunk_elements=3 * weight.shape[0])
    assert not ours.requires_grad
    assert torch.allclose(ours, F.cross_entropy(hidden @ weight.T, target), atol=1e-12)
