"""Incremental decoding for SASRec: every layer's keys and values of past positions, kept.

RecBole's SASRec is causal with absolute positions counted from the left (sequences are
left-aligned, padded on the right), so its output at position t depends on items 0..t only.
Appending an item at position t therefore needs just that position's query against the keys
and values positions < t already left in each layer. Rows of a batch sit at different
positions, so the cache is written per row.

The arithmetic is RecBole's own (recbole/model/layers.py) in eval mode, dropout off:
embedding ``LayerNorm(item + position)``, then per TransformerLayer the post-LN attention
``LayerNorm(dense(softmax(q k^T / sqrt(d_head) + mask) v) + h)`` and its FeedForward.
"""
import warnings

import torch
from recbole.model.layers import FeedForward, MultiHeadAttention, TransformerEncoder, TransformerLayer
from recbole.model.sequential_recommender import SASRec

from recbole_rsir.model.causal import sequence_output, time_field

MASKED = -10000.0
"""What RecBole's get_attention_mask adds for a key a query may not see."""


class KVCache:
    """Keys and values of up to ``capacity`` rows of a batch, for one SASRec model.

    Rows are the batch's rows in order: :meth:`start` adds rows at the end, :meth:`keep`
    drops finished ones, :meth:`extend` feeds every row its newest item.
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
        if _probe_matches(model):
            return True
        warnings.warn(f"{type(model).__name__} does not compute SASRec's hidden states; "
                      "generation re-encodes the whole context at every step instead")
        return False

    def start(self, batch):
        """Encode the prefixes of ``batch`` (new rows, appended); hidden state at each prefix end."""
        n_new, width = len(batch), int(batch.length.max())
        positions = torch.arange(width, device=batch.context.device).expand(n_new, width)
        rows = slice(self.n_rows, self.n_rows + n_new)
        output = self._encode(rows, batch.context[:, :width], positions)
        self.n_rows += n_new
        self.width = max(self.width, width)
        return output[torch.arange(n_new, device=output.device), batch.length - 1]

    def extend(self, batch):
        """Encode every row's newest item (at position length - 1); its hidden state."""
        position = (batch.length - 1).unsqueeze(1)
        newest = batch.context.gather(1, position)
        self.width = int(batch.length.max())
        return self._encode(slice(0, len(batch)), newest, position).squeeze(1)

    def keep(self, index):
        """Keep rows ``index`` (in that order), as the batch does; only rows that move are copied."""
        moved = (index != torch.arange(len(index), device=index.device)).nonzero().squeeze(1)
        for cache in self.keys + self.values:
            cache[moved, :, :self.width] = cache[index[moved], :, :self.width]
        self.n_rows = len(index)

    def _encode(self, rows, items, positions):
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


@torch.no_grad()
def _probe_matches(model):
    """Cache outputs at every position of two probe rows equal the model's own sequence_output."""
    length = model.max_seq_length
    items = 1 + (torch.arange(2 * length, device=model.device) * 7919) % max(model.n_items - 1, 1)
    items = items.view(2, length)
    lengths = torch.tensor([length, (length + 1) // 2], device=model.device)
    items[1, lengths[1]:] = 0
    was_training = model.training
    model.eval()
    try:
        expected = sequence_output(model, items, lengths)
        cache = KVCache(model, 2)
        positions = torch.arange(length, device=model.device).expand(2, length)
        got = cache._encode(slice(0, 2), items, positions)
    finally:
        model.train(was_training)
    valid = torch.arange(length, device=model.device).unsqueeze(0) < lengths.unsqueeze(1)
    scale = max(1.0, float(expected[valid].abs().max()))
    return bool(torch.allclose(got[valid], expected[valid], rtol=1e-4, atol=1e-4 * scale))
