"""Incremental decoding: every layer's keys and values of past positions, kept (SASRec, HSTU).

SASRec and HSTU are causal with absolute positions counted from the left (sequences are
left-aligned, padded on the right), so their output at position t depends on items 0..t
only. Appending an item at position t therefore needs just that position's query against
the keys and values positions < t already left in each layer. Rows of a batch sit at
different positions, so a cache is written per row.

A cache has the generator's decoder interface: ``start(batch)`` encodes new rows' prefixes
(appended after the rows it holds), ``extend(batch)`` every row's newest item, ``keep(index)``
drops and reorders rows as the batch does; the first two return each row's hidden state at
its last position. ``fits(model)`` says whether the cache computes the model's hidden states:
the model's classes are checked, then a probe compares the cache, fed one item at a time,
with the model's own ``sequence_output``.
"""
import math
import warnings

import torch
import torch.nn.functional as F
from recbole.model.layers import FeedForward, MultiHeadAttention, TransformerEncoder, TransformerLayer
from recbole.model.sequential_recommender import SASRec

from recbole_rsir.model.causal import sequence_output, time_field
from recbole_rsir.model.sequential_recommender.hstu import HSTU, HSTUBlock, RelativeAttentionBias

MASKED = -10000.0
"""What RecBole's get_attention_mask adds for a key a query may not see."""


class RowCache:
    """What both caches share: rows appended by :meth:`start`, one position added to every
    row by :meth:`extend`, rows dropped and reordered by :meth:`keep`. A subclass says how
    to encode items at given positions (``_encode``) and which tensors hold a row
    (``_row_tensors``, each ``[capacity, max_len, ...]`` after its row axis)."""

    reads_time = False

    def start(self, batch):
        """Encode the prefixes of ``batch`` (new rows, appended); hidden state at each prefix end."""
        n_new, width = len(batch), int(batch.length.max())
        positions = torch.arange(width, device=batch.context.device).expand(n_new, width)
        rows = slice(self.n_rows, self.n_rows + n_new)
        times = batch.times[:, :width].float() if self.reads_time else None
        output = self._encode(rows, batch.context[:, :width], positions, times)
        self.n_rows += n_new
        self.width = max(self.width, width)
        return output[torch.arange(n_new, device=output.device), batch.length - 1]

    def extend(self, batch):
        """Encode every row's newest item (at position length - 1); its hidden state."""
        position = (batch.length - 1).unsqueeze(1)
        newest = batch.context.gather(1, position)
        times = batch.times.gather(1, position).float() if self.reads_time else None
        self.width = int(batch.length.max())
        return self._encode(slice(0, len(batch)), newest, position, times).squeeze(1)

    def keep(self, index):
        """Keep rows ``index`` (in that order), as the batch does; only rows that move are copied."""
        moved = (index != torch.arange(len(index), device=index.device)).nonzero().squeeze(1)
        for cache in self._row_tensors():
            cache[moved] = cache[index[moved]]
        self.n_rows = len(index)


