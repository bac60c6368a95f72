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

from recbole_rsir.model.backbone import Backbone, RowCache
from recbole_rsir.model.loss import next_item_loss


def log_buckets(gap, num_buckets, base):
    """Log bucket ``floor(ln(max(|gap|, 1)) / ln(base))`` of time gaps in seconds, clamped."""
    gap = gap.abs().clamp(min=1.0)
    return (torch.log(gap) / math.log(base)).floor().long().clamp(0, num_buckets - 1)


def time_buckets(time_seq, num_buckets, base):
    """``[B, L, L]`` log bucket of ``|t_i - t_j|`` (seconds) for query ``i`` and key ``j``."""
    return log_buckets(time_seq.unsqueeze(2) - time_seq.unsqueeze(1), num_buckets, base)


class RelativeAttentionBias(nn.Module):
    """Learned bias by relative position, plus by log time gap when timestamps are given."""

    def __init__(self, max_len, num_time_buckets, time_bucket_base):
        super().__init__()
        self.max_len = max_len
        self.num_time_buckets = num_time_buckets
        self.time_bucket_base = time_bucket_base
        self.position_bias = nn.Embedding(max_len, 1)
        self.time_bias = nn.Embedding(num_time_buckets, 1)

    def bias(self, offset, gap=None):
        """Bias of queries and keys ``offset`` positions apart (query minus key) and ``gap``
        seconds apart (None: no time term); a key after its query gets offset 0's (masked later)."""
        bias = self.position_bias(offset.clamp(0, self.max_len - 1)).squeeze(-1)
        if gap is not None:
            bias = bias + self.time_bias(log_buckets(gap, self.num_time_buckets, self.time_bucket_base)).squeeze(-1)
        return bias

    def forward(self, length, time_seq=None):
        """``[1 or B, L, L]`` for the positions of a whole sequence."""
        positions = torch.arange(length, device=self.position_bias.weight.device)
        offset = (positions.unsqueeze(1) - positions.unsqueeze(0)).unsqueeze(0)
        gap = None if time_seq is None else time_seq.unsqueeze(2) - time_seq.unsqueeze(1)
        return self.bias(offset, gap)


class HSTUBlock(nn.Module):
    """One block; the whole-sequence pass and the cache both run :meth:`project` then :meth:`attend`."""

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

    def project(self, x):
        """U ``[N, T, H * dl]`` and V, Q, K split into heads ``[N, T, H, .]`` of positions ``x [N, T, d]``."""
        n, t, _ = x.shape
        normed = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        u, v, q, k = torch.split(
            F.silu(self.uvqk(normed)),
            [self.n_heads * self.linear_dim] * 2 + [self.n_heads * self.attention_dim] * 2,
            dim=-1,
        )
        return (u, v.view(n, t, self.n_heads, self.linear_dim), q.view(n, t, self.n_heads, self.attention_dim),
                k.view(n, t, self.n_heads, self.attention_dim))

    def attend(self, x, u, q, keys, values, bias, visible):
        """``x + Dropout(Linear(U * LayerNorm(A V)))`` for queries ``q`` of positions ``x`` against
        ``keys`` and ``values [N, K, H, .]``, with ``bias [N or 1, T, K]`` and ``visible [N, 1, T, K]``
        (True = query may see key)."""
        scores = torch.einsum("bihd,bjhd->bhij", q, keys) + bias.unsqueeze(1)
        attn = self.attn_dropout((F.silu(scores) / self.normaliser).masked_fill(~visible, 0.0))
        mixed = torch.einsum("bhij,bjhd->bihd", attn, values).reshape(x.shape[0], x.shape[1], -1)
        mixed = F.layer_norm(mixed, mixed.shape[-1:], eps=self.eps)
        return x + self.dropout(self.output(u * mixed))

    def forward(self, x, attention_mask, time_seq=None):
        """``x [B, L, d]``, ``attention_mask [B, 1, L, L]`` bool (True = query may see key)."""
        u, v, q, k = self.project(x)
        return self.attend(x, u, q, k, v, self.rab(x.shape[1], time_seq), attention_mask)


