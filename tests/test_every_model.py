"""Every sequential model of RecBole 1.2.1 runs an RSIR round: backbones on the fast paths, the
rest on RecBole's training path and generating through their own full_sort_predict."""
import math
import os

import numpy as np
import pytest
import recbole.model.sequential_recommender as recbole_seq
import torch
from conftest import make_rows, tiny_config_dict
from recbole.data import create_dataset, data_preparation
from recbole.utils import ModelType, init_seed

from recbole_rsir.config import Config
from recbole_rsir.data.convert import write_atomic
from recbole_rsir.errors import ConfigError
from recbole_rsir.model.backbone import is_backbone
from recbole_rsir.rounds.loop import RSIRRounds
from recbole_rsir.utils import get_model

RECBOLE_SEQUENTIAL = sorted(name for name in dir(recbole_seq)
                            if getattr(getattr(recbole_seq, name), "type", None) == ModelType.SEQUENTIAL)
FAST_PATH = {"GRU4Rec", "SASRec"}
"""RecBole's models this package registers as backbones; every other one takes the generic path."""

N_ITEMS, EMBEDDING = 30, 8
FEATURES = {
    "item": ["item_id", "class"],                       # FDSA, GRU4RecF, SASRecF, S3Rec: item attributes
    "kg": ["head_id", "relation_id", "tail_id"],        # KSR, GRU4RecKG: a knowledge graph
    "link": ["item_id", "entity_id"],
    "ent": ["ent_id", "ent_emb"],                       # ... and pretrained entity / relation vectors
    "rel": ["rel_id", "rel_emb"],
}
KG_SETTINGS = {"additional_feat_suffix": ["ent", "rel"], "alias_of_entity_id": ["ent_id"],
               "alias_of_relation_id": ["rel_id"], "preload_weight": {"ent_id": "ent_emb", "rel_id": "rel_emb"},
               "kg_embedding_size": EMBEDDING}
