"""recbole-rsir: Recursive Self-Improving Recommendation (RSIR) on RecBole."""
from recbole_rsir import compat  # noqa: F401  (must run before RecBole is used)

__version__ = "0.1.0"
