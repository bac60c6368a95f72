"""What the fast paths need from a backbone: outputs at every position, and item scores.

A causal sequential recommender (position t sees items <= t) can be trained with a loss at
every position of a sequence and decoded one item at a time. Backbones of this package
implement the protocol directly:

- ``sequence_output(item_seq, item_seq_len, time_seq=None) -> [B, L, d]``
- ``item_embeddings(items=None) -> [n_items or K, d]``: the vectors outputs are dotted
  with to score items (normalised / temperature-scaled where the model does that); models
  without it are scored with their ``item_embedding`` table, as RecBole's SASRec is.
- optionally ``auxiliary_loss(item_seq, item_seq_len, time_seq=None) -> scalar``, added to
  the next-item loss (CL4SRec's contrastive term).
- ``TIME_SEQ``: name of the timestamp-list field a backbone reads, if it reads time.

RecBole's own causal models (SASRec, GRU4Rec) end ``forward`` by picking the last valid
position with ``gather_indexes``; for them the per-position output is ``forward`` with that
pick switched off, so their own code computes it.
"""
import torch
from recbole.model.sequential_recommender import GRU4Rec, SASRec

GATHER_LAST_MODELS = (SASRec, GRU4Rec)


def supports_positions(model):
    """Whether a model (instance or class) can give outputs at every position."""
    cls = model if isinstance(model, type) else type(model)
    return hasattr(cls, "sequence_output") or issubclass(cls, GATHER_LAST_MODELS)


def _all_positions(output, gather_index):
    return output


def sequence_output(model, item_seq, item_seq_len, time_seq=None):
    """Hidden state at every position, ``[B, L, d]``."""
    if hasattr(model, "sequence_output"):
        return model.sequence_output(item_seq, item_seq_len, time_seq)
    if isinstance(model, GATHER_LAST_MODELS):
        model.gather_indexes = _all_positions
        try:
            return model.forward(item_seq, item_seq_len)
        finally:
            del model.gather_indexes
    raise NotImplementedError(
        f"{type(model).__name__} cannot give per-position outputs; use train_path: recbole"
    )


def supports_packing(model):
    """Whether :func:`packed_output` applies: RecBole's SASRec itself (subclasses may change forward)."""
    return type(model) is SASRec


def packed_output(model, packed):
    """RecBole SASRec's forward over a :class:`PackedBatch`, outputs ``[R, W, d]``.

    The same layers in the same order as ``SASRec.forward``; only the positions and the
    attention mask (RecBole's additive 0 / -10000) come from the packing.
    """
    emb = model.item_embedding(packed.inputs) + model.position_embedding(packed.positions)
    emb = model.dropout(model.LayerNorm(emb))
    mask = torch.where(packed.allowed.unsqueeze(1), 0.0, -10000.0).to(emb.dtype)
    return model.trm_encoder(emb, mask, output_all_encoded_layers=True)[-1]


def item_vectors(model, items=None):
    """What outputs are dotted with: ``[n_items, d]`` (``items=None``) or one row per id in ``items``."""
    if hasattr(model, "item_embeddings"):
        return model.item_embeddings(items)
    return model.item_embedding.weight if items is None else model.item_embedding(items)


def item_logits(model, output, items=None):
    """Scores ``[N, n_items]`` of every item (``items=None``) or ``[N, K]`` of shared ``items``."""
    return torch.matmul(output, item_vectors(model, items).transpose(0, 1))


def target_logits(model, output, targets):
    """Score ``[N]`` of each row's own target item."""
    return (output * item_vectors(model, targets)).sum(-1)


def time_field(model):
    """Name of the timestamp list a backbone reads, or None if it ignores time."""
    return getattr(model, "TIME_SEQ", None)
