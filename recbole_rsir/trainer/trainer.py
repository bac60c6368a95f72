"""RSIRTrainer: RecBole's Trainer with RSIR's fast paths, one concern per module.

- all-position training and its packing dispatch: positions.py
- fused Adam: optim.py
- checkpoints of tensors only, with every random stream: checkpoints.py
- length-bucketed ranking of backbones: evaluation/by_length.py
- RecBole's metric collector without its [users, items] positives matrix: evaluation/collector.py
- the dropout swap: model/dropout.py
- data-parallel training over ranks: distributed.py

Evaluation (full ranking, RecBole's metrics, early stopping on ``valid_metric``) is RecBole's
own, so numbers compare with RecBole baselines; the RSIR reference code's protocol (earlier
items masked) comes with the evaluation loader (evaluation/history_mask.py).
"""
import torch
from recbole.trainer import Trainer

from recbole_rsir.errors import NonFiniteLossError
from recbole_rsir.evaluation.by_length import LengthBucketedEvaluation
from recbole_rsir.evaluation.collector import TopkCollector
from recbole_rsir.model.dropout import use_fast_dropout
from recbole_rsir.trainer.checkpoints import Checkpoints
from recbole_rsir.trainer.distributed import DistributedTraining
from recbole_rsir.trainer.optim import FusedOptimizer
from recbole_rsir.trainer.positions import AllPositionTraining


class RSIRTrainer(DistributedTraining, AllPositionTraining, LengthBucketedEvaluation, Checkpoints, FusedOptimizer, Trainer):
    """RecBole's Trainer, plus the all-position path, length-bucketed evaluation and resumable RNG.

    It changes the model it is given in one way: plain ``nn.Dropout`` layers become
    :class:`FastDropout` (same law, faster on CPU).
    """

    def __init__(self, config, model):
        super().__init__(config, use_fast_dropout(model))
        self.eval_collector = TopkCollector(config)
        self.round_index = 0
        self.epoch = 0

    def _check_nan(self, loss):
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"round {self.round_index}, epoch {self.epoch}: training loss is "
                                     f"{loss.item()}; stopped, finished rounds are kept")
