"""Runs over several processes with torch.distributed: starting the group, and the few
collectives RSIR needs.

A run is distributed when torchrun started it (``RANK``/``WORLD_SIZE`` in the environment) or
when a launcher gave it RecBole's keys (``local_rank`` per process, with ``world_size``, ``ip``,
``port`` and ``offset``, as RecBole's ``run`` and ``nproc`` do). RecBole 1.2.1 starts such a
group only on GPUs (nccl, one CUDA device per rank); :func:`start` chooses the backend from the
device instead: nccl on CUDA, gloo on CPU. What the ranks share:

- training: every rank reads the same global batches and trains on its own rows of each
  (trainer/distributed.py), through RecBole's DDP gradient reduction;
- evaluation: every rank ranks every user (exact metrics, the same early stopping everywhere);
- generation: each rank decodes its share of the slots, then all slots are gathered once;
- files: rank 0 alone writes results, rounds and checkpoints (:func:`is_main`).
"""
import contextlib
import os

import torch
import torch.distributed as dist


LAUNCH_KEYS = frozenset({"local_rank", "ip", "port", "offset", "nproc", "state", "verbose"})
"""RecBole keys that differ between the ranks of one run or say only how it starts and logs; a
resumed run may change them. ``world_size`` is not one: ranks draw their own dropout masks."""


def requested(config_dict):
    """True when this process is one of several: started by torchrun or given ``local_rank``."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or "local_rank" in config_dict


def start(config_dict):
    """Join the process group and set the device and RecBole's distributed keys in ``config_dict``."""
    use_cuda = bool(config_dict.get("use_gpu", True)) and torch.cuda.is_available()
    if "local_rank" in config_dict:              # RecBole's launcher: tcp address and rank offset
        rank = int(config_dict["local_rank"]) + int(config_dict.get("offset") or 0)
        world = int(config_dict["world_size"])
        init = f"tcp://{config_dict.get('ip', 'localhost')}:{config_dict.get('port', '5678')}"
        local = int(config_dict["local_rank"])
    else:                                        # torchrun
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        init, local = "env://", int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method=init,
                                rank=rank, world_size=world)
    if use_cuda:
        torch.cuda.set_device(local)
    config_dict.update(local_rank=local, world_size=world, single_spec=False,
                       device=torch.device("cuda", local) if use_cuda else torch.device("cpu"))
    if rank != 0:                                # as RecBole: only rank 0 logs and shows progress
        config_dict.update(state="error", show_progress=False, verbose=False)


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main():
    """The process that writes files."""
    return rank() == 0


def barrier():
    if world_size() > 1:
        dist.barrier()


def gather(obj):
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def share(n):
    """This rank's contiguous part ``(start, stop)`` of ``n`` things, the parts in rank order."""
    r, w = rank(), world_size()
    return n * r // w, n * (r + 1) // w


@contextlib.contextmanager
def single_process(config):
    """RecBole acts as in one process inside this block (its loaders do not shard, its trainer
    neither wraps DDP nor averages metrics over ranks)."""
    before = config["single_spec"]
    config["single_spec"] = True
    try:
        yield
    finally:
        config["single_spec"] = before


def finish():
    if dist.is_initialized():
        dist.destroy_process_group()
