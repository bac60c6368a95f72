"""The all-position training path: a loss at every position of whole sequences.

Stock RecBole trains on one row per prefix, padded to MAX_ITEM_LIST_LENGTH. A backbone gives
its output at every position, so a batch of whole sequences (data/loader.py) yields the same
targets with far less work: packed side by side into one pass where the model
``can_pack()``, else one pass per part of similar length. Models that are not backbones
train on RecBole's own path.
"""
import torch
from recbole.utils import set_color
from torch.nn.utils import clip_grad_norm_
from tqdm import tqdm

from recbole_rsir.data.loader import SequenceTrainLoader, length_chunks, pack
from recbole_rsir.model.loss import next_item_loss


def position_outputs(model, items, lengths, times):
    """Outputs ``[T, d]`` at the inputs of every next-item target of a batch, and the targets ``[T]``."""
    if model.can_pack():
        packed = pack(items, lengths)
        output = model.packed_output(packed)
        return output.reshape(-1, output.shape[-1])[packed.index], packed.targets
    reads_time = model.TIME_SEQ is not None
    hidden, target = [], []
    for rows in length_chunks(lengths):
        width = int(lengths[rows].max())
        part = items[rows, :width]
        time_seq = times[rows, :width - 1] if reads_time else None
        output = model.sequence_output(part[:, :-1], (lengths[rows] - 1).clamp(min=1), time_seq)
        valid = part[:, 1:] > 0
        hidden.append(output[valid])
        target.append(part[:, 1:][valid])
    return torch.cat(hidden), torch.cat(target)


class AllPositionTraining:
    """Trainer mixin: epochs of a :class:`SequenceTrainLoader` train on every position; any other
    loader trains as RecBole trains."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.train_loss = config["train_loss"]
        self.neg_samples = config["train_neg_samples"]

    def position_loss(self, items, lengths, times, targets_per_batch=None):
        """Next-item loss at every position of every row (one row = a whole sequence).

        The loss is taken once over all positions, so it is the batch's own loss (negatives
        shared by the whole batch), whatever the passes. Without ``targets_per_batch`` it is the
        mean over this batch's targets. Batches grouped by length hold very different numbers of
        targets, so a per-batch mean would weigh a target of a short-row batch far more than one
        of a long-row batch, which cost accuracy; dividing the sum by the epoch's mean
        ``targets_per_batch`` weighs every target alike, as RecBole's shuffled prefix batches do.
        """
        model = self.model
        hidden, target = position_outputs(model, items, lengths, times)
        loss = next_item_loss(model, hidden, target, self.train_loss, self.neg_samples, self._neg_generator)
        if targets_per_batch:
            loss = loss * (len(target) / targets_per_batch)
        auxiliary = model.auxiliary_loss(items[:, :-1], (lengths - 1).clamp(min=1),
                                         times[:, :-1] if model.TIME_SEQ is not None else None)
        if auxiliary is not None:
            loss = loss + auxiliary
        return loss

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.epoch = epoch_idx
        if not isinstance(train_data, SequenceTrainLoader):
            return super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        self.model.train()
        batches = tqdm(train_data, total=len(train_data), ncols=100, leave=False,
                       desc=set_color(f"Train r{self.round_index} {epoch_idx:>4}", "pink"),
                       disable=not show_progress)
        total = 0.0
        for items, lengths, times in batches:
            items, lengths, times = items.to(self.device), lengths.to(self.device), times.to(self.device)
            self.optimizer.zero_grad()
            loss = self.position_loss(items, lengths, times, train_data.targets_per_batch)
            self._check_nan(loss)
            loss.backward()
            if self.clip_grad_norm:
                clip_grad_norm_(self.model.parameters(), **self.clip_grad_norm)
            self.optimizer.step()
            total += loss.item()
        return total
