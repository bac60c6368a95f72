"""HSTU: Hierarchical Sequential Transduction Units, in dense PyTorch.

Zhai et al., "Actions Speak Louder than Words: Trillion-Parameter Sequential Transducers
for Generative Recommendations", ICML 2024.

Each block, on input ``x [B, L, d]``::

    U, V, Q, K = split(SiLU(Linear(LayerNorm(x))))        # no bias, no LayerNorm weights
    A = SiLU(Q K^T + rab) / N, zero where key > query or the key is padding   (per head)
    x = x + Dropout(Linear(U * LayerNorm(A V)))

- Pointwise attention, no softmax. ``N = MAX_ITEM_LIST_LENGTH``, a constant: the reference
  pads every sequence to that length and divides by it, and a constant keeps a position's
  output independent of how wide its batch happens to be padded (the all-position trainer
  trims batches, the generator grows contexts one item at a time) and of later items. It
  does not average over the keys actually seen, which would undo what the paper wants from
  dropping the softmax: the output keeps the *amount* of matching history.
- ``rab`` (one per block, shared by its heads) = a learned bias per relative position
  ``i - j`` + a learned bias per bucket of the time gap ``|t_i - t_j|`` between the query's
  own timestamp and the key's. The reference buckets the gap from the key to the *next*
  item's time; the query's own time is used here so that the time of the item being
  predicted never enters. Buckets are logarithmic:
  ``floor(ln(max(gap, 1)) / ln(time_bucket_base))``, gaps in seconds, clamped to
  ``num_time_buckets - 1``. Without timestamps (``time_seq=None``) the time term is absent.
- Input: item embedding * sqrt(d) + learned absolute position embedding, dropout; padding
  positions zeroed. Output: L2-normalised; an item's score is the cosine between output and
  item embedding over ``temperature``.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender

from recbole_rsir.model.loss import next_item_loss


def time_buckets(time_seq, num_buckets, base):
    """``[B, L, L]`` log bucket of ``|t_i - t_j|`` (seconds) for query ``i`` and key ``j``."""
    gap = (time_seq.unsqueeze(2) - time_seq.unsqueeze(1)).abs().clamp(min=1.0)
    return (torch.log(gap) / math.log(base)).floor().long().clamp(0, num_buckets - 1)


class RelativeAttentionBias(nn.Module):
    """Learned bias by relative position, plus by log time gap when timestamps are given."""

    def __init__(self, max_len, num_time_buckets, time_bucket_base):
        super().__init__()
        self.max_len = max_len
        self.num_time_buckets = num_time_buckets
        self.time_bucket_base = time_bucket_base
        self.position_bias = nn.Embedding(max_len, 1)
        self.time_bias = nn.Embedding(num_time_buckets, 1)

    def forward(self, length, time_seq=None):
        """``[1 or B, L, L]``; entries with key after query are clamped to offset 0 (masked later)."""
        positions = torch.arange(length, device=self.position_bias.weight.device)
        offset = (positions.unsqueeze(1) - positions.unsqueeze(0)).clamp(0, self.max_len - 1)
        bias = self.position_bias(offset).squeeze(-1).unsqueeze(0)
        if time_seq is not None:
            buckets = time_buckets(time_seq, self.num_time_buckets, self.time_bucket_base)
            bias = bias + self.time_bias(buckets).squeeze(-1)
        return bias


class HSTUBlock(nn.Module):
    def __init__(self, hidden_size, n_heads, attention_dim, linear_dim, max_len,
                 num_time_buckets, time_bucket_base, hidden_dropout_prob, attn_dropout_prob,
                 layer_norm_eps):
        super().__init__()
        self.n_heads = n_heads
        self.attention_dim = attention_dim
        self.linear_dim = linear_dim
        self.normaliser = max_len
        self.eps = layer_norm_eps
        self.uvqk = nn.Linear(hidden_size, n_heads * (2 * linear_dim + 2 * attention_dim), bias=False)
        self.rab = RelativeAttentionBias(max_len, num_time_buckets, time_bucket_base)
        self.attn_dropout = nn.Dropout(attn_dropout_prob)
        self.output = nn.Linear(n_heads * linear_dim, hidden_size)
        self.dropout = nn.Dropout(hidden_dropout_prob)

    def forward(self, x, attention_mask, time_seq=None):
        """``x [B, L, d]``, ``attention_mask [B, 1, L, L]`` bool (True = query may see key)."""
        batch, length, _ = x.shape
        normed = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        u, v, q, k = torch.split(
            F.silu(self.uvqk(normed)),
            [self.n_heads * self.linear_dim] * 2 + [self.n_heads * self.attention_dim] * 2,
            dim=-1,
        )
        q = q.view(batch, length, self.n_heads, self.attention_dim)
        k = k.view(batch, length, self.n_heads, self.attention_dim)
        v = v.view(batch, length, self.n_heads, self.linear_dim)
        scores = torch.einsum("bihd,bjhd->bhij", q, k) + self.rab(length, time_seq).unsqueeze(1)
        attn = F.silu(scores) / self.normaliser
        attn = self.attn_dropout(attn.masked_fill(~attention_mask, 0.0))
        mixed = torch.einsum("bhij,bjhd->bihd", attn, v).reshape(batch, length, -1)
        mixed = F.layer_norm(mixed, mixed.shape[-1:], eps=self.eps)
        return x + self.dropout(self.output(u * mixed))


class HSTU(SequentialRecommender):
    TIME_SEQ = "timestamp_list"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hidden_size = config["hidden_size"]
        self.n_layers = config["n_layers"]
        self.n_heads = config["n_heads"]
        self.attention_dim = config["attention_dim"]
        self.linear_dim = config["linear_dim"]
        self.hidden_dropout_prob = config["hidden_dropout_prob"]
        self.attn_dropout_prob = config["attn_dropout_prob"]
        self.layer_norm_eps = config["layer_norm_eps"]
        self.initializer_range = config["initializer_range"]
        self.temperature = config["temperature"]
        self.num_time_buckets = config["num_time_buckets"]
        self.time_bucket_base = config["time_bucket_base"]
        self.train_loss = config["train_loss"]
        self.train_neg_samples = config["train_neg_samples"]

        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length, self.hidden_size)
        self.dropout = nn.Dropout(self.hidden_dropout_prob)
        self.blocks = nn.ModuleList(
            HSTUBlock(self.hidden_size, self.n_heads, self.attention_dim, self.linear_dim,
                      self.max_seq_length, self.num_time_buckets, self.time_bucket_base,
                      self.hidden_dropout_prob, self.attn_dropout_prob, self.layer_norm_eps)
            for _ in range(self.n_layers)
        )
        self.apply(self._init_weights)
        for block in self.blocks:
            nn.init.xavier_uniform_(block.output.weight)  # as the reference initialises it

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    # ---- encoder --------------------------------------------------------------------
    def sequence_output(self, item_seq, item_seq_len, time_seq=None):
        length = item_seq.size(1)
        positions = torch.arange(length, device=item_seq.device)
        valid = item_seq > 0
        x = self.item_embedding(item_seq) * math.sqrt(self.hidden_size)
        x = self.dropout(x + self.position_embedding(positions).unsqueeze(0))
        x = x * valid.unsqueeze(-1)
        causal = positions.unsqueeze(1) >= positions.unsqueeze(0)
        attention_mask = (causal.unsqueeze(0) & valid.unsqueeze(1)).unsqueeze(1)
        for block in self.blocks:
            x = block(x, attention_mask, time_seq)
        return F.normalize(x, dim=-1)

    def forward(self, item_seq, item_seq_len, time_seq=None):
        return self.gather_indexes(self.sequence_output(item_seq, item_seq_len, time_seq), item_seq_len - 1)

    def item_embeddings(self, items=None):
        """What outputs are dotted with: L2-normalised item embeddings over the temperature."""
        weight = self.item_embedding.weight if items is None else self.item_embedding(items)
        return F.normalize(weight, dim=-1) / self.temperature

    # ---- RecBole interface ------------------------------------------------------------
    def _encode(self, interaction):
        time_seq = interaction[self.TIME_SEQ] if self.TIME_SEQ in interaction else None
        return self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], time_seq)

    def calculate_loss(self, interaction):
        return next_item_loss(self, self._encode(interaction), interaction[self.POS_ITEM_ID],
                              self.train_loss, self.train_neg_samples)

    def predict(self, interaction):
        output = self._encode(interaction)
        return (output * self.item_embeddings(interaction[self.ITEM_ID])).sum(-1)

    def full_sort_predict(self, interaction):
        return torch.matmul(self._encode(interaction), self.item_embeddings().transpose(0, 1))
