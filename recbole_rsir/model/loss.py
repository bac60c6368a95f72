"""The next-item losses, shared by the all-position trainer and backbones' calculate_loss."""
import math

import torch
import torch.nn.functional as F

CE_CHUNK_ELEMENTS = 1 << 20
"""Logits held at once by :func:`catalogue_cross_entropy` (4 MiB): small enough to stay in cache."""


class _CatalogueCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T`` against ``target``, a few rows at a time.

    ``F.cross_entropy`` on the full ``[rows, n_items]`` logits makes about eight passes over a
    matrix far larger than the cache (log-softmax, its gradient, the one-hot scatter, the two
    matmuls); on Beauty that traffic is most of an epoch. Here each chunk of rows is turned into
    its loss and its gradient while it is still in cache, and only ``[rows, d]`` and
    ``[n_items, d]`` gradients are kept for backward.
    """

    @staticmethod
    def forward(ctx, hidden, weight, target, chunk):
        want_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        total = hidden.new_zeros((), dtype=torch.float64)
        grad_hidden = torch.empty_like(hidden) if want_grad else None
        grad_weight = torch.zeros_like(weight) if want_grad else None
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start:start + chunk], target[start:start + chunk]
            logits = h @ weight.T
            picked = logits.gather(1, t.unsqueeze(1)).squeeze(1)
            peak = logits.amax(1, keepdim=True)
            probs = logits.sub_(peak).exp_()           # in place: one chunk buffer throughout
            norm = probs.sum(1, keepdim=True)
            total += (peak.squeeze(1) + norm.squeeze(1).log() - picked).sum(dtype=torch.float64)
            if want_grad:
                probs.div_(norm)
                probs[torch.arange(len(t), device=t.device), t] -= 1.0
                grad_hidden[start:start + chunk] = probs @ weight
                grad_weight.addmm_(probs.T, h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.rows = hidden.shape[0]
        return (total / ctx.rows).to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_output / ctx.rows
        return grad_hidden * scale, grad_weight * scale, None, None


def catalogue_cross_entropy(hidden, weight, target, chunk_elements=CE_CHUNK_ELEMENTS):
    """``F.cross_entropy(hidden @ weight.T, target)`` (mean), computed chunk by chunk."""
    if hidden.shape[0] == 0:
        return F.cross_entropy(hidden @ weight.T, target)
    chunk = max(1, chunk_elements // max(1, weight.shape[0]))
    return _CatalogueCrossEntropy.apply(hidden, weight, target, chunk)


def next_item_loss(model, hidden, target, kind, neg_samples, generator=None):
    """Cross-entropy of ``target`` given ``hidden`` (rows of a backbone's outputs).

    ``full_ce`` scores the whole catalogue. ``sampled_softmax`` scores the target against
    ``neg_samples`` uniform negatives shared by all rows (a negative equal to a row's own
    target is masked), which removes the catalogue-sized matmul from training.
    """
    if kind == "full_ce":
        return catalogue_cross_entropy(hidden, model.item_embeddings(), target)
    negatives = torch.randint(1, model.n_items, (neg_samples,), generator=generator, device=target.device)
    negative = model.item_logits(hidden, negatives)
    negative = negative.masked_fill(negatives.unsqueeze(0) == target.unsqueeze(1), -math.inf)
    logits = torch.cat([model.target_logits(hidden, target).unsqueeze(1), negative], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(target))
