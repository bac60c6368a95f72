"""Scores of any RecBole sequential model: its own ``full_sort_predict`` on the whole context.

A model that is not a backbone (BERT4Rec, Caser, ... every RecBole model but SASRec and
GRU4Rec) has no per-position outputs or cache, but RecBole's full ranking is all generation
needs. Contexts are handed to it as RecBole's evaluation hands them: items padded to
MAX_ITEM_LIST_LENGTH (some models, Caser or FMLPRec, only take that width), lengths, the user
each context belongs to (Caser or HGN read it), the timestamp list for a model that reads
one, and a target item field holding padding (there is no target; SASRecCPR's
``full_sort_predict`` computes a loss against it and discards it). A model without ``full_sort_predict`` (DIN, DIEN) is scored item by item with
``predict``, as RecBole's Trainer ranks it.
"""
import torch
from recbole.data.interaction import Interaction

from recbole_rsir.errors import ConfigError
from recbole_rsir.model.backbone import time_field


def context_interaction(model, contexts, lengths, users, times=None):
    """The Interaction RecBole's full-sort evaluation would give ``model`` for these contexts:
    ``contexts [N, <= max_len]`` 0-padded, ``lengths [N]``, ``users [N]``, ``times`` aligned
    with ``contexts`` (used if the model reads time)."""
    n, width = contexts.shape
    items = contexts.new_zeros(n, model.max_seq_length)
    items[:, :width] = contexts
    fields = {model.ITEM_SEQ: items, model.ITEM_SEQ_LEN: lengths, model.USER_ID: users,
              model.ITEM_ID: torch.zeros_like(lengths)}
    if time_field(model):
        stamps = items.new_zeros(items.shape, dtype=torch.float32)
        stamps[:, :width] = times
        fields[time_field(model)] = stamps
    return Interaction(fields)


PREDICT_PAIRS = 1 << 18
"""(context, item) pairs handed to ``predict`` at once, for a model without ``full_sort_predict``."""


def predict_every_item(model, interaction):
    """``[N, n_items]``: ``predict`` of every item for each row, a few rows at a time."""
    n_items = model.n_items
    items = torch.arange(n_items, device=model.device)
    rows = max(1, PREDICT_PAIRS // n_items)
    scores = []
    for start in range(0, len(interaction), rows):
        part = interaction[start:start + rows]
        every_item = part.repeat_interleave(n_items)
        every_item.update(Interaction({model.ITEM_ID: items.repeat(len(part))}))
        scores.append(model.predict(every_item).view(len(part), n_items))
    return torch.cat(scores)


def full_sort_scores(model, interaction):
    """``[N, n_items]`` scores of every item for each row of ``interaction``."""
    try:
        try:
            return model.full_sort_predict(interaction).view(len(interaction), -1)
        except NotImplementedError:
            return predict_every_item(model, interaction)
    except KeyError as err:
        raise ConfigError(f"{type(model).__name__} reads {err} to score a context, besides its items, user and "
                          f"times; a synthetic context has no such field, so RSIR cannot generate with it") from None


class FullSortDecoder:
    """The generator's decoder for a model that is not a backbone: no cache, each step scores
    every row's whole context. A row's "output" is its score of every item."""

    def __init__(self, model):
        self.model = model
        self.n_items = self._scored_items()

    @torch.no_grad()
    def _scored_items(self):
        """How many items the model scores, padding included: its n_items may also count tokens it
        never scores (S3Rec's mask token)."""
        one = torch.ones(1, 1, dtype=torch.long, device=self.model.device)
        interaction = context_interaction(self.model, one, one[0], one[0] * 0, one.float())
        return full_sort_scores(self.model, interaction).shape[1]

    def start(self, rows):
        return self.extend(rows)

    def extend(self, rows, replace=None):
        times = rows.times.float() if time_field(self.model) else None
        interaction = context_interaction(self.model, rows.context, rows.length, rows.user, times)
        return full_sort_scores(self.model, interaction)

    def keep(self, index):
        pass

    @staticmethod
    def scores(outputs, items=None):
        return outputs if items is None else outputs[:, items]
