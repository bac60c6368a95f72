"""GRU4Rec: RecBole's model, registered as a backbone; its cache is the GRU's state.

Hidasi et al., "Session-based Recommendations with Recurrent Neural Networks", ICLR 2016.

The class is RecBole's ``GRU4Rec`` (same parameters and ``state_dict`` keys). A GRU is causal by
construction and its state after position t is all it remembers of items 0..t, so decoding
keeps one state per row; the full pass and the cache both run :meth:`GRU4Rec.steps`.
"""
import torch
from recbole.model.sequential_recommender import GRU4Rec as RecBoleGRU4Rec

from recbole_rsir.model.backbone import Backbone, Cache


class GRU4RecCache(Cache):
    """Each row's GRU state ``[num_layers, N, hidden]`` after its newest item, and the state
    before it, from which another item in its place (refine) is encoded."""

    def __init__(self, model, capacity):
        super().__init__(model)
        self.state = model.item_embedding.weight.new_zeros(model.num_layers, 0, model.hidden_size)
        self.before = self.state

    def start(self, rows):
        """New rows' contexts, one position at a time (rows of different lengths stop at their own)."""
        state = self.state.new_zeros(self.state.shape[0], len(rows), self.state.shape[2])
        before = state
        output = None
        for t in range(int(rows.length.max())):
            step_output, step_state = self.model.steps(rows.context[:, t:t + 1], state)
            before = torch.where((t < rows.length - 1).view(1, -1, 1), step_state, before)
            going = (t < rows.length).view(1, -1, 1)
            state = torch.where(going, step_state, state)
            output = step_output[:, 0] if output is None else torch.where(going[0], step_output[:, 0], output)
        self.state = torch.cat([self.state, state], dim=1)
        self.before = torch.cat([self.before, before], dim=1)
        return output

    def extend(self, rows, replace=None):
        newest = rows.context.gather(1, (rows.length - 1).unsqueeze(1))
        if replace is not None:
            self.state = torch.where(replace.view(1, -1, 1), self.before, self.state)
        self.before = self.state
        output, self.state = self.model.steps(newest, self.state)
        return output[:, 0]

    def keep(self, index):
        self.state = self.state[:, index]
        self.before = self.before[:, index]


class GRU4Rec(RecBoleGRU4Rec, Backbone):
    cache_class = GRU4RecCache

    def steps(self, item_seq, state=None):
        """Outputs ``[B, T, d]`` at every position of ``item_seq`` and the GRU state after the
        last one, starting from ``state`` (None: zeros, as RecBole's forward starts)."""
        gru_output, state = self.gru_layers(self.emb_dropout(self.item_embedding(item_seq)), state)
        return self.dense(gru_output), state

    def sequence_output(self, item_seq, item_seq_len, time_seq=None):
        return self.steps(item_seq)[0]

    def forward(self, item_seq, item_seq_len):
        return self.gather_indexes(self.sequence_output(item_seq, item_seq_len), item_seq_len - 1)
