"""RecBole's Trainer with the all-position training path and safe checkpoints.

Evaluation (full ranking, RecBole's metrics, early stopping on ``valid_metric``) is
RecBole's own, so numbers compare with RecBole baselines; ``exclude_history_items`` adds
the RSIR reference code's protocol of masking each user's earlier items.
"""
import math
import os
import time

import numpy as np
import torch
from recbole.trainer import Trainer
from recbole.utils import set_color
from scipy.sparse import csr_matrix
from torch.nn.utils import clip_grad_norm_
from tqdm import tqdm

from recbole_rsir.data.loader import SequenceTrainLoader, length_chunks, pack
from recbole_rsir.model.causal import (packed_output, sequence_output, supports_packing, supports_positions,
                                      time_field)
from recbole_rsir.model.dropout import use_fast_dropout
from recbole_rsir.model.loss import next_item_loss


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


def history_matrix(histories, n_users, n_items):
    """``csr [n_users, n_items]`` with a 1 for each (user, item) in ``{user: items}``."""
    users = np.repeat(np.fromiter(histories.keys(), dtype=np.int64),
                      [len(v) for v in histories.values()])
    items = np.concatenate([np.asarray(v, dtype=np.int64) for v in histories.values()])
    return csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items))


EVAL_BUCKET = 256
"""Users scored together in evaluation, grouped by sequence length."""


def full_sort_by_length(model, interaction):
    """``model.full_sort_predict`` with each group of similar-length users trimmed to its longest.

    RecBole pads every evaluation sequence to MAX_ITEM_LIST_LENGTH; for a causal model the
    padding after a sequence cannot change its last output, so dropping it gives the same
    scores at a fraction of the cost (Beauty's sequences average 9 of 50 positions).
    """
    lengths = interaction[model.ITEM_SEQ_LEN]
    max_len = interaction[model.ITEM_SEQ].shape[1]
    scores = None
    for rows in torch.argsort(lengths).split(EVAL_BUCKET):
        part = interaction[rows]
        width = int(lengths[rows].max())
        for name, value in part.interaction.items():
            if value.dim() >= 2 and value.shape[1] == max_len:
                part.interaction[name] = value[:, :width]
        part_scores = model.full_sort_predict(part)
        if scores is None:
            scores = part_scores.new_empty(len(lengths), part_scores.shape[-1])
        scores[rows] = part_scores.view(len(rows), -1)
    return scores


