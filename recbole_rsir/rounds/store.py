"""Finished rounds on disk, so an interrupted run loses at most the round in progress.

``rsir_output_dir/rounds/round<k>/`` holds a finished round: ``model.pth`` (best weights:
tensors only, loaded with ``weights_only=True``), ``synthetic.npz`` (the sequences accepted in
that round) and ``result.json``. A round is built in ``round<k>.tmp/`` and renamed into place
only when complete, so a folder without ``.tmp`` is always whole; until then its ``model.pth``
is the trainer's best checkpoint so far, from which a stopped round resumes. Every round
reseeds from (seed, round) and RSIRTrainer's checkpoints carry the random streams, so resuming
gives the same results as not stopping.
"""
import json
import os
import shutil
import zipfile

import numpy as np
import torch
import yaml

from recbole_rsir import distributed
from recbole_rsir.data.sequences import SequenceSet
from recbole_rsir.errors import ConfigError, CorruptFileError, OutputError
from recbole_rsir.schema import IGNORED_KEYS, KEYS

RUN_CONFIG = "config.yaml"


def _unreadable(path, err):
    return CorruptFileError(f"{path} is unreadable ({type(err).__name__}: {err}); "
                            f"delete {os.path.dirname(path)} to recompute that round")


class RoundStore:
    """Finished rounds and the checkpoint of the one in progress, on disk. In a distributed run
    every rank reads it and rank 0 (``writer``) alone writes."""

    def __init__(self, output_dir, writer=True):
        self.output_dir = output_dir
        self.writer = writer
        self.rounds_dir = os.path.join(output_dir, "rounds")

    def round_dir(self, k):
        return os.path.join(self.rounds_dir, f"round{k}")

    def begin(self, k):
        """The temporary folder for round k, emptied but for the checkpoint of an interrupted
        training (training saves there and resumes from it)."""
        tmp = self.round_dir(k) + ".tmp"
        if not self.writer:
            return tmp
        os.makedirs(tmp, exist_ok=True)
        for name in os.listdir(tmp):
            if name != "model.pth":
                path = os.path.join(tmp, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        return tmp

    def interrupted(self, k):
        """The checkpoint round k's training left when it was stopped, or None."""
        path = self.checkpoint(k)
        return path if os.path.isfile(path) else None

    def checkpoint(self, k):
        return os.path.join(self.round_dir(k) + ".tmp", "model.pth")

    def commit(self, k, result, synthetic, state_dict):
        """Round k is finished: its best weights (in place of the trainer's checkpoint, which any
        trainer may have written), its accepted sequences and its result, renamed into place."""
        tmp = self.round_dir(k) + ".tmp"
        if not self.writer:
            return
        try:
            torch.save({"state_dict": state_dict}, os.path.join(tmp, "weights.pth"))
            os.replace(os.path.join(tmp, "weights.pth"), os.path.join(tmp, "model.pth"))
            np.savez(os.path.join(tmp, "synthetic.npz"), items=synthetic.items, offsets=synthetic.offsets,
                     timestamps=synthetic.timestamps, users=synthetic.users)
            with open(os.path.join(tmp, "result.json"), "w", encoding="utf-8") as f:
                json.dump(result, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.round_dir(k))
        except OSError as err:
            raise OutputError(f"cannot save round {k} in {self.output_dir}: {err.strerror or err}") from None

    def finished(self):
        """Rounds 0..k-1 that are complete on disk, in order (a gap ends the list)."""
        k = 0
        while os.path.isfile(os.path.join(self.round_dir(k), "result.json")):
            k += 1
        return list(range(k))

    def load(self, k):
        """``(result dict, synthetic SequenceSet, state_dict)`` of finished round k."""
        folder = self.round_dir(k)
        path = os.path.join(folder, "result.json")
        try:
            with open(path, encoding="utf-8") as f:
                result = json.load(f)
            path = os.path.join(folder, "synthetic.npz")
            with np.load(path, allow_pickle=False) as data:
                synthetic = SequenceSet(data["items"], data["offsets"], data["timestamps"], data["users"])
            path = os.path.join(folder, "model.pth")
            state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        except (OSError, ValueError, KeyError, EOFError, RuntimeError, zipfile.BadZipFile,
                json.JSONDecodeError) as err:
            raise _unreadable(path, err) from None
        return result, synthetic, state

    # ---- the run's config ------------------------------------------------------------
    def check_config(self, plain, overwrite):
        """Refuse to resume a directory made with other settings, unless told to start over.

        Every rank compares (so every rank refuses alike); then the writer alone starts over
        and saves the run's config."""
        path = os.path.join(self.output_dir, RUN_CONFIG)
        started = self.finished() or self.interrupted(len(self.finished()))
        keys = []
        if os.path.isfile(path) and started:
            with open(path, encoding="utf-8") as f:
                stored = yaml.safe_load(f) or {}
            # a key added since those rounds were made counts as its default, which reproduces them
            stored = {**{k: KEYS[k].default for k in set(plain) - set(stored) if k in KEYS}, **stored}
            keys = sorted(k for k in set(stored) | set(plain)
                          if k not in IGNORED_KEYS | distributed.LAUNCH_KEYS and stored.get(k) != plain.get(k))
            if keys and not overwrite:
                raise ConfigError(
                    f"{self.output_dir} holds rounds made with other settings ({', '.join(keys)}); "
                    f"use another rsir_output_dir or pass --rsir_overwrite=True to start over")
        distributed.barrier()            # every rank has read the old config
        if self.writer:
            if keys:
                shutil.rmtree(self.rounds_dir, ignore_errors=True)
            os.makedirs(self.output_dir, exist_ok=True)
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                yaml.safe_dump(plain, f, sort_keys=True)
            os.replace(path + ".tmp", path)
        distributed.barrier()            # and no rank reads rounds the writer is removing
