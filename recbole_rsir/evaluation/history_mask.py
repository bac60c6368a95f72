"""The RSIR reference code's protocol: each user's earlier items are masked when ranking.

RecBole's full ranking of sequential models keeps a user's earlier items among the candidates;
the reference code ranks them last. The items to mask for a split are built from the datasets:
the user's whole training sequence, plus the targets of the evaluation splits before it (the
validation item, when testing). They reach the scores through RecBole's own mechanism: the
loader yields them as ``history_index``, as RecBole's loaders for general models do, and every
RecBole Trainer's full-sort evaluation sets those scores to -inf.
"""
import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from scipy.sparse import csr_matrix

from recbole_rsir.data.sequences import eval_targets, training_sequences


def history_matrix(histories, n_users, n_items):
    """``csr [n_users, n_items]`` with a 1 for each (user, item) in ``{user: items}``."""
    users = np.repeat(np.fromiter(histories.keys(), dtype=np.int64),
                      [len(v) for v in histories.values()])
    items = np.concatenate([np.asarray(v, dtype=np.int64) for v in histories.values()])
    return csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items))


class EarlierItemsMasked(FullSortEvalDataLoader):
    """RecBole's full-sort evaluation loader of ``eval_data``'s split whose batches also name,
    as ``history_index``, the items in ``earlier`` (``csr [n_users, n_items]``) of their users."""

    def __init__(self, eval_data, earlier):
        self.earlier = earlier
        super().__init__(eval_data.config, eval_data._dataset, eval_data._sampler, shuffle=False)

    def collate_fn(self, index):
        interaction, _, positive_u, positive_i = super().collate_fn(index)
        rows, cols = self.earlier[interaction[self.uid_field].numpy()].nonzero()
        return interaction, (torch.from_numpy(rows).long(), torch.from_numpy(cols).long()), positive_u, positive_i


def mask_earlier_items(train_dataset, *eval_loaders):
    """One :class:`EarlierItemsMasked` per loader, in split order (validation, then test): each
    masks the training sequence and the targets of the splits before it."""
    real = training_sequences(train_dataset)
    histories = {int(u): real[i].tolist() for i, u in enumerate(real.users)}
    masked = []
    for eval_data in eval_loaders:
        dataset = eval_data._dataset
        masked.append(EarlierItemsMasked(eval_data, history_matrix(histories, dataset.user_num, dataset.item_num)))
        targets = eval_targets(dataset)
        histories = {u: items + [targets[u]] if u in targets else items for u, items in histories.items()}
    return masked
