"""What RSIR's fast paths need from a sequential recommender, declared once.

A :class:`Backbone` is a causal RecBole ``SequentialRecommender`` (its output at position t
depends on items 0..t only) that also offers:

- ``sequence_output(item_seq, item_seq_len, time_seq=None) -> [B, L, d]``: the output at every
  position, so training can take a loss at every position of a whole sequence;
- ``item_embeddings(items=None)``: the vectors outputs are dotted with to score items;
- ``auxiliary_loss(item_seq, item_seq_len, time_seq=None)``: a term added to the next-item
  loss, or None (CL4SRec's contrastive term);
- ``packed_output(packed)`` where ``packs_rows``: several sequences side by side in one row;
- ``new_cache(capacity)``: incremental decoding, each row's context encoded once and then
  extended one item at a time (``cache_class``; without one, the context is re-encoded);
- ``TIME_SEQ``: the timestamp-list field it reads, or None.

Any other RecBole sequential model trains on RecBole's own path and generates through its
``full_sort_predict``; :func:`is_backbone` tells the two apart.

A cache and a packed pass compute what ``forward`` and ``sequence_output`` compute because
they call the same layer code. A subclass that overrides one of those two without declaring
its own cache or packing keeps the plain paths, since the inherited ones would compute the
parent's outputs.
"""
import warnings

import torch
from recbole.model.abstract_recommender import SequentialRecommender

FULL_PATHS = ("forward", "sequence_output")
"""The methods a cache or a packed pass must agree with."""


def is_backbone(model):
    """Whether a model (instance or class) offers the fast paths."""
    cls = model if isinstance(model, type) else type(model)
    return issubclass(cls, Backbone)


def time_field(model):
    """Name of the timestamp list a model reads, or None if it ignores time."""
    return getattr(model, "TIME_SEQ", None)


class Backbone(SequentialRecommender):
    """A RecBole sequential recommender that offers RSIR's fast paths (module docstring)."""

    TIME_SEQ = None
    packs_rows = False
    cache_class = None

    def sequence_output(self, item_seq, item_seq_len, time_seq=None):
        """Output at every position, ``[B, L, d]``."""
        raise NotImplementedError

    def item_embeddings(self, items=None):
        """What outputs are dotted with: ``[n_items, d]`` (``items=None``) or one row per id in ``items``."""
        return self.item_embedding.weight if items is None else self.item_embedding(items)

    def item_logits(self, output, items=None):
        """Scores ``[N, n_items]`` of every item (``items=None``) or ``[N, K]`` of shared ``items``."""
        return torch.matmul(output, self.item_embeddings(items).transpose(0, 1))

    def target_logits(self, output, targets):
        """Score ``[N]`` of each row's own target item."""
        return (output * self.item_embeddings(targets)).sum(-1)

    def auxiliary_loss(self, item_seq, item_seq_len, time_seq=None):
        """A term added to the next-item loss of a batch, or None."""
        return None

    def packed_output(self, packed):
        """Outputs ``[R, W, d]`` of a ``PackedBatch`` (data/loader.py), where ``packs_rows``."""
        raise NotImplementedError

    def can_pack(self):
        """Whether :meth:`packed_output` computes this model's outputs."""
        return self.packs_rows and self._declares_the_computation("packs_rows")

    def new_cache(self, capacity):
        """A decoder of up to ``capacity`` rows (see :class:`Cache`)."""
        if self.cache_class is None:
            return ReEncoder(self)
        if not self._declares_the_computation("cache_class"):
            warnings.warn(f"{type(self).__name__} overrides {' or '.join(FULL_PATHS)} but not cache_class; "
                          "generation re-encodes the whole context at every step instead")
            return ReEncoder(self)
        return self.cache_class(self, capacity)

    def _declares_the_computation(self, fast_path):
        """No class below the one that declares ``fast_path`` overrides a full path."""
        mro = type(self).__mro__
        owner = next(i for i, cls in enumerate(mro) if fast_path in vars(cls))
        return not any(name in vars(cls) for cls in mro[:owner] for name in FULL_PATHS)


