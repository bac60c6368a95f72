"""CL4SRec: SASRec trained with a contrastive term between augmented views of each sequence.

Xie et al., "Contrastive Learning for Sequential Recommendation", ICDE 2022.

The encoder is this package's SASRec, unchanged but for the mask token's input vector
(:meth:`CL4SRec.embed_items`): ``forward``, ``sequence_output``, ``predict``,
``full_sort_predict`` and the key/value cache are SASRec's own, so anything that works on a
SASRec (RecBole's Trainer, the generator's cache) works here. Training adds ``lmd * InfoNCE``:
each sequence of the batch gets two views made by two different operators among

- crop: keep a random contiguous ``eta`` fraction (the view is shorter),
- mask: replace a random ``gamma`` fraction of the items by the mask token,
- reorder: shuffle a random contiguous ``beta`` fraction,

and the two views of a sequence must be told apart from the other ``2B - 2`` views of the
batch (NT-Xent, dot-product similarity over ``tau``).

The mask token has id ``n_items`` and its own embedding (``mask_embedding``), kept apart
from ``item_embedding`` so that the item table, and every score, covers exactly the
``n_items`` real ids (padding included, as in RecBole): the mask token is never scored.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_rsir.data.loader import pack
from recbole_rsir.model.sequential_recommender.sasrec import SASRec

CROP, MASK, REORDER = 0, 1, 2


def _window(lengths, fraction, min_size):
    """Per row: a window of ``max(min_size, floor(fraction * length))`` items at a random start."""
    size = torch.clamp((fraction * lengths.float()).floor().long(), min=min_size)
    size = torch.minimum(size, lengths)
    span = (lengths - size + 1).float()
    start = (torch.rand(lengths.shape, device=lengths.device) * span).long()
    return start, size


def crop(item_seq, item_seq_len, eta):
    """Contiguous ``eta`` fraction (at least one item), moved to the front; new lengths."""
    start, size = _window(item_seq_len, eta, 1)
    positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0)
    source = (start.unsqueeze(1) + positions).clamp(max=item_seq.size(1) - 1)
    view = torch.gather(item_seq, 1, source)
    return view.masked_fill(positions >= size.unsqueeze(1), 0), size


def mask(item_seq, item_seq_len, gamma, mask_token):
    """``floor(gamma * length)`` positions, chosen uniformly, replaced by ``mask_token``."""
    positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0)
    valid = positions < item_seq_len.unsqueeze(1)
    # a random order of each row's valid positions; padding sorts last
    keys = torch.rand(item_seq.shape, device=item_seq.device).masked_fill(~valid, 2.0)
    rank = torch.argsort(torch.argsort(keys, dim=1), dim=1)
    n_masked = (gamma * item_seq_len.float()).floor().long()
    return item_seq.masked_fill(rank < n_masked.unsqueeze(1), mask_token), item_seq_len


def reorder(item_seq, item_seq_len, beta):
    """Items of a contiguous ``beta`` fraction put in a random order; the rest stay in place."""
    start, size = _window(item_seq_len, beta, 0)
    positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0)
    inside = (positions >= start.unsqueeze(1)) & (positions < (start + size).unsqueeze(1))
    # outside the window a position keeps its integer key; inside, keys are random in
    # (start - 1/2, start + size - 1/2), so sorting shuffles exactly the window
    noise = start.unsqueeze(1) - 0.5 + torch.rand(item_seq.shape, device=item_seq.device) * size.unsqueeze(1)
    keys = torch.where(inside, noise, positions.float())
    return torch.gather(item_seq, 1, torch.argsort(keys, dim=1)), item_seq_len


def operator_pairs(batch_size, device):
    """``[B, 2]``: per row, an ordered pair of different operators, uniform over the six pairs."""
    return torch.argsort(torch.rand(batch_size, 3, device=device), dim=1)[:, :2]


class CL4SRec(SASRec):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.lmd = config["lmd"]
        self.tau = config["tau"]
        self.eta = config["eta"]
        self.gamma = config["gamma"]
        self.beta = config["beta"]
        self.mask_token = self.n_items
        self.mask_embedding = nn.Embedding(1, self.hidden_size)
        self._init_weights(self.mask_embedding)

    # ---- encoder --------------------------------------------------------------------
    def embed_items(self, item_seq):
        """Item embeddings, with the mask token's own vector where ``item_seq == n_items``."""
        is_mask = item_seq == self.mask_token
        emb = self.item_embedding(item_seq.masked_fill(is_mask, 0))
        return torch.where(is_mask.unsqueeze(-1), self.mask_embedding.weight[0], emb)

    # ---- contrastive term -------------------------------------------------------------
    def augment(self, item_seq, item_seq_len, operators):
        """One view per row, row ``b`` made by operator ``operators[b]``; inputs untouched."""
        views = (
            crop(item_seq, item_seq_len, self.eta),
            mask(item_seq, item_seq_len, self.gamma, self.mask_token),
            reorder(item_seq, item_seq_len, self.beta),
        )
        # views of different lengths (crop) are aligned on the left, so picking per row is a where
        pick = [operators == op for op in (CROP, MASK, REORDER)]
        seq = sum(torch.where(p.unsqueeze(1), v[0], 0) for p, v in zip(pick, views))
        length = sum(torch.where(p, v[1], 0) for p, v in zip(pick, views))
        return seq, length

    def two_views(self, item_seq, item_seq_len):
        """Two views of each row, made by two different operators."""
        operators = operator_pairs(item_seq.size(0), item_seq.device)
        return (self.augment(item_seq, item_seq_len, operators[:, 0]),
                self.augment(item_seq, item_seq_len, operators[:, 1]))

    def info_nce(self, z1, z2):
        """NT-Xent over the ``2B`` views: a view's positive is its twin, the rest are negatives."""
        batch = z1.size(0)
        z = torch.cat([z1, z2], dim=0)
        sim = torch.matmul(z, z.transpose(0, 1)) / self.tau
        sim = sim.masked_fill(torch.eye(2 * batch, dtype=torch.bool, device=z.device), float("-inf"))
        twin = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)]).to(z.device)
        return F.cross_entropy(sim, twin)

    def view_outputs(self, item_seq, item_seq_len):
        """Each view's output at its last item, from one pass: the views packed side by side
        where the model packs rows (most views are far shorter than the batch's width), else
        trimmed to the longest."""
        if not self.can_pack():
            width = int(item_seq_len.max())
            return self.gather_indexes(self.sequence_output(item_seq[:, :width], item_seq_len), item_seq_len - 1)
        packed = pack(F.pad(item_seq, (0, 1)), item_seq_len + 1)     # pack() takes inputs plus a target column
        output = self.packed_output(packed)
        return output.reshape(-1, output.shape[-1])[packed.last]

    def auxiliary_loss(self, item_seq, item_seq_len, time_seq=None):
        (seq1, len1), (seq2, len2) = self.two_views(item_seq, item_seq_len)
        z1, z2 = self.view_outputs(torch.cat([seq1, seq2]), torch.cat([len1, len2])).chunk(2)
        return self.lmd * self.info_nce(z1, z2)

    def calculate_loss(self, interaction):
        next_item = super().calculate_loss(interaction)
        return next_item + self.auxiliary_loss(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