class HSTUCache(RowCache):
    """Per block, the keys and values of up to ``capacity`` rows, for one HSTU model; with
    them each position's timestamp, which a later query's time bias needs.

    A query at position i sees keys j <= i of its row (every position i < length holds an
    item, so causality is the model's whole mask). Timestamps are the ones the model gets
    from re-encoding: the batch's, as float32.
    """

    def __init__(self, model, capacity):
        super().__init__(model)
        weight = model.item_embedding.weight
        shape = (capacity, model.max_seq_length)
        self.keys = [weight.new_zeros((*shape, block.n_heads, block.attention_dim)) for block in model.blocks]
        self.values = [weight.new_zeros((*shape, block.n_heads, block.linear_dim)) for block in model.blocks]
        self.times = weight.new_zeros(shape, dtype=torch.float32)

    def _row_tensors(self):
        return [cache[:, :self.width] for cache in self.keys + self.values + [self.times]]

    def _encode(self, slots, items, positions, times):
        model = self.model
        width = int(positions.max()) + 1  # keys any query here may see
        row_index = self.row_index(slots, positions)
        visible = self.visible(positions, width).unsqueeze(1)
        offset = positions.unsqueeze(-1) - torch.arange(width, device=positions.device)
        gap = None
        if times is not None:
            self.times[row_index, positions] = times
            gap = times.unsqueeze(-1) - self.times[slots, :width].unsqueeze(1)
        x = model.embed(items, positions)
        for block, keys, values in zip(model.blocks, self.keys, self.values):
            u, v, q, k = block.project(x)
            keys[row_index, positions] = k
            values[row_index, positions] = v
            bias = block.rab.bias(offset, gap)
            x = block.attend(x, u, q, keys[slots, :width], values[slots, :width], bias, visible)
        return F.normalize(x, dim=-1)


class HSTU(Backbone):
    TIME_SEQ = "timestamp_list"
    cache_class = HSTUCache

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
    def embed(self, item_seq, positions):
        """The first block's input: ``Dropout(item * sqrt(d) + position)``, zero on padding;
        ``positions`` is ``[N, T]``, or ``[1, T]`` for rows that all start at position 0."""
        x = self.item_embedding(item_seq) * math.sqrt(self.hidden_size)
        x = self.dropout(x + self.position_embedding(positions))
        return x * (item_seq > 0).unsqueeze(-1)

    def sequence_output(self, item_seq, item_seq_len, time_seq=None):
        positions = torch.arange(item_seq.size(1), device=item_seq.device)
        valid = item_seq > 0
        x = self.embed(item_seq, positions.unsqueeze(0))
        causal = positions.unsqueeze(1) >= positions.unsqueeze(0)
        attention_mask = (causal.unsqueeze(0) & valid.unsqueeze(1)).unsqueeze(1)
        for block in self.blocks:
            x = block(x, attention_mask, time_seq)
        return F.normalize(x, dim=-1)

    def forward(self, item_seq, item_seq_len, time_seq=None):
        return self.gather_indexes(self.sequence_output(item_seq, item_seq_len, time_seq), item_seq_len - 1)

    def item_embeddings(self, items=None):
        """What outputs are dotted with: L2-normalised item embeddings over the temperature."""
        return F.normalize(super().item_embeddings(items), dim=-1) / self.temperature

    # ---- RecBole interface ------------------------------------------------------------
    def _encode(self, interaction):
        time_seq = interaction[self.TIME_SEQ] if self.TIME_SEQ in interaction else None
        return self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], time_seq)

    def calculate_loss(self, interaction):
        return next_item_loss(self, self._encode(interaction), interaction[self.POS_ITEM_ID],
                              self.train_loss, self.train_neg_samples)

    def predict(self, interaction):
        return self.target_logits(self._encode(interaction), interaction[self.ITEM_ID])

    def full_sort_predict(self, interaction):
        return self.item_logits(self._encode(interaction))