class RSIRTrainer(Trainer):
    """RecBole's Trainer, plus the all-position path, length-bucketed evaluation and resumable RNG.

    It changes the model it is given in one way: plain ``nn.Dropout`` layers become
    :class:`FastDropout` (same law, faster on CPU).
    """

    def __init__(self, config, model):
        super().__init__(config, use_fast_dropout(model))
        self.train_loss = config["train_loss"]
        self.neg_samples = config["train_neg_samples"]
        self.exclude_history = config["exclude_history_items"]
        self._histories = {}
        self._eval_history = None
        self._neg_generator = torch.Generator(device=self.device).manual_seed(config["seed"])
        self.round_index = 0
        self.epoch = 0
        self.best_epoch = -1
        self._shuffle = None             # the training loader's generator, known once fit starts
        self._resumed_rng = None
        self._seconds_before = 0.0       # training time of a resumed checkpoint's epochs
        self._fit_start = None

    # ---- training -------------------------------------------------------------------
    def _build_optimizer(self, **kwargs):
        """RecBole's optimizer, fused where torch has a fused kernel for it.

        RecBole builds Adam with torch's per-tensor loop; the fused kernel takes the same step
        about three times faster here (benchmarks/bench_training.py), which matters at the
        all-position path's ~90 steps an epoch of a few seconds.
        """
        optimizer = super()._build_optimizer(**kwargs)
        groups = [{k: v for k, v in group.items() if k not in ("fused", "foreach")}
                  for group in optimizer.param_groups]
        devices = {p.device.type for group in groups for p in group["params"]}
        if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW) or not devices <= {"cpu", "cuda"}:
            return optimizer
        return type(optimizer)(groups, fused=True)

    def position_loss(self, items, lengths, times, targets_per_batch=None):
        """Next-item loss at every position of every row (one row = a whole sequence).

        RecBole's SASRec gets the batch packed into one pass (:func:`pack`); other models get
        one pass per part of similar length (:func:`length_chunks`), each trimmed to its longest
        row. The loss is then taken once over all positions, so it is the batch's own loss
        (negatives shared by the whole batch), only with less padding.

        Without ``targets_per_batch`` it is the mean over this batch's targets. Batches grouped
        by length hold very different numbers of targets (about 500 to 11,000 on Beauty), so a
        per-batch mean weighs a target of a short-row batch about 20 times more than one of a
        long-row batch, which cost accuracy; dividing the sum by the epoch's mean
        ``targets_per_batch`` weighs every target alike, as RecBole's shuffled prefix batches do.
        """
        model = self.model
        uses_time = time_field(model)
        if supports_packing(model):
            packed = pack(items, lengths)
            output = packed_output(model, packed)
            hidden, target = output.reshape(-1, output.shape[-1])[packed.index], packed.targets
        else:
            hidden, target = [], []
            for rows in length_chunks(lengths):
                width = int(lengths[rows].max())
                part = items[rows, :width]
                time_seq = times[rows, :width - 1] if uses_time else None
                output = sequence_output(model, part[:, :-1], (lengths[rows] - 1).clamp(min=1), time_seq)
                valid = part[:, 1:] > 0
                hidden.append(output[valid])
                target.append(part[:, 1:][valid])
            hidden, target = torch.cat(hidden), torch.cat(target)
        loss = next_item_loss(model, hidden, target, self.train_loss, self.neg_samples, self._neg_generator)
        if targets_per_batch:
            loss = loss * (len(target) / targets_per_batch)
        if hasattr(model, "auxiliary_loss"):
            loss = loss + model.auxiliary_loss(items[:, :-1], (lengths - 1).clamp(min=1),
                                               times[:, :-1] if uses_time else None)
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

    def _check_nan(self, loss):
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"round {self.round_index}, epoch {self.epoch}: training loss is "
                                     f"{loss.item()}; stopped, finished rounds are kept")

    # ---- checkpoints: tensors and plain data only, loadable with weights_only=True ----
    def fit(self, train_data, *args, **kwargs):
        self._shuffle = getattr(train_data, "generator", None)
        if self._resumed_rng is not None:
            self._set_rng(self._resumed_rng)
            self._resumed_rng = None
        self._fit_start = time.time()
        if self.best_epoch >= 0 and self.start_epoch >= self.epochs:
            return self.best_valid_score, None     # resumed after its last epoch: nothing left to train
        return super().fit(train_data, *args, **kwargs)

    def train_seconds(self):
        """Training time so far, a resumed checkpoint's share included."""
        return self._seconds_before + (time.time() - self._fit_start if self._fit_start else 0.0)

    def _rng(self):
        """Every random stream training draws from (dropout, negatives, shuffling): saving them
        with the weights makes a resumed run repeat an uninterrupted one exactly."""
        streams = {"torch": torch.get_rng_state(), "negatives": self._neg_generator.get_state()}
        if self._shuffle is not None:
            streams["shuffle"] = self._shuffle.get_state()
        return streams

    def _set_rng(self, streams):
        torch.set_rng_state(streams["torch"])
        self._neg_generator.set_state(streams["negatives"])
        if self._shuffle is not None and "shuffle" in streams:
            self._shuffle.set_state(streams["shuffle"])

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        self.best_epoch = epoch
        state = {
            "model": self.config["model"],
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self._rng(),
            "train_seconds": self.train_seconds(),
        }
        tmp = f"{saved_model_file}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, saved_model_file)

    def resume_checkpoint(self, resume_file):
        """RecBole's resume for our checkpoints: training continues after the saved (best) epoch
        with its weights, optimizer, early-stopping count and random streams."""
        checkpoint = torch.load(resume_file, map_location=self.device, weights_only=True)
        if checkpoint["model"].lower() != self.config["model"].lower():
            raise ValueError(f"{resume_file} holds a {checkpoint['model']} model, not {self.config['model']}")
        self.saved_model_file = resume_file
        self.model.load_state_dict(checkpoint["state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.best_epoch = checkpoint["epoch"]
        self.start_epoch = self.best_epoch + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self._seconds_before = checkpoint.get("train_seconds", 0.0)
        self._resumed_rng = checkpoint.get("rng")
        if self._resumed_rng is None:
            self.logger.warning(f"{resume_file} holds no random-stream state (saved by an earlier version): "
                                f"training continues from epoch {self.start_epoch} but will not repeat an "
                                f"uninterrupted run exactly")

    def load_best(self, model_file=None):
        checkpoint = torch.load(model_file or self.saved_model_file, map_location=self.device,
                                weights_only=True)
        self.model.load_state_dict(checkpoint["state_dict"])

    # ---- evaluation -------------------------------------------------------------------
    def set_eval_history(self, eval_dataset, histories):
        """Items to mask when ranking for ``eval_dataset``'s users: ``{user: items}``."""
        self._histories[id(eval_dataset)] = history_matrix(
            histories, eval_dataset.user_num, eval_dataset.item_num)

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        if load_best_model:
            self.load_best(model_file)
        self._eval_history = self._histories.get(id(eval_data._dataset)) if self.exclude_history else None
        if self.exclude_history and self._eval_history is None:
            raise RuntimeError("exclude_history_items is on but no history was set for this split")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)

    def _full_sort_batch_eval(self, batched_data):
        if not supports_positions(self.model):
            interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        else:
            interaction, history_index, positive_u, positive_i = batched_data
            scores = full_sort_by_length(self.model, interaction.to(self.device))
            scores[:, 0] = -math.inf
            if history_index is not None:
                scores[history_index] = -math.inf
        if self._eval_history is not None:
            users = interaction[self.config["USER_ID_FIELD"]].cpu().numpy()
            rows, cols = self._eval_history[users].nonzero()
            scores[torch.from_numpy(rows).to(scores.device), torch.from_numpy(cols).to(scores.device)] = -math.inf
        return interaction, scores, positive_u, positive_i
