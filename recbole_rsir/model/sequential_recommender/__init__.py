"""This package's backbones, found by name by :func:`recbole_rsir.utils.get_model`."""
from recbole_rsir.model.sequential_recommender.cl4srec import CL4SRec
from recbole_rsir.model.sequential_recommender.hstu import HSTU

__all__ = ["CL4SRec", "HSTU"]
