"""Model lookup that knows this package's backbones as well as RecBole's."""
import importlib

from recbole.utils import ModelType
from recbole.utils import get_model as recbole_get_model

from recbole_rsir.errors import UnknownModelError

_OWN_MODEL_PACKAGE = "recbole_rsir.model.sequential_recommender"


def _own_model_class(model_name):
    module_path = f"{_OWN_MODEL_PACKAGE}.{model_name.lower()}"
    if importlib.util.find_spec(module_path) is None:
        return None
    return getattr(importlib.import_module(module_path), model_name, None)


def sequential_model_names():
    """Every sequential model name this package can train: its own, then RecBole's."""
    import recbole.model.sequential_recommender as recbole_seq

    import recbole_rsir.model.sequential_recommender as own_seq

    names = set(own_seq.__all__)
    for name in dir(recbole_seq):
        cls = getattr(recbole_seq, name)
        if isinstance(cls, type) and getattr(cls, "type", None) == ModelType.SEQUENTIAL:
            names.add(name)
    return sorted(names)


def get_model(model_name):
    """This package's model of that name, else RecBole's (RecBole's get_model sees only its own)."""
    model_class = _own_model_class(model_name)
    if model_class is not None:
        return model_class
    try:
        return recbole_get_model(model_name)
    except (ValueError, ImportError):  # its search imports exlib_recommender, which needs lightgbm
        raise UnknownModelError(
            f"unknown model {model_name!r}; sequential models: {', '.join(sequential_model_names())}"
        ) from None
