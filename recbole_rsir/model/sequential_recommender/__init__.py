"""This package's models, found by name by :func:`recbole_rsir.utils.get_model` before RecBole's.

SASRec and GRU4Rec are RecBole's own, registered as backbones (same parameters and state_dict
keys); CL4SRec and HSTU are this package's.
"""
from recbole_rsir.model.sequential_recommender.cl4srec import CL4SRec
from recbole_rsir.model.sequential_recommender.gru4rec import GRU4Rec
from recbole_rsir.model.sequential_recommender.hstu import HSTU
from recbole_rsir.model.sequential_recommender.sasrec import SASRec

__all__ = ["CL4SRec", "GRU4Rec", "HSTU", "SASRec"]