SETTINGS = {
    "KSR": KG_SETTINGS,
    "GRU4RecKG": {**KG_SETTINGS, "embedding_size": EMBEDDING},   # its item table is the entity vectors
    "GRU4RecCPR": {"reranker_CAN_NUM": 10},             # a reranker partition within the tiny catalogue
    "SASRecCPR": {"reranker_CAN_NUM": 10},
    # RecBole trains S3Rec in two runs: pretraining (its PretrainTrainer), then finetuning from the
    # saved weights; a round is the second, started from the file the fixture writes
    "S3Rec": {"train_stage": "finetune"},
    # pairwise models: trained on one sampled negative per target (RSIR's default is CE without)
    "FPMC": {"loss_type": "BPR", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
    "TransRec": {"loss_type": "BPR", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
    "FEARec": {"n_layers": 2},                          # its filters divide by n_layers - 1
    # CTR models: trained on sampled negatives with a label, ranked by predict item by item
    "DIN": {"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}, "loss_type": "BCE"},
    "DIEN": {"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}, "loss_type": "BCE"},
}
CANNOT_RUN = {
    "DIEN": ("every row it reads, in training and in prediction, carries a sequence of sampled negative "
             "items beside the context (DIENDataset samples them for the real prefixes); a synthetic "
             "context has none, so it cannot be scored, nor a synthetic sequence trained on",
             (ConfigError, "DIEN reads 'neg_item_id_list' to score a context")),
}
"""Models that cannot run a round: why, and the error that says so."""


def write_featured_dataset(path):
    """The tiny interactions plus item classes, a knowledge graph and entity/relation vectors."""
    rng = np.random.default_rng(0)
    folder = os.path.join(path, "tiny")
    write_atomic(make_rows(n_items=N_ITEMS), os.path.join(folder, "tiny.inter"))
    vector = lambda: " ".join(f"{v:.4f}" for v in rng.normal(size=EMBEDDING))  # noqa: E731
    files = {
        "item": ["item_id:token\tclass:token_seq"] + [f"{i}\tc{i % 4} c{4 + i % 3}" for i in range(1, N_ITEMS + 1)],
        "kg": ["head_id:token\trelation_id:token\ttail_id:token"]
        + [f"e{i}\tr{i % 2}\te{i % N_ITEMS + 1}" for i in range(1, N_ITEMS + 1)],
        "link": ["item_id:token\tentity_id:token"] + [f"{i}\te{i}" for i in range(1, N_ITEMS + 1)],
        "ent": ["ent_id:token\tent_emb:float_seq"] + [f"e{i}\t{vector()}" for i in range(1, N_ITEMS + 1)],
        "rel": ["rel_id:token\trel_emb:float_seq"] + [f"r{i}\t{vector()}" for i in range(2)],
    }
    for suffix, lines in files.items():
        with open(os.path.join(folder, f"tiny.{suffix}"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def featured(tmp_path_factory, one_thread_module):
    path = str(tmp_path_factory.mktemp("every-model"))
    write_featured_dataset(path)
    return path


def build(path, model_name, **overrides):
    config_dict = tiny_config_dict(path, **{
        "epochs": 1, "embedding_size": 16, "rsir_m": 2, "rsir_rounds": 1, "rsir_tau": 10,
        "rsir_output_dir": os.path.join(path, f"out-{model_name}"),
        "load_col": {**FEATURES, "inter": ["user_id", "item_id", "timestamp"]},
        **SETTINGS.get(model_name, {}), **overrides})
    config = Config(model=model_name, dataset="tiny", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    return (config, *data_preparation(config, create_dataset(config)))


def test_the_list_is_recboles_and_the_fast_path_is_the_backbones():
    assert len(RECBOLE_SEQUENTIAL) == 31 and {"BERT4Rec", "SASRec", "KSR", "DIN"} <= set(RECBOLE_SEQUENTIAL)
    assert {name for name in RECBOLE_SEQUENTIAL if is_backbone(get_model(name))} == FAST_PATH


@pytest.mark.slow
@pytest.mark.parametrize("model_name", RECBOLE_SEQUENTIAL)
def test_every_recbole_sequential_model_runs_a_round(featured, model_name):
    if model_name == "S3Rec":
        pretrained = os.path.join(featured, "s3rec-pretrained.pth")
        config, train_data, _, _ = build(featured, model_name, train_stage="pretrain")
        torch.save({"state_dict": get_model(model_name)(config, train_data.dataset).state_dict()}, pretrained)
        overrides = {"pre_model_path": pretrained}
    else:
        overrides = {}
    config, train_data, valid_data, test_data = build(featured, model_name, **overrides)
    assert config["train_path"] == ("all_positions" if model_name in FAST_PATH else "recbole")
    if model_name in CANNOT_RUN:
        reason, error = CANNOT_RUN[model_name]
        with pytest.raises(error[0], match=error[1]):
            RSIRRounds(config, train_data, valid_data, test_data).run()
        return
    results = RSIRRounds(config, train_data, valid_data, test_data).run()
    assert [r.round for r in results] == [0, 1]
    assert results[1].n_synthetic_sequences == results[1].generation["n_accepted"] > 0
    for r in results:
        for protocol in r.protocols.values():
            for m in protocol.values():
                assert all(math.isfinite(v) and 0 <= v <= 1 for v in m.values()), (model_name, r.protocols)
                assert m["recall@10"] <= m["recall@20"] and m["ndcg@10"] <= m["ndcg@20"], (model_name, m)
                assert m["mrr@10"] <= m["ndcg@10"] <= m["recall@10"], (model_name, m)   # one relevant item


class OwnGRU4Rec(recbole_seq.GRU4Rec):
    """A user's model with a key no yaml declares, as RecBole's custom-model guide builds one."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.own_temperature = config["own_temperature"]

    def full_sort_predict(self, interaction):
        return super().full_sort_predict(interaction) / self.own_temperature


@pytest.mark.slow
def test_a_model_class_of_your_own_runs_a_round(featured):
    config_dict = tiny_config_dict(featured, epochs=1, rsir_m=2, rsir_rounds=1, rsir_tau=10, own_temperature=2.0,
                                   embedding_size=16, num_layers=1, dropout_prob=0.0, loss_type="CE",  # no yaml
                                   rsir_output_dir=os.path.join(featured, "out-own"))
    config = Config(model=OwnGRU4Rec, dataset="tiny", config_dict=config_dict)
    assert config["train_path"] == "recbole" and config["own_temperature"] == 2.0
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    results = RSIRRounds(config, train_data, valid_data, test_data).run()
    assert [r.round for r in results] == [0, 1] and results[1].generation["n_accepted"] > 0
    assert isinstance(RSIRRounds(config, train_data, valid_data, test_data).new_model(0), OwnGRU4Rec)
