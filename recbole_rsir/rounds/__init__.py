"""The RSIR loop (loop.py), its on-disk store (store.py) and its results (results.py)."""
from recbole_rsir.rounds.loop import RSIRRounds
from recbole_rsir.rounds.results import RoundResult

__all__ = ["RSIRRounds", "RoundResult"]
