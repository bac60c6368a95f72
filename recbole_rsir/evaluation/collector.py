"""RecBole's metric collector, with its ``rec.topk`` rows built without a catalogue-wide matrix.

RecBole marks each batch's positives in a fresh ``[users, items]`` int matrix, sums it per row
and gathers the top-k columns from it; on a full ranking that matrix costs more than scoring
the catalogue does. The same rows follow from the positive pairs alone: each (distinct) pair
hits the top-k column holding its item, and a row's count of positives is a bincount. Every
other resource is RecBole's own code, and the Evaluator reads the rows unchanged.
"""
import torch
from recbole.evaluator import Collector


def topk_rows(scores, positive_u, positive_i, k):
    """``[N, k + 1]`` int64, RecBole's ``rec.topk``: for each of a row's top-k items whether it is a
    positive of the row, then the row's number of distinct positives."""
    _, topk_index = torch.topk(scores, k, dim=-1)
    n_rows, n_items = scores.shape
    pairs = torch.unique(positive_u.long() * n_items + positive_i.long())     # a repeated pair counts once
    users, items = pairs // n_items, pairs % n_items
    hits = torch.zeros(n_rows, k, dtype=torch.long, device=scores.device)
    hits.index_put_((users,), (topk_index[users] == items.unsqueeze(1)).long(), accumulate=True)
    counts = torch.bincount(users, minlength=n_rows).unsqueeze(1)
    return torch.cat((hits, counts), dim=1)


class TopkCollector(Collector):
    """:class:`recbole.evaluator.Collector` whose ``rec.topk`` comes from :func:`topk_rows`."""

    def __init__(self, config):
        super().__init__(config)
        self.own_topk = self.register.need("rec.topk")
        setattr(self.register, "rec.topk", False)     # RecBole's code collects everything else

    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        if self.own_topk:
            self.data_struct.update_tensor("rec.topk", topk_rows(scores_tensor, positive_u, positive_i,
                                                                 max(self.topk)))
        super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
