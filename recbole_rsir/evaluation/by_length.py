"""Full ranking of a backbone in groups of similar-length users: RecBole's scores, faster."""
import math

import torch

from recbole_rsir.model.backbone import is_backbone

EVAL_BUCKET = 256
"""Users scored together in evaluation, grouped by sequence length."""


def full_sort_by_length(model, interaction):
    """``model.full_sort_predict`` with each group of similar-length users trimmed to its longest.

    RecBole pads every evaluation sequence to MAX_ITEM_LIST_LENGTH; for a causal model the
    padding after a sequence cannot change its last output, so dropping it gives the same
    scores at a fraction of the cost (most sequences are far shorter than the padding).
    """
    lengths = interaction[model.ITEM_SEQ_LEN]
    max_len = interaction[model.ITEM_SEQ].shape[1]
    scores = None
    for rows in torch.argsort(lengths).split(EVAL_BUCKET):
        part = interaction[rows]
        width = int(lengths[rows].max())
        for name, value in part.interaction.items():
            if value.dim() >= 2 and value.shape[1] == max_len:
                part.interaction[name] = value[:, :width]
        part_scores = model.full_sort_predict(part)
        if scores is None:
            scores = part_scores.new_empty(len(lengths), part_scores.shape[-1])
        scores[rows] = part_scores.view(len(rows), -1)
    return scores


class LengthBucketedEvaluation:
    """Trainer mixin: a backbone is ranked by :func:`full_sort_by_length`, any other model as
    RecBole ranks it; the padding item and ``history_index`` are masked as RecBole masks them."""

    def _full_sort_batch_eval(self, batched_data):
        if not is_backbone(self.model):
            return super()._full_sort_batch_eval(batched_data)
        interaction, history_index, positive_u, positive_i = batched_data
        scores = full_sort_by_length(self.model, interaction.to(self.device))
        scores[:, 0] = -math.inf
        if history_index is not None:
            scores[history_index] = -math.inf
        return interaction, scores, positive_u, positive_i
