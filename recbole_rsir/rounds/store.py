"""Finished rounds on disk, so an interrupted run loses at most the round in progress.

``rsir_output_dir/rounds/round<k>/`` holds a finished round: ``model.pth`` (best weights:
tensors only, loaded with ``weights_only=True``), ``synthetic.npz`` (the sequences accepted in
that round) and ``result.json``. A round is built in ``round<k>.tmp/`` and renamed into place
only when complete, so a folder without ``.tmp`` is always whole; until then its ``model.pth``
is the trainer's checkpoint (the best epoch's weights and the state after the last validated
epoch), from which a stopped round resumes, and
``generated.npz`` with ``generated.json`` keep the round's sequences once generated. Every round
reseeds from (seed, round) and RSIRTrainer's checkpoints carry the random streams, so resuming
gives the same results as not stopping.

Weights are needed only to generate: with round k+1's sequences saved, rounds 0..k resume from
their results and sequences alone, which is what a run moved to another machine carries
(``model.pth`` of a finished scratch round may be missing): :func:`publish_state` copies that
part of an output folder elsewhere, :func:`restore_state` brings it back.
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
GENERATED = ("generated.npz", "generated.json")
"""A round's generated sequences and their statistics, in ``round<k>.tmp/`` until it is finished."""
FINISHED = ("result.json", "synthetic.npz")
"""A finished round's files but its weights."""
WEIGHTS = "model.pth"
"""A round's weights: training's checkpoint in ``round<k>.tmp/``, the best epoch's in ``round<k>/``."""
JUDGE = "judge.pth"
"""The checkpoint of the judge trained for round k's generation (rsir_judge_model), beside its weights."""
KEPT_ON_BEGIN = (WEIGHTS, JUDGE) + GENERATED
"""What an earlier try of a round leaves for the next: the checkpoints of training and of the judge, the generation."""


def read(path, reader):
    """``reader(path)``, or the error that says which round to recompute."""
    try:
        return reader(path)
    except (OSError, ValueError, KeyError, EOFError, RuntimeError, zipfile.BadZipFile) as err:
        raise CorruptFileError(f"{path} is unreadable ({type(err).__name__}: {err}); "
                               f"delete {os.path.dirname(path)} to recompute that round") from None


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_json(path, payload, indent=2):
    """Written whole or not at all (tmp, fsync, rename); the tmp name is the process's, as two
    processes may write the same file (a study's runners publishing one run)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=indent)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_sequences(path, sequences):
    """A SequenceSet as a compressed npz, written whole or not at all."""
    with open(path + ".tmp", "wb") as f:
        np.savez_compressed(f, items=sequences.items, offsets=sequences.offsets,
                            timestamps=sequences.timestamps, users=sequences.users)
    os.replace(path + ".tmp", path)


def load_sequences(path):
    with np.load(path, allow_pickle=False) as data:
        return SequenceSet(data["items"], data["offsets"], data["timestamps"], data["users"])


def round_path(folder, k, pending=False):
    """Round k's folder in ``folder`` (a run's ``rounds/`` or a published state, which share the
    layout): ``round<k>`` once finished, ``round<k>.tmp`` while in progress."""
    return os.path.join(folder, f"round{k}.tmp" if pending else f"round{k}")


class RoundStore:
    """Finished rounds and the checkpoint of the one in progress, on disk. In a distributed run
    every rank reads it and rank 0 (``writer``) alone writes."""

    def __init__(self, output_dir, writer=True):
        self.output_dir = output_dir
        self.writer = writer
        self.rounds_dir = os.path.join(output_dir, "rounds")

    def round_dir(self, k, pending=False):
        return round_path(self.rounds_dir, k, pending)

    def begin(self, k):
        """The temporary folder for round k, emptied but for the checkpoint of an interrupted
        training (training saves there and resumes from it)."""
        tmp = self.round_dir(k, pending=True)
        if not self.writer:
            return tmp
        os.makedirs(tmp, exist_ok=True)
        for name in os.listdir(tmp):
            if name not in KEPT_ON_BEGIN:
                path = os.path.join(tmp, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        return tmp

    def interrupted(self, k):
        """The checkpoint round k's training left when it was stopped, or None."""
        path = self.checkpoint(k)
        return path if os.path.isfile(path) else None

    def checkpoint(self, k, pending=True):
        """Round k's ``model.pth``: the training's checkpoint while in progress, its best weights once finished."""
        return os.path.join(self.round_dir(k, pending), WEIGHTS)

    def judge_checkpoint(self, k):
        """Round k's ``judge.pth``: the judge's training checkpoint, from which a stopped judge resumes."""
        return os.path.join(self.round_dir(k, pending=True), JUDGE)

    def commit(self, k, result, synthetic, state_dict):
        """Round k is finished: its best weights (in place of the trainer's checkpoint, which any
        trainer may have written), its accepted sequences and its result, renamed into place."""
        tmp = self.round_dir(k, pending=True)
        if not self.writer:
            return
        try:
            torch.save({"state_dict": state_dict}, os.path.join(tmp, "weights.pth"))
            os.replace(os.path.join(tmp, "weights.pth"), self.checkpoint(k))
            save_sequences(os.path.join(tmp, "synthetic.npz"), synthetic)
            save_json(os.path.join(tmp, "result.json"), result)
            for name in GENERATED:
                if os.path.isfile(os.path.join(tmp, name)):
                    os.remove(os.path.join(tmp, name))
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
        """``(result dict, synthetic SequenceSet)`` of finished round k."""
        folder = self.round_dir(k)
        return (read(os.path.join(folder, "result.json"), _read_json),
                read(os.path.join(folder, "synthetic.npz"), load_sequences))

    def weights(self, k):
        """The best weights of finished round k; None if its folder came without them."""
        path = self.checkpoint(k, pending=False)
        if not os.path.isfile(path):
            return None
        return read(path, lambda p: torch.load(p, map_location="cpu", weights_only=True)["state_dict"])

    def save_generated(self, k, sequences, stats, seconds):
        """Round k's generated sequences, kept until the round is finished."""
        if not self.writer:
            return
        tmp = self.round_dir(k, pending=True)
        try:
            save_sequences(os.path.join(tmp, GENERATED[0]), sequences)
            save_json(os.path.join(tmp, GENERATED[1]), {"stats": stats, "seconds": seconds})
        except OSError as err:
            raise OutputError(f"cannot save round {k}'s sequences in {self.output_dir}: "
                              f"{err.strerror or err}") from None

    def generated(self, k):
        """``(sequences, stats, seconds)`` an earlier try of round k generated, or None."""
        tmp = self.round_dir(k, pending=True)
        if not os.path.isfile(os.path.join(tmp, GENERATED[1])):   # written last
            return None
        record = read(os.path.join(tmp, GENERATED[1]), _read_json)
        return read(os.path.join(tmp, GENERATED[0]), load_sequences), record["stats"], record["seconds"]

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


