"""recbole-rsir: Recursive Self-Improving Recommendation (RSIR) on RecBole."""
from recbole_rsir import compat  # noqa: F401  (must run before RecBole is used)
from recbole_rsir.config import Config
from recbole_rsir.quick_start import run_rsir
from recbole_rsir.rounds.loop import RSIRRounds
from recbole_rsir.trainer.trainer import RSIRTrainer

__version__ = "0.1.0"
__all__ = ["Config", "RSIRRounds", "RSIRTrainer", "run_rsir"]
