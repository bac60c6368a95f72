"""What tests/test_distributed.py runs in one process or under torchrun: ``python
distributed_worker.py TASK DATA_PATH OUT``. Rank 0 saves the outcome to OUT (.npz / .pt).
``generate-ann`` generates through an IVF index small enough to miss (each rank builds its own)."""
import sys

import numpy as np
import torch
from conftest import build_tiny

from recbole_rsir import distributed
from recbole_rsir.data.merge import training_loader
from recbole_rsir.data.sequences import SequenceSet, training_sequences
from recbole_rsir.generation.generator import generate
from recbole_rsir.generation.rules import GenerationSettings
from recbole_rsir.trainer.trainer import RSIRTrainer
from recbole_rsir.utils import get_model

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}


def main(task, data_path, out):
    torch.set_num_threads(1)
    ann = {"rsir_candidates": "ann", "rsir_ann_candidates": 21, "rsir_ann_nlist": 16, "rsir_ann_nprobe": 2}
    config, dataset, train_data, _, _ = build_tiny(data_path, train_loss="full_ce", rsir_m=3, rsir_tau=10,
                                                   rsir_gen_batch_size=16, **NO_DROPOUT,
                                                   **(ann if task == "generate-ann" else {}))
    model = get_model("SASRec")(config, train_data.dataset)
    real = training_sequences(train_data.dataset)
    if task.startswith("generate"):
        result = generate(model, real, GenerationSettings.from_config(config), seed=11)
        if distributed.is_main():
            s = result.sequences
            np.savez(out, items=s.items, offsets=s.offsets, timestamps=s.timestamps, users=s.users,
                     counts=np.array(list(result.counts.as_dict().values())))
    elif task == "init" and distributed.is_main():
        torch.save(model.state_dict(), out)
    elif task == "epoch":
        trainer = RSIRTrainer(config, model)
        trainer._train_epoch(training_loader(config, train_data, real, SequenceSet.empty()), 0)
        if distributed.is_main():
            torch.save(trainer.model.state_dict(), out)
    distributed.finish()


if __name__ == "__main__":
    main(*sys.argv[1:])