# ---- a run moved to another machine ----------------------------------------------------


def _copy(source, target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(source, target + ".copy")
    os.replace(target + ".copy", target)


def publish_state(output_dir, state):
    """Mirror the weightless part of an RSIR output folder into ``state`` (another folder, which a
    study commits): its config, the finished rounds (written once) and the round in progress's
    generated sequences, which leave the state when their round is finished (its
    ``synthetic.npz`` holds them). True if ``state`` changed."""
    rounds, changed, k = RoundStore(output_dir).rounds_dir, False, 0
    if not os.path.isfile(os.path.join(output_dir, RUN_CONFIG)):     # not started (rounds may be copied in)
        return False
    while os.path.isfile(os.path.join(source := round_path(rounds, k), FINISHED[0])):
        done_there, pending_there = round_path(state, k), round_path(state, k, pending=True)
        if not os.path.isfile(os.path.join(done_there, FINISHED[0])):
            if k == 0:
                _copy(os.path.join(output_dir, RUN_CONFIG), os.path.join(state, RUN_CONFIG))
            generated = os.path.join(pending_there, GENERATED[0])
            if os.path.isfile(generated):                      # the same sequences: moved, one blob in git
                os.makedirs(done_there, exist_ok=True)
                os.replace(generated, os.path.join(done_there, FINISHED[1]))
            else:
                _copy(os.path.join(source, FINISHED[1]), os.path.join(done_there, FINISHED[1]))
            _copy(os.path.join(source, FINISHED[0]), os.path.join(done_there, FINISHED[0]))
            changed = True
        if os.path.isdir(pending_there):
            shutil.rmtree(pending_there)
            changed = True
        k += 1
    pending, pending_there = round_path(rounds, k, pending=True), round_path(state, k, pending=True)
    if os.path.isfile(os.path.join(pending, GENERATED[1])) and not os.path.isfile(
            os.path.join(pending_there, GENERATED[1])):
        for name in GENERATED:                                # generated.json last, as the store writes it
            _copy(os.path.join(pending, name), os.path.join(pending_there, name))
        changed = True
    return changed


def restore_state(state, output_dir):
    """Give an RSIR output folder that holds less than a published ``state`` the state's
    rounds, as far as they go on without weights: finished rounds 0..j-1 and round j's sequences,
    where j is the round in progress (its generation published), or else the last finished round
    (trained again from its own sequences, which reproduces it). Returns the rounds restored."""
    rounds = RoundStore(output_dir).rounds_dir
    finished = 0
    while os.path.isfile(os.path.join(round_path(state, finished), FINISHED[0])):
        finished += 1
    if os.path.isfile(os.path.join(round_path(state, finished, pending=True), GENERATED[1])):
        keep, pending = finished, round_path(state, finished, pending=True)
    elif finished > 1:
        keep, pending = finished - 1, None
    else:
        return []
    target = round_path(rounds, keep, pending=True)
    here = len(RoundStore(output_dir).finished())
    if here > keep or os.path.isfile(os.path.join(target, GENERATED[1])):
        return []                                             # this machine is as far or further
    _copy(os.path.join(state, RUN_CONFIG), os.path.join(output_dir, RUN_CONFIG))
    for k in range(here, keep):
        shutil.rmtree(round_path(rounds, k, pending=True), ignore_errors=True)
        shutil.copytree(round_path(state, k), round_path(rounds, k) + ".copy", dirs_exist_ok=True)
        os.replace(round_path(rounds, k) + ".copy", round_path(rounds, k))
    if pending:
        for name in GENERATED:
            _copy(os.path.join(pending, name), os.path.join(target, name))
    else:
        done_there = round_path(state, keep)
        with open(os.path.join(done_there, FINISHED[0]), encoding="utf-8") as f:
            record = json.load(f)
        _copy(os.path.join(done_there, FINISHED[1]), os.path.join(target, GENERATED[0]))
        save_json(os.path.join(target, GENERATED[1]),
                   {"stats": record["generation"], "seconds": record["generate_seconds"]})
    return list(range(here, keep + 1))
