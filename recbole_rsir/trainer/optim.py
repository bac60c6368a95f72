"""RecBole's optimizer, rebuilt with torch's fused kernel where torch has one.

RecBole builds Adam with torch's per-tensor loop; the fused kernel takes the same step several
times faster (benchmarks/bench_training.py), which matters at the all-position path's short
steps.
"""
import torch

FUSED = (torch.optim.Adam, torch.optim.AdamW)


class FusedOptimizer:
    """Trainer mixin: RecBole's ``_build_optimizer``, fused for Adam and AdamW on CPU or CUDA."""

    def _build_optimizer(self, **kwargs):
        optimizer = super()._build_optimizer(**kwargs)
        groups = [{k: v for k, v in group.items() if k not in ("fused", "foreach")}
                  for group in optimizer.param_groups]
        devices = {p.device.type for group in groups for p in group["params"]}
        if type(optimizer) not in FUSED or not devices <= {"cpu", "cuda"}:
            return optimizer
        return type(optimizer)(groups, fused=True)
