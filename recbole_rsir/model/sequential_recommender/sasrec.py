"""SASRec: RecBole's model, with its layers run by one function that every path calls.

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018.

The class is RecBole's ``SASRec`` (same parameters, same ``state_dict`` keys, so RecBole
checkpoints load and ``--model=SASRec`` means what it means in RecBole), registered here as a
:class:`Backbone`. Its whole-sequence pass, the packed pass of the all-position trainer and the
generator's key/value cache all run each RecBole ``TransformerLayer`` through
:func:`transformer_layer`, which takes the keys and values to attend to: the whole sequence's
own in a full pass, the cached ones when decoding. Its arithmetic is RecBole's
(recbole/model/layers.py) operation for operation, dropout where RecBole drops out, so a full
pass gives RecBole's outputs bit for bit.
"""
import torch
from recbole.model.sequential_recommender import SASRec as RecBoleSASRec

from recbole_rsir.model.backbone import Backbone, RowCache

MASKED = -10000.0
"""What RecBole's get_attention_mask adds for a key a query may not see."""


def split_heads(attention, x):
    """``[N, T, d] -> [N, H, T, d_head]``, as RecBole's MultiHeadAttention lays out queries."""
    return attention.transpose_for_scores(x).permute(0, 2, 1, 3)


def transformer_layer(layer, hidden, mask, keys=None, values=None):
    """RecBole's ``TransformerLayer`` for queries at ``hidden [N, T, d]`` against ``keys`` and
    ``values [N, H, K, d_head]`` with additive ``mask [N, 1, T, K]``: post-LN attention
    ``LayerNorm(Dropout(dense(Dropout(softmax(q k^T / sqrt(d_head) + mask)) v)) + hidden)``,
    then its FeedForward. Without keys and values the positions of ``hidden`` attend to each
    other (a full pass); theirs are then projected after the queries, as RecBole projects them,
    so that gradients are summed in RecBole's order too."""
    attention = layer.multi_head_attention
    query = split_heads(attention, attention.query(hidden))
    if keys is None:
        keys = split_heads(attention, attention.key(hidden))
        values = split_heads(attention, attention.value(hidden))
    scores = torch.matmul(query, keys.transpose(-1, -2))
    scores = scores / attention.sqrt_attention_head_size
    scores = scores + mask
    probs = attention.attn_dropout(attention.softmax(scores))
    context = torch.matmul(probs, values).permute(0, 2, 1, 3)
    context = context.reshape(*context.shape[:2], attention.all_head_size)
    hidden = attention.LayerNorm(attention.out_dropout(attention.dense(context)) + hidden)
    return layer.feed_forward(hidden)


class SASRecCache(RowCache):
    """Every layer's keys and values of up to ``capacity`` rows, for one SASRec model.

    A new position's query attends to its row's cached keys at positions <= its own (rows are
    left-aligned, so those all hold items): the attention a full pass computes with RecBole's
    causal padding mask.
    """

    def __init__(self, model, capacity):
        super().__init__(model)
        attention = model.trm_encoder.layer[0].multi_head_attention
        shape = (capacity, attention.num_attention_heads, model.max_seq_length, attention.attention_head_size)
        weight = model.item_embedding.weight
        self.keys = [weight.new_zeros(shape) for _ in model.trm_encoder.layer]
        self.values = [weight.new_zeros(shape) for _ in model.trm_encoder.layer]

    def _row_tensors(self):
        return [cache[:, :, :self.width] for cache in self.keys + self.values]

    def _encode(self, slots, items, positions, times=None):
        model = self.model
        width = int(positions.max()) + 1  # keys any query here may see
        row_index = self.row_index(slots, positions)
        visible = self.visible(positions, width)
        mask = torch.where(visible, 0.0, MASKED).to(model.item_embedding.weight.dtype).unsqueeze(1)
        hidden = model.embed(items, positions)
        for layer, keys, values in zip(model.trm_encoder.layer, self.keys, self.values):
            attention = layer.multi_head_attention
            keys[row_index, :, positions] = attention.transpose_for_scores(attention.key(hidden))
            values[row_index, :, positions] = attention.transpose_for_scores(attention.value(hidden))
            hidden = transformer_layer(layer, hidden, mask, keys[slots, :, :width], values[slots, :, :width])
        return hidden


class SASRec(RecBoleSASRec, Backbone):
    packs_rows = True
    cache_class = SASRecCache

    def embed_items(self, item_seq):
        """Item vectors of the input (CL4SRec adds its mask token)."""
        return self.item_embedding(item_seq)

    def embed(self, item_seq, positions):
        """The first layer's input: ``Dropout(LayerNorm(item + position embedding))``."""
        return self.dropout(self.LayerNorm(self.embed_items(item_seq) + self.position_embedding(positions)))

    def encode(self, hidden, mask):
        """Every layer over ``hidden [N, T, d]``, each position attending to the whole row under ``mask``."""
        for layer in self.trm_encoder.layer:
            hidden = transformer_layer(layer, hidden, mask)
        return hidden

    def sequence_output(self, item_seq, item_seq_len, time_seq=None):
        positions = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device)
        hidden = self.embed(item_seq, positions.unsqueeze(0).expand_as(item_seq))
        return self.encode(hidden, self.get_attention_mask(item_seq))

    def forward(self, item_seq, item_seq_len):
        return self.gather_indexes(self.sequence_output(item_seq, item_seq_len), item_seq_len - 1)

    def packed_output(self, packed):
        """The same layers over packed rows: positions and the attention mask come from the packing."""
        hidden = self.embed(packed.inputs, packed.positions)
        mask = torch.where(packed.allowed.unsqueeze(1), 0.0, MASKED).to(hidden.dtype)
        return self.encode(hidden, mask)
