"""The RSIR paper's claims a study checks, and the rule that says whether its numbers bear one out.

Each claim is a Recall@10 change from the paper (Lian et al., ICML 2026): its own base and arm
figures where it gives them, else only the relative change. The report sets this study's change
of the same arm and round beside it, on the protocol of the paper's code (earlier items filtered).
"""
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Claim:
    dataset: str
    model: str
    arm: str                       # the study's arm: rsir, nofid, w2s
    round: int
    text: str
    change: float                  # the paper's relative change of Recall@10
    base: Optional[float] = None   # the paper's Recall@10 before and after, where it gives them
    value: Optional[float] = None


def _from(base, value):
    return value / base - 1.0


CLAIMS = (
    Claim("amazon-beauty", "SASRec", "rsir", 1, "RSIR over the best baseline (main table)",
          _from(0.0557, 0.0594), 0.0557, 0.0594),
    Claim("amazon-beauty", "SASRec", "nofid", 3, "without fidelity the loop collapses by round 3 "
          "(the paper's ablation is on Sports)", _from(0.0474, 0.0210), 0.0474, 0.0210),
    Claim("amazon-beauty", "SASRec", "w2s", 0, "a weaker generator still helps (weak-to-strong)", 0.0195),
    Claim("amazon-beauty", "CL4SRec", "rsir", 1, "CL4SRec gains (main table)", _from(0.0590, 0.0649), 0.0590, 0.0649),
    Claim("amazon-beauty", "HSTU", "rsir", 1, "HSTU gains (the paper's figure is on Sports)",
          _from(0.0515, 0.0531), 0.0515, 0.0531),
    Claim("amazon-sports-outdoors", "SASRec", "rsir", 1, "one round with fidelity (ablation)",
          _from(0.0474, 0.0512), 0.0474, 0.0512),
    Claim("amazon-sports-outdoors", "SASRec", "rsir", 3, "three rounds with fidelity (ablation)",
          _from(0.0474, 0.0528), 0.0474, 0.0528),
    Claim("amazon-sports-outdoors", "SASRec", "nofid", 3, "without fidelity the loop collapses by round 3 "
          "(ablation)", _from(0.0474, 0.0210), 0.0474, 0.0210),
    Claim("amazon-sports-outdoors", "SASRec", "w2s", 0, "a weaker generator still helps (weak-to-strong)", 0.0195),
)

SIGNIFICANT = 0.05


def verdict(claimed, change, p, n_seeds):
    """Whether a measured relative change bears out a claimed one: the same direction and at least
    half the size reproduces it; below half, it is the same direction but smaller; otherwise it does
    not reproduce. One seed gives no test; with more, p is the paired t-test's."""
    if change is None:
        return "not measured yet"
    if change * claimed <= 0:
        word = "does not reproduce"
    elif abs(change) >= abs(claimed) / 2:
        word = "reproduces"
    else:
        word = "same direction, smaller"
    if n_seeds < 2 or p is None:
        return f"{word} (1 seed, untested)"
    return f"{word} (p {p:.3f}{'' if p < SIGNIFICANT else ', not significant'})"