class KVCache(RowCache):
    """Keys and values of up to ``capacity`` rows of a batch, for one SASRec model.

    Rows are the batch's rows in order: :meth:`start` adds rows at the end, :meth:`keep`
    drops finished ones, :meth:`extend` feeds every row its newest item.

    The arithmetic is RecBole's own (recbole/model/layers.py) in eval mode, dropout off:
    embedding ``LayerNorm(item + position)``, then per TransformerLayer the post-LN attention
    ``LayerNorm(dense(softmax(q k^T / sqrt(d_head) + mask) v) + h)`` and its FeedForward.
    """

    def __init__(self, model, capacity):
        self.model = model
        attention = model.trm_encoder.layer[0].multi_head_attention
        self.n_heads, self.head_size = attention.num_attention_heads, attention.attention_head_size
        shape = (capacity, self.n_heads, model.max_seq_length, self.head_size)
        weight = model.item_embedding.weight
        self.keys = [weight.new_zeros(shape) for _ in model.trm_encoder.layer]
        self.values = [weight.new_zeros(shape) for _ in model.trm_encoder.layer]
        self.n_rows = 0
        self.width = 0  # positions written for the rows now in the cache (at most)

    @staticmethod
    def fits(model):
        """True if ``model`` computes exactly SASRec's hidden states (checked, not assumed)."""
        encoder = getattr(model, "trm_encoder", None)
        if not (isinstance(model, SASRec) and type(model).forward is SASRec.forward
                and time_field(model) is None and type(encoder) is TransformerEncoder
                and all(type(layer) is TransformerLayer
                        and type(layer.multi_head_attention) is MultiHeadAttention
                        and type(layer.feed_forward) is FeedForward for layer in encoder.layer)):
            return False
        return _probe_matches(model, KVCache, "SASRec")

    def _row_tensors(self):
        return [cache[:, :, :self.width] for cache in self.keys + self.values]

    def _encode(self, rows, items, positions, times=None):
        """Outputs ``[N, T, d]`` of ``items [N, T]`` at ``positions [N, T]``; caches their keys/values.

        A query at position i sees the cached keys at positions <= i of its own row. Every
        such key was written by an earlier call or by this one; positions beyond a row's
        end may hold stale keys but are never seen.
        """
        model = self.model
        width = int(positions.max()) + 1  # keys any query here may see
        n, t = items.shape
        row_index = torch.arange(rows.start, rows.stop, device=items.device).unsqueeze(1).expand(n, t)
        key_position = torch.arange(width, device=items.device)
        visible = key_position.view(1, 1, -1) <= positions.unsqueeze(-1)               # [N, T, K]
        mask = torch.where(visible, 0.0, MASKED).to(model.item_embedding.weight.dtype).unsqueeze(1)

        hidden = model.LayerNorm(model.item_embedding(items) + model.position_embedding(positions))
        for layer, keys, values in zip(model.trm_encoder.layer, self.keys, self.values):
            attention = layer.multi_head_attention
            keys[row_index, :, positions] = self._heads(attention.key(hidden))
            values[row_index, :, positions] = self._heads(attention.value(hidden))
            query = self._heads(attention.query(hidden)).permute(0, 2, 1, 3)               # [N, H, T, dh]
            scores = torch.matmul(query, keys[rows, :, :width].transpose(-1, -2))
            scores = scores / attention.sqrt_attention_head_size + mask
            context = torch.matmul(attention.softmax(scores), values[rows, :, :width])
            context = context.permute(0, 2, 1, 3).reshape(n, t, self.n_heads * self.head_size)
            hidden = attention.LayerNorm(attention.dense(context) + hidden)
            hidden = layer.feed_forward(hidden)
        return hidden

    def _heads(self, x):
        return x.view(*x.shape[:-1], self.n_heads, self.head_size)



class HSTUCache(RowCache):
    """Per block, the keys and values of up to ``capacity`` rows of a batch, for one HSTU
    model; with them each position's timestamp, which a later query's time bias needs.

    Rows and methods as in :class:`KVCache`. The arithmetic is HSTUBlock's
    (recbole_rsir/model/sequential_recommender/hstu.py) in eval mode, dropout off: a query
    at position i sees keys j <= i of its row with weight ``SiLU(q k + rab(i - j, |t_i - t_j|)) / N``;
    every position i < length holds an item, so causality is the model's whole mask.
    Timestamps are the ones the model gets from re-encoding: the batch's, as float32.
    """

    def __init__(self, model, capacity):
        self.model = model
        self.reads_time = time_field(model) is not None
        weight = model.item_embedding.weight
        shape = (capacity, model.max_seq_length)
        self.keys = [weight.new_zeros((*shape, block.n_heads, block.attention_dim)) for block in model.blocks]
        self.values = [weight.new_zeros((*shape, block.n_heads, block.linear_dim)) for block in model.blocks]
        self.times = weight.new_zeros(shape, dtype=torch.float32)
        self.n_rows = 0
        self.width = 0  # positions written for the rows now in the cache (at most)

    @staticmethod
    def fits(model):
        """True if ``model`` computes exactly HSTU's hidden states (checked, not assumed)."""
        if not (isinstance(model, HSTU) and type(model).sequence_output is HSTU.sequence_output
                and all(type(block) is HSTUBlock and type(block.rab) is RelativeAttentionBias
                        for block in model.blocks)):
            return False
        return _probe_matches(model, HSTUCache, "HSTU")

    def _row_tensors(self):
        return [cache[:, :self.width] for cache in self.keys + self.values + [self.times]]

    def _encode(self, rows, items, positions, times):
        """Outputs ``[N, T, d]`` of ``items [N, T]`` at ``positions [N, T]`` (timestamps ``times``
        or None); caches their keys, values and timestamps.

        A query at position i sees the cached keys at positions <= i of its own row, each
        written by an earlier call or by this one; positions beyond a row's end may hold
        stale keys but are never seen.
        """
        model = self.model
        width = int(positions.max()) + 1  # keys any query here may see
        n, t = items.shape
        row_index = torch.arange(rows.start, rows.stop, device=items.device).unsqueeze(1).expand(n, t)
        key_position = torch.arange(width, device=items.device)
        visible = (key_position.view(1, 1, -1) <= positions.unsqueeze(-1)).unsqueeze(1)   # [N, 1, T, K]
        offset = positions.unsqueeze(-1) - key_position                                    # [N, T, K]
        log_gap = None
        if times is not None:
            self.times[row_index, positions] = times
            gap = (times.unsqueeze(-1) - self.times[rows, :width].unsqueeze(1)).abs().clamp(min=1.0)
            log_gap = torch.log(gap)

        x = model.item_embedding(items) * math.sqrt(model.hidden_size) + model.position_embedding(positions)
        x = x * (items > 0).unsqueeze(-1)
        for block, keys, values in zip(model.blocks, self.keys, self.values):
            normed = F.layer_norm(x, x.shape[-1:], eps=block.eps)
            u, v, q, k = torch.split(
                F.silu(block.uvqk(normed)),
                [block.n_heads * block.linear_dim] * 2 + [block.n_heads * block.attention_dim] * 2,
                dim=-1,
            )
            keys[row_index, positions] = k.view(n, t, block.n_heads, block.attention_dim)
            values[row_index, positions] = v.view(n, t, block.n_heads, block.linear_dim)
            q = q.view(n, t, block.n_heads, block.attention_dim)
            bias = self._bias(block.rab, offset, log_gap)
            scores = torch.einsum("bihd,bjhd->bhij", q, keys[rows, :width]) + bias.unsqueeze(1)
            attn = (F.silu(scores) / block.normaliser).masked_fill(~visible, 0.0)
            mixed = torch.einsum("bhij,bjhd->bihd", attn, values[rows, :width]).reshape(n, t, -1)
            mixed = F.layer_norm(mixed, mixed.shape[-1:], eps=block.eps)
            x = x + block.output(u * mixed)
        return F.normalize(x, dim=-1)

    @staticmethod
    def _bias(rab, offset, log_gap):
        """RelativeAttentionBias for queries and keys ``offset`` positions apart (and ``log_gap``
        = ln of their clamped time gap, or None): ``[N, T, K]``."""
        bias = rab.position_bias(offset.clamp(0, rab.max_len - 1)).squeeze(-1)
        if log_gap is not None:
            buckets = (log_gap / math.log(rab.time_bucket_base)).floor().long().clamp(0, rab.num_time_buckets - 1)
            bias = bias + rab.time_bias(buckets).squeeze(-1)
        return bias


