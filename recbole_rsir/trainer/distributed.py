"""Data-parallel training on RecBole's DDP path, on CPU as on GPU.

RecBole 1.2.1 wraps the model in ``DistributedDataParallel(model, device_ids=[local_rank])``,
which a CPU model refuses, and averages gradients over ranks through DDP's hooks
(``set_reduce_hook`` before a batch, ``sync_grad_loss`` so every parameter takes part). This
mixin builds the wrapper for the model's device and keeps RecBole's reduction. On the
all-position path every rank reads the same global batch and takes its rows ``rank::world``
(the strided split of RecBole's DistributedSampler) and divides its rows' next-item loss by
the global batch's targets over the world size, so DDP's average of the ranks' gradients is
the gradient of the whole batch's loss. A model's auxiliary loss (CL4SRec's contrastive one)
is a mean over each rank's own rows: averaged over ranks, not the whole batch's. Models on
RecBole's path train as RecBole trains them distributed (its DistributedSampler's shards, each
rank's mean loss). Evaluation runs whole on every rank (no averaging of metrics over ranks).
"""
import torch
from torch.nn.parallel import DistributedDataParallel

from recbole_rsir import distributed


class DistributedTraining:
    """Trainer mixin: RecBole's data-parallel training, with a DDP wrapper CPU models accept."""

    def __init__(self, config, model):
        if config["single_spec"]:
            super().__init__(config, model)
            return
        with distributed.single_process(config):     # RecBole's own wrapper is GPU-only
            super().__init__(config, model)
        self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        on_cuda = self.device.type == "cuda"
        self.distributed_model = DistributedDataParallel(
            self.model, device_ids=[config["local_rank"]] if on_cuda else None)

    def position_loss(self, items, lengths, times, targets_per_batch=None):
        if self.config["single_spec"]:
            return super().position_loss(items, lengths, times, targets_per_batch)
        world = distributed.world_size()
        targets = targets_per_batch or int((lengths - 1).clamp(min=0).sum())
        mine = torch.arange(distributed.rank(), len(lengths), world, device=lengths.device)
        self.set_reduce_hook()
        loss = self.sync_grad_loss()
        if len(mine):
            loss = loss + super().position_loss(items[mine], lengths[mine], times[mine], targets / world)
        return loss

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model:
            distributed.barrier()                    # rank 0 has written the best checkpoint
        with distributed.single_process(self.config):
            return super().evaluate(eval_data, load_best_model, model_file, show_progress)