class Cache:
    """Incremental decoding of a batch of rows for one backbone.

    The rows are the generator's: ``context [N, max_len]`` (items, 0-padded), ``times`` (aligned
    float64 timestamps) and ``length [N]``. ``start(rows)`` encodes new rows' contexts, appended
    after the rows held; ``extend(rows, replace)`` encodes every row's newest item (at
    ``length - 1``), which for rows where ``replace`` (None: none) is not a new position but
    another item in place of the one encoded there last (refine), so the cache must be able to
    re-encode its last position; ``keep(index)`` drops and reorders rows as the batch does.
    The first two return each row's output at its last position, which :meth:`scores` turns
    into item scores.
    """

    def __init__(self, model):
        self.model = model
        self.n_items = model.n_items          # items scored, padding included
        self.reads_time = time_field(model) is not None

    def start(self, rows):
        raise NotImplementedError

    def extend(self, rows, replace=None):
        raise NotImplementedError

    def keep(self, index):
        pass

    def scores(self, outputs, items=None):
        return self.model.item_logits(outputs, items)

    def context_times(self, rows, width):
        """The rows' timestamps as the model reads them (float32), or None."""
        return rows.times[:, :width].float() if self.reads_time else None


class ReEncoder(Cache):
    """No cache: the whole context is encoded again and its last position read."""

    def start(self, rows):
        return self.extend(rows)

    def extend(self, rows, replace=None):
        width = int(rows.length.max())
        output = self.model.sequence_output(rows.context[:, :width], rows.length, self.context_times(rows, width))
        return output[torch.arange(len(rows), device=output.device), rows.length - 1]


class RowCache(Cache):
    """A cache of per-position tensors (keys, values, ...) of up to ``capacity`` rows.

    Rows are appended by :meth:`start`, one position is added to every row by :meth:`extend`,
    rows are dropped and reordered by :meth:`keep`. A subclass says how to encode items at
    given positions (``_encode``) and which tensors hold a row (``_row_tensors``, each
    ``[capacity, max_len, ...]`` or ``[capacity, heads, max_len, ...]``, already cut to the
    positions written).
    """

    def __init__(self, model):
        super().__init__(model)
        self.n_rows = 0
        self.width = 0  # positions written for the rows now in the cache (at most)

    def start(self, rows):
        n_new, width = len(rows), int(rows.length.max())
        positions = torch.arange(width, device=rows.context.device).expand(n_new, width)
        slots = slice(self.n_rows, self.n_rows + n_new)
        output = self._encode(slots, rows.context[:, :width], positions, self.context_times(rows, width))
        self.n_rows += n_new
        self.width = max(self.width, width)
        return output[torch.arange(n_new, device=output.device), rows.length - 1]

    def extend(self, rows, replace=None):
        """The newest positions' tensors are written over whatever an earlier call left there."""
        position = (rows.length - 1).unsqueeze(1)
        newest = rows.context.gather(1, position)
        times = rows.times.gather(1, position).float() if self.reads_time else None
        self.width = int(rows.length.max())
        return self._encode(slice(0, len(rows)), newest, position, times).squeeze(1)

    def keep(self, index):
        """Keep rows ``index`` (in that order); only rows that move are copied."""
        moved = (index != torch.arange(len(index), device=index.device)).nonzero().squeeze(1)
        for cache in self._row_tensors():
            cache[moved] = cache[index[moved]]
        self.n_rows = len(index)

    def _encode(self, slots, items, positions, times):
        """Outputs ``[N, T, d]`` of ``items [N, T]`` at ``positions [N, T]`` of rows ``slots``;
        their per-position tensors are cached. A query at position i sees cached positions <= i
        of its own row, each written by an earlier call or by this one; positions beyond a row's
        end may hold stale entries but are never seen."""
        raise NotImplementedError

    def _row_tensors(self):
        raise NotImplementedError

    @staticmethod
    def visible(positions, width):
        """``[N, T, width]`` bool: key position <= query position."""
        return torch.arange(width, device=positions.device).view(1, 1, -1) <= positions.unsqueeze(-1)

    @staticmethod
    def row_index(slots, positions):
        """``[N, T]`` cache row of each item being written."""
        return torch.arange(slots.start, slots.stop, device=positions.device).unsqueeze(1).expand_as(positions)
