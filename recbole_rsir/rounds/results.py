"""What a run reports: one RoundResult per round, the printed table and rsir_results.json."""
import json
import os
from dataclasses import asdict, dataclass, field

from recbole_rsir.config import plain_config

RESULTS_FILE = "rsir_results.json"
TABLE_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr@10")


@dataclass
class RoundResult:
    round: int
    n_real_sequences: int
    n_synthetic_sequences: int
    generate_seconds: float
    train_seconds: float
    valid: dict
    test: dict
    best_epoch: int = -1
    generation: dict = field(default_factory=dict)   # this round's new sequences: counts, rates
    n_extra_sequences: int = 0                       # fixed extra training sequences (baselines)
    n_interactions: int = 0                          # items in all training sequences of the round
    n_items: int = 0                                 # catalogue size (padding excluded)
    protocols: dict = field(default_factory=dict)    # {protocol: {"valid": ..., "test": ...}}

    def as_dict(self):
        return asdict(self)


def plain_metrics(metrics):
    return {k: float(v) for k, v in metrics.items()}


def _relative(value, base):
    if not base or value is None:
        return None
    return (value - base) / base


def results_table(results):
    """The round-by-round table printed at the end of a run (``results``: RoundResult dicts)."""
    base = results[0]["test"]
    header = (f"{'round':>5} {'train seqs (real+syn)':>22} " +
              " ".join(f"{m:>10}" for m in TABLE_METRICS) +
              f" {'Δrecall@10':>11} {'Δndcg@10':>9} {'gen s':>8} {'train s':>8}")
    lines = [header, "-" * len(header)]
    for r in results:
        test = r["test"]
        seqs = f"{r['n_real_sequences']}+{r['n_synthetic_sequences']}"
        rel = [_relative(test.get(m), base.get(m)) for m in ("recall@10", "ndcg@10")]
        lines.append(
            f"{r['round']:>5} {seqs:>22} " + " ".join(f"{test.get(m, float('nan')):>10.4f}" for m in TABLE_METRICS)
            + "".join(f" {v:>+10.1%}" if v is not None else f" {'n/a':>10}" for v in rel)
            + f" {r['generate_seconds']:>8.1f} {r['train_seconds']:>8.1f}")
    return "\n".join(lines)


def write_results(config, results, path):
    """``rsir_results.json``: the run's model, dataset, protocol, final config and rounds so far."""
    payload = {
        "model": config["model"],
        "dataset": config["dataset"],
        "eval_protocol": {
            "split": "leave-one-out by time (valid = second-to-last, test = last item)",
            "ranking": "full ranking over all items",
            "exclude_history_items": config["exclude_history_items"],
        },
        "config": plain_config(config),
        "rounds": results,
    }
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)
    return payload
