"""The next-item losses, shared by the all-position trainer and backbones' calculate_loss."""
import math

import torch
import torch.nn.functional as F

from recbole_rsir.model.causal import item_logits, target_logits


def next_item_loss(model, hidden, target, kind, neg_samples, generator=None):
    """Cross-entropy of ``target`` given ``hidden`` (rows of outputs).

    ``full_ce`` scores the whole catalogue. ``sampled_softmax`` scores the target against
    ``neg_samples`` uniform negatives shared by all rows (a negative equal to a row's own
    target is masked), which removes the catalogue-sized matmul from training.
    """
    if kind == "full_ce":
        return F.cross_entropy(item_logits(model, hidden), target)
    negatives = torch.randint(1, model.n_items, (neg_samples,), generator=generator, device=target.device)
    negative = item_logits(model, hidden, negatives)
    negative = negative.masked_fill(negatives.unsqueeze(0) == target.unsqueeze(1), -math.inf)
    logits = torch.cat([target_logits(model, hidden, target).unsqueeze(1), negative], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(target))