class _ProbeRows:
    """What a cache reads from the generator's batch."""

    def __init__(self, context, times, length):
        self.context, self.times, self.length = context, times, length

    def __len__(self):
        return len(self.length)


@torch.no_grad()
def _probe_matches(model, cache_class, name):
    """The cache, fed two probe rows as the generator feeds it (long prefixes of different
    lengths, then a few items one at a time), gives the model's own sequence_output at each
    row's end; else a warning and False. The rows end near the longest context the model
    takes, so their queries see every relative position and many time gaps."""
    length, device = model.max_seq_length, model.device
    items = 1 + (torch.arange(2 * length, device=device) * 7919) % max(model.n_items - 1, 1)
    items = items.view(2, length)
    # gaps of 1 s to ~2 months, so a time bias meets many buckets
    gaps = 3.0 ** (torch.arange(2 * length, device=device, dtype=torch.float64) % 15)
    times = torch.cumsum(gaps.view(2, length), 1)
    lengths = (length - torch.tensor([4, 3], device=device)).clamp(min=1)  # then 3 items each
    final = lengths + length - int(lengths.max())
    position = torch.arange(length, device=device)
    row = torch.arange(2, device=device)

    def rows(lengths):
        """The probe rows as the generator's batch holds them: zero past each row's length."""
        valid = position < lengths.unsqueeze(1)
        return _ProbeRows(items * valid, times * valid, lengths)

    was_training = model.training
    model.eval()
    try:
        full = rows(final)
        expected = sequence_output(model, full.context, final, full.times.float() if time_field(model) else None)
        cache = cache_class(model, 2)
        got, want = [cache.start(rows(lengths))], [expected[row, lengths - 1]]
        while int(lengths.max()) < length:
            lengths = lengths + 1
            got.append(cache.extend(rows(lengths)))
            want.append(expected[row, lengths - 1])
    finally:
        model.train(was_training)
    got, want = torch.stack(got), torch.stack(want)
    scale = max(1.0, float(want.abs().max()))
    if torch.allclose(got, want, rtol=1e-4, atol=1e-4 * scale):
        return True
    warnings.warn(f"{type(model).__name__} does not compute {name}'s hidden states; "
                  "generation re-encodes the whole context at every step instead")
    return False
