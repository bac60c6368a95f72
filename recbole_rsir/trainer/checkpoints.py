"""Checkpoints of tensors and plain data only, holding every random stream training draws from.

RecBole's checkpoints pickle its Config, which torch >= 2.6 refuses to load by default, and they
hold no random state, so a resumed fit cannot repeat an uninterrupted one. These hold the
weights, the optimizer, early stopping's state and the random streams of dropout (torch's
global generator), negatives and shuffling: a fit resumed with RecBole's
``resume_checkpoint`` ends as one never stopped. A validation that does not improve adds the
state after its epoch under ``latest``, so a stopped fit loses at most the epoch in progress
rather than every epoch since the best one. In a distributed run each rank draws its own
dropout masks, so a checkpoint holds every rank's streams; rank 0 writes it.
"""
import os
import time

import torch

from recbole_rsir import distributed


class Checkpoints:
    """Trainer mixin: safe, complete checkpoints; ``best_epoch`` and ``train_seconds``."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self._neg_generator = torch.Generator(device=self.device).manual_seed(config["seed"])
        self.best_epoch = -1
        self._shuffle = None             # the training loader's generator, known once fit starts
        self._resumed_rng = None
        self._seconds_before = 0.0       # training time of a resumed checkpoint's epochs
        self._fit_start = None

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self._shuffle = getattr(train_data, "generator", None)
        if self._resumed_rng is not None:
            self._set_rng(self._resumed_rng)
            self._resumed_rng = None
        self._fit_start = time.time()
        if self.best_epoch >= 0 and self.start_epoch >= self.epochs:
            return self.best_valid_score, None     # resumed after its last epoch: nothing left to train

        def after_validation(epoch, score):        # RecBole calls it after saving a new best
            if saved and 0 <= self.best_epoch != epoch:
                self._save_latest(epoch)
            if callback_fn:
                callback_fn(epoch, score)

        return super().fit(train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress,
                           callback_fn=after_validation)

    def train_seconds(self):
        """Training time so far, a resumed checkpoint's share included."""
        return self._seconds_before + (time.time() - self._fit_start if self._fit_start else 0.0)

    def _rng(self):
        streams = {"torch": torch.get_rng_state(), "negatives": self._neg_generator.get_state()}
        if self._shuffle is not None:
            streams["shuffle"] = self._shuffle.get_state()
        return streams

    def _set_rng(self, streams):
        torch.set_rng_state(streams["torch"])
        self._neg_generator.set_state(streams["negatives"])
        if self._shuffle is not None and "shuffle" in streams:
            self._shuffle.set_state(streams["shuffle"])

    def _state(self, epoch):
        """What training needs to go on after ``epoch`` (every rank's streams: collective)."""
        streams = distributed.gather(self._rng())
        return {
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": streams[0] if len(streams) == 1 else {"ranks": streams},
            "train_seconds": self.train_seconds(),
        }

    @staticmethod
    def _write(path, checkpoint):
        tmp = f"{path}.tmp"
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        self.best_epoch = epoch
        state = self._state(epoch)
        if distributed.is_main():
            self._write(saved_model_file, {"model": self.config["model"], **state})

    def _save_latest(self, epoch):
        """The best epoch's checkpoint, plus the state after ``epoch`` as ``latest``."""
        state = self._state(epoch)
        if distributed.is_main():
            checkpoint = torch.load(self.saved_model_file, map_location="cpu", weights_only=True)
            checkpoint["latest"] = state
            self._write(self.saved_model_file, checkpoint)

    def resume_checkpoint(self, resume_file):
        """RecBole's resume for these checkpoints: training continues after the last epoch saved
        (its ``latest`` state, else the best epoch) with its weights, optimizer, early-stopping
        count and random streams; the best epoch's weights stay the ones tested."""
        checkpoint = torch.load(resume_file, map_location=self.device, weights_only=True)
        if checkpoint["model"].lower() != self.config["model"].lower():
            raise ValueError(f"{resume_file} holds a {checkpoint['model']} model, not {self.config['model']}")
        self.saved_model_file = resume_file
        self.best_epoch = checkpoint["epoch"]
        self.best_valid_score = checkpoint["best_valid_score"]
        state = checkpoint.get("latest", checkpoint)
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch = state["epoch"] + 1
        self.cur_step = state["cur_step"]
        self._seconds_before = state.get("train_seconds", 0.0)
        self._resumed_rng = state.get("rng")
        if self._resumed_rng is not None and "ranks" in self._resumed_rng:
            self._resumed_rng = self._resumed_rng["ranks"][distributed.rank()]
        if self._resumed_rng is None:
            self.logger.warning(f"{resume_file} holds no random-stream state (saved by an earlier version): "
                                f"training continues from epoch {self.start_epoch} but will not repeat an "
                                f"uninterrupted run exactly")

    def load_best(self, model_file=None):
        checkpoint = torch.load(model_file or self.saved_model_file, map_location=self.device,
                                weights_only=True)
        self.model.load_state_dict(checkpoint["state_dict"])

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if eval_data and load_best_model:
            self.load_best(model_file)
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
