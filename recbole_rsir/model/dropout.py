"""Dropout whose mask comes from one uniform draw per element.

torch's CPU dropout draws its mask with ``bernoulli_``, so its forward and backward took about
three times as long here as comparing uniform draws with ``p`` (benchmarks/bench_training.py),
and it was a fifth of a profiled all-position SASRec epoch on Beauty. The mask has the same
law: each element is kept with probability ``1 - p`` and scaled by ``1 / (1 - p)``, drawn from
torch's global generator as before.
"""
import torch
from torch import nn


class FastDropout(nn.Dropout):
    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        if self.p >= 1.0:
            return x * 0.0
        keep = (torch.rand_like(x) >= self.p).to(x.dtype).mul_(1.0 / (1.0 - self.p))
        return x * keep


def use_fast_dropout(model):
    """Give every plain ``nn.Dropout`` of ``model`` the fast mask (same settings, same law)."""
    for module in model.modules():
        if type(module) is nn.Dropout:
            module.__class__ = FastDropout
    return model
