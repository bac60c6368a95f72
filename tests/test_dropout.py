"""FastDropout: the law of torch's dropout, drawn faster."""
import torch
from torch import nn

from recbole_rsir.model.dropout import FastDropout, use_fast_dropout


def test_mask_keeps_one_minus_p_and_rescales():
    torch.manual_seed(0)
    drop = FastDropout(0.3)
    x = torch.full((400_000,), 2.0, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.003
    assert torch.allclose(y[kept], torch.tensor(2.0 / 0.7))
    assert abs(y.mean().item() - 2.0) < 0.01                       # unbiased, as torch's dropout
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() / 0.7)                 # gradient through the same mask


def test_eval_mode_and_edge_rates_are_torchs():
    x = torch.randn(50, 8)
    assert torch.equal(FastDropout(0.5).eval()(x), x)
    assert torch.equal(FastDropout(0.0)(x), x)
    assert torch.equal(FastDropout(1.0)(x), nn.Dropout(1.0)(x))


def test_use_fast_dropout_swaps_plain_dropout_only():
    class Custom(nn.Dropout):
        pass

    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.2), nn.Sequential(nn.Dropout(0.4)), Custom(0.1))
    use_fast_dropout(model)
    assert [type(m) for m in model.modules() if isinstance(m, nn.Dropout)] == [FastDropout, FastDropout, Custom]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.4, 0.1]
