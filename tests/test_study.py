"""The study: augmentation operators, plan, report arithmetic, and the real command on tiny data."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import build_tiny, make_rows
from scipy import stats

from recbole_rsir import cli
from recbole_rsir.config import PROPERTIES_DIR, Config
from recbole_rsir.data.convert import write_atomic
from recbole_rsir.data.sequences import SequenceSet, eval_targets, training_sequences
from recbole_rsir.evaluation.history_mask import mask_earlier_items
from recbole_rsir.rounds.store import RoundStore, save_json, save_sequences
from recbole_rsir.study import concentration, estimates, report, results, runner, worker
from recbole_rsir.study.augment import OPERATORS, augment, most_similar
from recbole_rsir.study.claims import verdict
from recbole_rsir.study.history import history_share
from recbole_rsir.study.plan import REFINE_K, STRONG_PRESET, SWEEP_P, SWEEP_TAU, Run, plan
from recbole_rsir.study.cells import paired_changes, round_outcome
from recbole_rsir.study.plots import plot_variants, round_series
from recbole_rsir.study.report import build_report
from recbole_rsir.study.summary import summary_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_ITEMS = 31


@pytest.fixture(scope="module")
def real():
    rows = make_rows()
    return SequenceSet.from_lists([r[1] for r in rows], [r[2] for r in rows], [r[0] for r in rows])


# ---- augmentation operators ---------------------------------------------------------------

@pytest.mark.parametrize("operator", list(OPERATORS))
@pytest.mark.parametrize("n", [0, 7, 95])
def test_operator_adds_the_requested_sequences_of_valid_items(real, operator, n):
    out = augment(real, operator, n, seed=3, n_items=N_ITEMS)
    assert len(out) == n
    assert ((out.items >= 1) & (out.items < N_ITEMS)).all()
    assert set(out.users.tolist()) <= set(real.users.tolist())
    assert (out.lengths >= 2).all()
    for i in range(len(out)):
        assert (np.diff(out.times(i)) >= 0).all()      # still time-ordered


def _source(real, user):
    return real[int(np.flatnonzero(real.users == user)[0])]


@pytest.mark.parametrize("operator", ["crop", "reorder", "mask", "substitute", "insert"])
def test_operator_edits_as_documented(real, operator):
    out = augment(real, operator, 60, seed=5, n_items=N_ITEMS)
    similar = most_similar(real, N_ITEMS)
    rate = OPERATORS[operator]
    edited_rows, exact_rows, changed_total, share_total = 0, 0, 0, 0
    for i in range(len(out)):
        edited, source = out[i], _source(real, out.users[i])
        n, share = len(source), min(len(source), max(1, int(rate * len(source))))
        if operator == "crop":
            size = min(n, max(2, int(rate * n)))
            assert len(edited) == size
            assert any((source[s:s + size] == edited).all() for s in range(n - size + 1))
        elif operator == "reorder":
            changed = np.flatnonzero(edited != source)
            assert sorted(edited.tolist()) == sorted(source.tolist())
            assert len(changed) == 0 or changed[-1] - changed[0] < share
            edited_rows += len(changed) > 0
        elif operator == "mask":
            assert len(edited) == n and (edited != source).sum() <= share
            changed_total, share_total = changed_total + (edited != source).sum(), share_total + share
        elif operator == "substitute":
            changed = np.flatnonzero(edited != source)
            assert len(edited) == n and len(changed) <= share
            assert (edited[changed] == similar[source[changed]]).all()
            if (similar[source] > 0).all():         # every item has a similar one: exactly the share changes
                assert len(changed) == share
                exact_rows += 1
        else:  # insert: removing the inserted items gives the source back
            assert n < len(edited) <= n + share
            j, kept = 0, []
            for item in edited.tolist():
                if j < n and item == source[j]:
                    kept.append(item)
                    j += 1
            assert kept == source.tolist()
    # the operator does edit: a shuffle may leave its span as it was, a random item may be the one it replaces
    assert {"reorder": edited_rows >= len(out) / 2, "mask": changed_total >= 0.8 * share_total,
            "substitute": exact_rows >= len(out) / 2}.get(operator, True)


def test_same_seed_same_sequences_other_seed_others(real):
    a, b, c = (augment(real, "mask", 30, seed=s, n_items=N_ITEMS) for s in (1, 1, 2))
    assert a.to_lists() == b.to_lists() != c.to_lists()


def test_most_similar_is_the_top_cosine_of_co_occurrence(real):
    sets = [set(real[i].tolist()) for i in range(len(real))]
    count = lambda *items: sum(all(x in s for x in items) for s in sets)
    best = most_similar(real, N_ITEMS)
    for item in range(1, N_ITEMS):
        scores = {j: count(item, j) / np.sqrt(count(item) * count(j)) for j in range(1, N_ITEMS)
                  if j != item and count(item, j)}
        if not scores:
            assert best[item] == 0
            continue
        top = max(scores.values())
        assert np.isclose(scores[best[item]], top)
        assert best[item] == min(j for j, v in scores.items() if np.isclose(v, top))


def test_operators_never_see_validation_or_test_items(tmp_path):
    """Built from RecBole's training split, no operator output depends on held-out items:
    items only ever held out never appear, and changing them changes nothing."""
    outputs = []
    for variant in (0, 1):
        rows = [(u, items[:-2] + [40 + variant, 45 + variant], ts) for u, items, ts in make_rows()]
        path = str(tmp_path / f"v{variant}")
        write_atomic(rows, os.path.join(path, "tiny", "tiny.inter"))
        _, _, train, _, _ = build_tiny(path)
        sequences = training_sequences(train.dataset)
        held_out = {train.dataset.token2id(train.dataset.iid_field, str(t)) for t in (40 + variant, 45 + variant)}
        runs = {op: augment(sequences, op, 50, seed=9, n_items=train.dataset.item_num) for op in OPERATORS}
        for op, out in runs.items():
            if op != "mask":      # mask draws random catalogue items by design
                assert not held_out & set(out.items.tolist()), op
        outputs.append({op: out.to_lists() for op, out in runs.items() if op != "mask"})
    assert outputs[0] == outputs[1]


# ---- plan -----------------------------------------------------------------------------------

def test_plan_orders_dependencies_and_shares_round0():
    runs = plan(["d"], ["SASRec"], [1, 2], 3, ["nofid", "ft", "aug", "w2s", "strong", "sweep"])
    names = [r.name for r in runs]
    assert len(names) == len(set(names))
    for i, run in enumerate(runs):
        for need in run.needs:
            assert f"SASRec/{need}/seed{run.seed}" in names[:i]
    ft = [r for r in runs if r.arm == "ft"]
    sweep = [r for r in runs if r.arm.startswith("sweep")]
    assert [r.seed for r in ft] == [1] and {r.seed for r in sweep} == {1}
    assert len(sweep) == len(SWEEP_TAU) * len(SWEEP_P) and all(r.rounds == 1 for r in sweep)
    assert all(r.round0_from == "rsir" for r in runs if r.arm in ("nofid", "ft") or r.arm.startswith("sweep"))
    assert sum(r.arm.startswith("aug-") for r in runs) == 2 * len(OPERATORS)
    one = plan(["d"], ["SASRec"], [1], 3, ["aug-insert", "nofid"])
    assert [(r.arm, r.extra, r.needs) for r in one] == [("rsir", None, ()), ("nofid", None, ("rsir",)),
                                                       ("aug-insert", "aug-insert", ("rsir",))]
    both = plan(["d"], ["SASRec"], [1], 3, ["aug", "aug-crop"])
    assert [r.arm for r in both] == ["rsir"] + [f"aug-{op}" for op in OPERATORS]


def test_a_plan_of_two_datasets_has_each_datasets_runs():
    arms = ["nofid", "ft", "aug", "w2s", "strong"]
    one = [r.name for r in plan(["d"], ["SASRec"], [1, 2], 3, arms)]
    both = plan(["d", "e"], ["SASRec"], [1, 2], 3, arms)
    assert [r.name for r in both if r.dataset == "d"] == one == [r.name for r in both if r.dataset == "e"]
    assert len({r.key for r in both}) == len(both) == 2 * len(one)


def test_variant_arms_reuse_their_base_round0_and_turn_one_option_on():
    runs = plan(["d"], ["SASRec"], [1, 2], 3, ["tau", "judge", "refine", "strong"])
    names = [r.name for r in runs]
    for i, run in enumerate(runs):
        for need in run.needs:
            assert f"SASRec/{need}/seed{run.seed}" in names[:i]
    by_arm = {r.arm: r for r in runs if r.seed == 1}
    variants = {"refine": {"rsir_refine": REFINE_K}, "judge-previous": {"rsir_judge_model": "previous"},
                "judge-HSTU": {"rsir_judge_model": "HSTU"},
                "tau-tighten": {"rsir_tau_schedule": "tighten", "rsir_tau_factor": 0.5},
                "tau-user": {"rsir_tau_schedule": "per_user"}}
    for arm, overrides in variants.items():
        plain, strong = by_arm[arm], by_arm[f"strong-{arm}"]
        assert plain.overrides == strong.overrides == overrides and plain.rounds == strong.rounds == 3
        assert (plain.round0_from, strong.round0_from) == ("rsir", "strong")
        assert plain.shared_rounds == strong.shared_rounds == (2 if arm in ("judge-previous", "tau-tighten") else 1)
        assert plain.config_files == () and strong.config_files == (os.path.relpath(STRONG_PRESET),)
    assert len(runs) == 2 * (2 + 2 * len(variants))
    without_strong = plan(["d"], ["SASRec"], [1], 3, ["refine"])
    assert [r.arm for r in without_strong] == ["rsir", "refine"]
    assert [r.arm for r in plan(["d"], ["HSTU"], [1], 1, ["judge"])] == ["rsir", "judge-previous", "judge-SASRec"]


def test_estimates_count_partial_rounds_and_leave_out_the_done_ones():
    """Round 0 takes 100 s; rsir's later rounds 10, 15 and 80 s (median 15 s: the 80 s one ran on a
    crowded machine), nofid's 35 s, so every later round's median is 25 s. An arm is estimated from
    its own later rounds, an arm without any from all of them; a run with rounds 0-2 done is one
    later round from the end, whatever its arm shares."""
    by_arm = {r.arm: r for r in plan(["d"], ["SASRec"], [1], 3, ["nofid", "judge", "sweep"])}
    rsir, nofid = by_arm["rsir"], by_arm["nofid"]

    def partial(run, seconds):
        rounds = [{"round": k, "train_seconds": s, "generate_seconds": 0.0} for k, s in enumerate(seconds)]
        return {"run": run.as_dict(), "rounds": rounds, "complete": False}

    payloads = [partial(rsir, [100.0, 5.0, 15.0, 80.0]), partial(nofid, [100.0, 35.0])]  # nofid's round 0 is rsir's
    payloads[0]["rounds"][1]["generate_seconds"] = 5.0                                   # generation counts too
    seconds = estimates.round_seconds(payloads)
    assert seconds == {("SASRec", "default", False): 100.0, ("SASRec", "default", True, "rsir"): 15.0,
                       ("SASRec", "default", True, "nofid"): 35.0, ("SASRec", "default", True, None): 25.0}
    assert [results.finished_rounds(p) for p in payloads] == [4, 2]
    assert results.finished_rounds(None) == 0 and results.finished_rounds({**payloads[0], "complete": True}) == 0
    assert estimates.estimate(rsir, seconds) == 100.0 + 3 * 15.0
    assert estimates.estimate(rsir, seconds, finished=3) == 15.0
    assert estimates.estimate(nofid, seconds) == 3 * 35.0 and estimates.estimate(nofid, seconds, finished=2) == 70.0
    judged = by_arm["judge-previous"]                                     # shares rounds 0 and 1
    assert estimates.estimate(judged, seconds) == 2 * 25.0 and estimates.estimate(judged, seconds, finished=4) == 0
    assert estimates.estimate(by_arm["sweep-tau5-p0.25"], seconds) == 25.0
    swept = partial(by_arm["sweep-tau1-p0"], [100.0, 4.0])                # the sweep's cells estimate each other
    assert estimates.estimate(by_arm["sweep-tau5-p0.25"], estimates.round_seconds(payloads + [swept])) == 4.0
    strong = plan(["d"], ["SASRec"], [1], 3, ["strong"])[-1]
    assert estimates.estimate(strong, seconds) is None
    assert estimates.total_line([60.0 * 60, 30.0 * 60, None], jobs=1).startswith("1.5 h with 1 job for the 2 runs")


# ---- report arithmetic ------------------------------------------------------------------

def _fake_payload(model, arm, seed, recall):
    protocols = {p: {"valid": {}, "test": {"recall@10": r, "recall@20": r, "ndcg@10": r / 2, "ndcg@20": r / 2,
                                           "mrr@10": r / 3}} for p, r in (("recbole", recall[0]),
                                                                         ("exclude_history", recall[1]))}
    rounds = [{"round": 0, "protocols": protocols, "n_real_sequences": 10, "n_synthetic_sequences": 0,
               "n_extra_sequences": 0, "n_interactions": 50, "n_items": 20, "generation": {},
               "train_seconds": 600.0, "generate_seconds": 0.0}]
    return {"run": Run("d", model, arm, seed, 0).as_dict(), "rounds": rounds, "extra": {}}


def _write_round1(folder, arm, seed, recall, generation):
    """A SASRec run's results file: round 0 at (0.1, 0.2) and, given ``recall`` (RecBole's, filtered
    Recall@10), a round 1 with ``generation``."""
    payload = _fake_payload("SASRec", arm, seed, (0.1, 0.2))
    if recall:
        r1 = json.loads(json.dumps(payload["rounds"][0]))
        for protocol, value in zip(("recbole", "exclude_history"), recall):
            r1["protocols"][protocol]["test"]["recall@10"] = value
        r1.update(round=1, generation=generation)
        payload["rounds"].append(r1)
        payload["run"]["rounds"] = 1
    path = folder / "runs" / "SASRec" / arm / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


def test_report_means_changes_and_paired_test(tmp_path):
    base = {2020: (0.10, 0.20), 2021: (0.12, 0.22), 2022: (0.11, 0.25)}
    crop = {2020: (0.13, 0.21), 2021: (0.12, 0.24), 2022: (0.16, 0.26)}
    for arm, cells in (("rsir", base), ("aug-crop", crop)):
        for seed, recall in cells.items():
            path = tmp_path / "runs" / "SASRec" / arm / f"seed{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(_fake_payload("SASRec", arm, seed, recall)))
    planned = plan(["d"], ["SASRec"], [2020, 2021, 2022], 1, ["aug"])
    missing = build_report(str(tmp_path), "d", planned)
    assert missing == sorted(r.name for r in planned if r.arm not in ("rsir", "aug-crop"))
    text = (tmp_path / "report.md").read_text()
    for protocol in (0, 1):
        b = np.array([base[s][protocol] for s in sorted(base)])
        c = np.array([crop[s][protocol] for s in sorted(crop)])
        row = (f"| augment: crop | 3 | {c.mean():.4f} ± {c.std(ddof=1):.4f} | {c.mean():.4f} ± {c.std(ddof=1):.4f} "
               f"| {c.mean() / 2:.4f} ± {c.std(ddof=1) / 2:.4f} |")
        assert row in text
        assert f"{c.mean() / b.mean() - 1:+.1%} | " in text
        assert f"| {stats.ttest_rel(c, b).pvalue:.3f} |" in text
    for name in missing:                                  # each an own round 0 of the measured 600 s
        assert f"- {name}: ~10 min" in text
    assert f"measured so far: {len(missing) * 600 / 3600:.1f} h with 1 job for the {len(missing)} runs" in text
    assert "variants.png" not in text and not (tmp_path / "plots" / "SASRec-variants.png").exists()
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["runs"]) == 6 and results["missing"] == missing


def test_summary_table_takes_means_changes_and_the_best_augmentation_per_column(tmp_path):
    base = {2020: (0.10, 0.20), 2021: (0.12, 0.22), 2022: (0.11, 0.25)}
    crop = {2020: (0.13, 0.21), 2021: (0.12, 0.24), 2022: (0.16, 0.26)}
    mask = {2020: (0.09, 0.30)}
    for arm, cells in (("rsir", base), ("aug-crop", crop), ("aug-mask", mask)):
        for seed, recall in cells.items():
            path = tmp_path / "amazon-beauty" / "runs" / "SASRec" / arm / f"seed{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(_fake_payload("SASRec", arm, seed, recall)))
    lines = summary_table(str(tmp_path))
    assert len(lines) == 4                                   # header, rule, base, best augmentation
    b = [np.mean([v[i] for v in base.values()]) for i in (0, 1)]
    c = np.array([crop[s][0] for s in sorted(crop)])
    p = stats.ttest_rel(c, np.array([base[s][0] for s in sorted(base)])).pvalue
    assert lines[2] == f"| SASRec base (package defaults) | 3 / – | {b[0]:.4f} | {b[1]:.4f} | – | – |"
    assert lines[3] == (f"| SASRec + best of five augmentations | 3,1 / – | crop: {c.mean():.4f} "
                        f"({c.mean() / b[0] - 1:+.1%}{'†' if p < 0.05 else ''}) | mask: {mask[2020][1]:.4f} "
                        f"({mask[2020][1] / base[2020][1] - 1:+.1%}) | – | – |")   # on the seed both have


def test_short_summary_leaves_out_the_intermediate_rounds_of_ft_nofid_and_strong(tmp_path):
    for arm in ("rsir", "ft", "nofid", "strong"):
        path = tmp_path / "amazon-beauty" / "runs" / "SASRec" / arm / "seed2020.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = _fake_payload("SASRec", arm, 2020, (0.1, 0.2))
        payload["rounds"] = [dict(payload["rounds"][0], round=k) for k in range(4)]
        path.write_text(json.dumps(payload))
    full = [line.split(" | ")[0][2:] for line in summary_table(str(tmp_path))[2:]]
    short = [line.split(" | ")[0][2:] for line in summary_table(str(tmp_path), short=True)[2:]]
    left_out = ["SASRec + RSIR-FT (fine-tuned) round 1", "SASRec + RSIR-FT (fine-tuned) round 2",
                "SASRec, no fidelity, round 1", "SASRec, no fidelity, round 2", "strong + RSIR round 2"]
    assert len(full) == 14 and short == [label for label in full if label not in left_out]


@pytest.mark.parametrize("claimed, change, p, n, expected", [
    (0.08, 0.05, 0.01, 3, "reproduces (p 0.010)"),
    (0.08, 0.03, 0.20, 3, "same direction, smaller (p 0.200, not significant)"),
    (0.08, -0.01, None, 1, "does not reproduce (1 seed, untested)"),
    (-0.56, -0.30, 0.04, 2, "reproduces (p 0.040)"),
    (-0.56, 0.07, 0.30, 3, "does not reproduce (p 0.300, not significant)"),
    (0.08, None, None, 0, "not measured yet"),
])
def test_claim_verdicts(claimed, change, p, n, expected):
    assert verdict(claimed, change, p, n) == expected


def test_report_sets_the_papers_claims_beside_the_studys_numbers(tmp_path):
    """Sports claims: RSIR rounds 1 and 3 and no fidelity round 3, each from the seeds' runs."""
    base = {2020: (0.040, 0.044), 2021: (0.042, 0.046)}
    rsir = {2020: (0.043, 0.047), 2021: (0.044, 0.050)}
    nofid = {2020: (0.041, 0.043)}
    crop = {2020: (0.045, 0.046)}
    path = tmp_path / "runs" / "SASRec" / "aug-crop" / "seed2020.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_fake_payload("SASRec", "aug-crop", 2020, crop[2020])))
    for arm, cells in (("rsir", rsir), ("nofid", nofid)):
        for seed, recall in cells.items():
            payload = _fake_payload("SASRec", arm, seed, base[seed])
            for k in (1, 2, 3):
                r = json.loads(json.dumps(payload["rounds"][0]))
                r.update(round=k)
                for name, value in zip(("recbole", "exclude_history"), recall):
                    r["protocols"][name]["test"]["recall@10"] = value
                payload["rounds"].append(r)
            path = tmp_path / "runs" / "SASRec" / arm / f"seed{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(payload))
    build_report(str(tmp_path), "amazon-sports-outdoors", plan(["amazon-sports-outdoors"], ["SASRec"], [2020], 3,
                                                               ["nofid"]))
    text = (tmp_path / "report.md").read_text()
    b, r = (np.array([cells[s][1] for s in sorted(cells)]) for cells in (base, rsir))
    change = r.mean() / b.mean() - 1
    p = stats.ttest_rel(r, b).pvalue
    for k, claimed in ((1, 0.0512 / 0.0474 - 1), (3, 0.0528 / 0.0474 - 1)):
        assert (f"| {b.mean():.4f} → {r.mean():.4f} ({change:+.1%}, 2 seeds, p {p:.3f}) | "
                f"{np.mean([rsir[s][0] for s in rsir]) / np.mean([base[s][0] for s in base]) - 1:+.1%} | "
                f"{verdict(claimed, change, p, 2)} |") in text
    collapse = nofid[2020][1] / base[2020][1] - 1      # against the base on the one seed both have
    assert (f"| 0.0474 → 0.0210 (-55.7%) | {base[2020][1]:.4f} → {nofid[2020][1]:.4f} ({collapse:+.1%}, 1 seed) | "
            f"{nofid[2020][0] / base[2020][0] - 1:+.1%} | same direction, smaller (1 seed, untested) |") in text
    assert "| a weaker generator still helps (weak-to-strong) | +1.95% | – | – | not measured yet |" in text
    # augmentation ran on seed 2020 only: RSIR's round 1 is set against it on that seed
    assert ("RSIR round 1 Recall@10 is above 0 of 1 augmentation baselines on the seeds both have "
            "(crop 0.0450 against 0.0430)") in text
    assert ("RSIR round 1 Recall@10 is above 1 of 1 augmentation baselines on the seeds both have "
            "(crop 0.0460 against 0.0470)") in text


@pytest.mark.parametrize("base, prefix, label", [("rsir", "", "RSIR"), ("strong", "strong-", "strong + RSIR")])
def test_report_sets_variants_beside_plain_rsir_with_their_generation(tmp_path, base, prefix, label):
    recall = {(base, 2020): 0.10, (base, 2021): 0.12, (prefix + "refine", 2020): 0.13,
              (prefix + "refine", 2021): 0.16}
    for (arm, seed), value in recall.items():
        payload = _fake_payload("SASRec", arm, seed, (0.1, 0.2))
        r1 = json.loads(json.dumps(payload["rounds"][0]))
        r1.update(round=1, n_synthetic_sequences=5, n_interactions=70,
                  generation={"n_accepted": 5, "mean_length": 4.0 + arm.endswith("refine"), "acceptance_rate": 0.25,
                              "fidelity_failure_rate": 0.5, "history_pick_share": 0.5, "tau": 50,
                              "refine_attempts": 8 if arm.endswith("refine") else 0, "refine_success_rate": 0.25})
        for protocol in r1["protocols"].values():
            protocol["test"]["recall@10"] = value
        payload["rounds"].append(r1)
        payload["run"]["rounds"] = 1
        path = tmp_path / "runs" / "SASRec" / arm / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload))
    build_report(str(tmp_path), "d", plan(["d"], ["SASRec"], [2020, 2021], 1, ["refine", "strong"]))
    text = (tmp_path / "report.md").read_text()
    assert text.count(f"| {label}, refine on miss (K=3), round 1 | 2 | 0.1450 ± 0.0212 |") == 2   # both protocols
    change, p = 0.145 / 0.11 - 1, stats.ttest_rel([0.13, 0.16], [0.10, 0.12]).pvalue
    assert text.count(f"{label}, refine on miss (K=3), round 1 vs without it: Recall@10 0.1450 against 0.1100 "
                      f"on 2 seed(s) ({change:+.1%}, p {p:.3f})") == 2
    size = f"{10 + 5} | 70 | {70 / ((10 + 5) * 20):.5f} | 5"     # real + synthetic sequences, interactions, density
    assert f"| {prefix}refine | 1 | 2 | {size} | 5.00 | 25.0% | 50.0% | 50.0% | 50 | 8 (25.0%) |" in text
    assert f"| {base} | 1 | 2 | {size} | 4.00 | 25.0% | 50.0% | 50.0% | 50 | - |" in text
    assert "![variants](plots/SASRec-variants.png)" in text
    assert (tmp_path / "plots" / "SASRec-variants.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("filtered_refine, beyond", [((0.13, 0.16), "better"), ((0.12, 0.12), "no")])
def test_variant_table_calls_a_win_only_beyond_the_spread_on_both_protocols(tmp_path, filtered_refine, beyond):
    """RecBole's protocol: refine 0.13 / 0.16 against plain 0.10 / 0.12 clears the larger sd (0.0212);
    filtered, 0.12 / 0.12 against the same plain does not (difference 0.010, sd 0.0141)."""
    recbole = {"rsir": (0.10, 0.12), "refine": (0.13, 0.16)}
    filtered = {"rsir": (0.10, 0.12), "refine": filtered_refine}
    for arm in recbole:
        for i, seed in enumerate((2020, 2021)):
            _write_round1(tmp_path, arm, seed, (recbole[arm][i], filtered[arm][i]),
                          {"acceptance_rate": 0.2 + 0.1 * i + 0.1 * (arm == "refine"), "mean_length": 4.0 + i})
    build_report(str(tmp_path), "d", plan(["d"], ["SASRec"], [2020, 2021], 1, ["refine"]))
    text = (tmp_path / "report.md").read_text()
    mean = np.mean(filtered_refine)
    assert (f"| refine on miss (K=3) | 1 | 2 | 0.1450 / 0.1100 (+31.8%) | {mean:.4f} / 0.1100 "
            f"({mean / 0.11 - 1:+.1%}) | 35.0% / 25.0% | 4.50 / 4.50 | {beyond} |") in text
    assert ("- refine on miss (K=3): beats plain RSIR beyond the spread on both protocols in round 1 (2 seeds)"
            if beyond == "better" else
            "- refine on miss (K=3): does not beat plain RSIR beyond the spread in any round (2 seeds); it stays off"
            ) in text


@pytest.mark.parametrize("won, lost, judged, expected", [
    ([], [], {}, "one seed so far, no verdict"),
    ([], [], {1: 2}, "no win in round 1 (2 seeds); rounds 2, 3 not judged yet"),
    ([], [1], {1: 3, 2: 2, 3: 2}, "does not beat plain RSIR beyond the spread in any round (2 seeds); "
                                  "worse beyond the spread in round 1; it stays off"),
    ([1], [], {1: 2, 2: 2}, "beats plain RSIR beyond the spread on both protocols in round 1 (2 seeds); "
                            "round 3 not judged yet"),
    ([1, 3], [], {1: 3, 2: 3, 3: 3}, "beats plain RSIR beyond the spread on both protocols in rounds 1, 3 (3 seeds)"),
])
def test_a_variant_is_called_off_only_once_every_round_is_judged(won, lost, judged, expected):
    assert report.variant_verdict(won, lost, judged, 3) == expected


@pytest.mark.parametrize("variant, outcome", [((0.13, 0.16), "better"), ((0.12, 0.12), "level"),
                                              ((0.05, 0.07), "worse"), ((0.13,), None)])
def test_a_round_is_better_or_worse_only_beyond_the_spread_on_every_protocol(variant, outcome):
    plain = {2020: 0.10, 2021: 0.12}                       # sd 0.0141
    cell = dict(zip((2020, 2021), variant))
    assert round_outcome((cell, plain), ({2020: 0.2, 2021: 0.3}, {2020: 0.1, 2021: 0.1})) == (
        outcome if outcome != "worse" else "level")      # worse on one protocol, better on the other
    assert round_outcome((cell, plain), (cell, plain)) == outcome


def test_the_variants_plot_draws_changes_over_the_seeds_both_arms_have(tmp_path):
    for arm, seed, recall in (("rsir", 1, (0.10, 0.20)), ("rsir", 2, (0.20, 0.25)), ("rsir", 3, (0.30, 0.30)),
                              ("refine", 2, (0.22, 0.20)), ("refine", 3, (0.27, 0.36)), ("refine", 4, (0.9, 0.9))):
        _write_round1(tmp_path, arm, seed, recall, {})
    runs = results.load_runs(str(tmp_path))
    assert paired_changes(runs, "SASRec", "refine", "rsir", 1, "recbole") == pytest.approx([0.1, -0.1])
    assert paired_changes(runs, "SASRec", "refine", "rsir", 1, "exclude_history") == pytest.approx([-0.2, 0.2])
    assert paired_changes(runs, "SASRec", "strong-refine", "strong", 1, "recbole") == []
    assert plot_variants(runs, "SASRec", 1, str(tmp_path / "v.png"))
    assert (tmp_path / "v.png").read_bytes()[:4] == b"\x89PNG"
    del runs[("SASRec", "refine", 2)], runs[("SASRec", "refine", 3)]
    assert not plot_variants(runs, "SASRec", 1, str(tmp_path / "none.png"))
    assert not (tmp_path / "none.png").exists()


def test_a_plotted_line_starts_from_the_base_of_its_own_seeds():
    runs = {}
    for arm, seed, recall in (("rsir", 1, [0.10, 0.14]), ("rsir", 2, [0.18, 0.22]), ("rsir", 3, [0.30, 0.33]),
                              ("nofid", 2, [0.18, 0.25, 0.27])):
        payload = _fake_payload("SASRec", arm, seed, (0.0, 0.0))
        payload["rounds"] = [json.loads(json.dumps(payload["rounds"][0])) for _ in recall]
        for k, (r, value) in enumerate(zip(payload["rounds"], recall)):
            r["round"], r["protocols"]["recbole"]["test"]["recall@10"] = k, value
        runs[("SASRec", arm, seed)] = payload
    xs, ys, es, n = round_series(runs, "SASRec", 2, "recbole", "nofid", "rsir")
    assert (xs, n) == ([0, 1, 2], 1) and ys == pytest.approx([0.18, 0.25, 0.27]) and es == [0.0, 0.0, 0.0]
    xs, ys, es, n = round_series(runs, "SASRec", 2, "recbole", "rsir", "rsir")
    assert (xs, n) == ([0, 1], 3) and ys == pytest.approx([0.58 / 3, 0.23])
    assert es == pytest.approx([np.std([0.1, 0.18, 0.3], ddof=1), np.std([0.14, 0.22, 0.33], ddof=1)])


def test_report_gives_the_per_user_taus_summary_where_there_is_no_one_tau(tmp_path):
    for arm, seed, tau_mean in (("rsir", 1, None), ("tau-user", 1, 12.0), ("tau-user", 2, 15.0)):
        payload = _fake_payload("SASRec", arm, seed, (0.1, 0.2))
        r1 = json.loads(json.dumps(payload["rounds"][0]))
        taus = {"tau": 50} if tau_mean is None else {"tau_mean": tau_mean, "tau_q50": tau_mean - 5 / 3}
        r1.update(round=1, generation={"n_accepted": 5, "mean_length": 4.0, "acceptance_rate": 0.25,
                                       "fidelity_failure_rate": 0.5, "history_pick_share": 0.5, **taus})
        payload["rounds"].append(r1)
        payload["run"]["rounds"] = 1
        path = tmp_path / "runs" / "SASRec" / arm / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload))
    build_report(str(tmp_path), "d", plan(["d"], ["SASRec"], [1, 2], 1, ["tau"]))
    text = (tmp_path / "report.md").read_text()
    assert "| tau-user | 1 | 2 |" in text and "| per user: mean 13.5, median 11.8 | - |" in text
    assert text.count("| RSIR, tau per user (median own rank, at most 200), round 1 |") == 2


def test_report_gives_each_variant_a_run_rsir_command_with_the_study_runs_settings(tmp_path, monkeypatch):
    planned = plan(["amazon-beauty"], ["SASRec"], [2021, 2022], 3, ["strong", "refine", "judge", "tau"])
    for run in planned:
        _write_round1(tmp_path, run.arm, run.seed, (0.1, 0.2), {"acceptance_rate": 0.25, "mean_length": 4.0})
    build_report(str(tmp_path), "amazon-beauty", planned)
    lines = (tmp_path / "report.md").read_text().splitlines()
    commands = [line.split("`")[1].split()[2:] for line in lines if "`python run_rsir.py" in line]
    preset = [line.split("`")[1] for line in lines if line.startswith("- strong + any of them")]
    variants = [run for run in planned if run.round0_from == "rsir" and run.seed == 2021]
    assert len(commands) == len(variants) == 5 and len(preset) == 1
    calls = []
    monkeypatch.setattr(cli, "run_rsir", lambda *args, **kw: calls.append((args, kw)))
    for args, run in zip(commands, variants):
        assert cli.main(args + [preset[0]]) == 0
        (model, dataset), kw = calls.pop()
        files = [os.path.join(os.path.dirname(PROPERTIES_DIR), f) for f in kw["config_file_list"]]
        config = Config(model, dataset, files, cmd_args=kw["cmd_args"])
        assert (config["model"], config["dataset"], config["seed"], config["rsir_rounds"]) == (run.model, run.dataset,
                                                                                            run.seed, run.rounds)
        assert {key: config[key] for key in run.overrides} == run.overrides
        assert len(files) == 1 and os.path.samefile(files[0], STRONG_PRESET)
    assert ("Every row: `python -m recbole_rsir.study --dataset=amazon-beauty --rounds=3 --seeds=2021,2022 "
            "--arms=rsir,strong,refine,judge,tau`.") in lines


def test_report_tabulates_the_sweep_on_both_protocols_from_its_first_seed(tmp_path):
    cells = {("rsir", 1): None, ("sweep-tau5-p0.25", 1): (0.31, 0.41, 0.125),
             ("sweep-tau100-p1", 1): (0.32, 0.42, 0.5), ("sweep-tau5-p0", 2): (0.9, 0.9, 0.9)}
    for (arm, seed), cell in cells.items():
        _write_round1(tmp_path, arm, seed, cell and cell[:2], cell and {"acceptance_rate": cell[2]})
    build_report(str(tmp_path), "d", [])
    lines = (tmp_path / "report.md").read_text().splitlines()
    assert "accepted (seed 1; its base: 0.1000 / 0.2000)." in lines[lines.index("### tau x p sweep") + 2]
    rows = {line.split(" | ")[0]: line.split(" | ")[1:] for line in lines if line.startswith("| 5 |")
            or line.startswith("| 100 |") or line.startswith("| 1 |")}
    assert len(SWEEP_P) == 5 and rows["| 5"] == ["-", "0.3100 / 0.4100 (12.5%)", "-", "-", "- |"]
    assert rows["| 100"] == ["-", "-", "-", "-", "0.3200 / 0.4200 (50.0%) |"] and rows["| 1"] == ["-"] * 4 + ["- |"]
    assert (tmp_path / "plots" / "SASRec-sweep.png").exists()


def test_history_share_counts_the_users_earlier_items_in_the_top_k(tiny_data_path):
    """Against a plain loop: each test user's top-k of the padded scores, checked against the
    training sequence and the validation item."""
    config, _, train_data, valid_data, test_data = build_tiny(tiny_data_path)
    model = config.model_class(config, train_data.dataset).double().eval()
    earlier = mask_earlier_items(train_data.dataset, valid_data, test_data)[1].earlier
    slot_share, user_share = history_share(model, test_data, earlier, "user_id", k=5)
    real, valid = training_sequences(train_data.dataset), eval_targets(valid_data.dataset)
    past = {int(u): set(real[i].tolist()) | {valid[int(u)]} for i, u in enumerate(real.users)}
    hits = []
    with torch.no_grad():
        for batch in test_data:
            scores = model.full_sort_predict(batch[0]).view(len(batch[0]), -1)
            scores[:, 0] = -torch.inf
            for user, top in zip(batch[0]["user_id"].tolist(), scores.topk(5).indices.tolist()):
                hits.append(sum(item in past[user] for item in top))
    assert slot_share == pytest.approx(sum(hits) / (5 * len(hits)))
    assert user_share == pytest.approx(np.mean([h > 0 for h in hits])) and 0 < slot_share < 1


def test_concentration_against_its_definitions(tmp_path):
    """Gini as the mean absolute difference of item counts over twice their mean, the top 1% and
    distinct items counted plainly, padding left out; rounds read from a saved store, round 0 not."""
    rng = np.random.default_rng(0)
    n_items = 250
    items = np.concatenate([rng.zipf(1.6, 3000) % (n_items + 1), np.zeros(40, dtype=np.int64)])
    got = concentration.concentration(items, n_items)
    counts = np.array([(items == i).sum() for i in range(1, n_items + 1)], dtype=float)
    gini = np.abs(counts[:, None] - counts[None, :]).sum() / (2 * n_items ** 2 * counts.mean())
    assert got["gini"] == pytest.approx(gini) and 0.5 < got["gini"] < 1
    assert got["occurrences"] == (items > 0).sum() and got["distinct"] == (counts > 0).sum()
    assert got["top1pct_share"] == pytest.approx(np.sort(counts)[-2:].sum() / counts.sum())
    assert concentration.concentration(np.arange(1, n_items + 1), n_items)["gini"] == pytest.approx(0)
    store = RoundStore(str(tmp_path))
    for k, rounds in enumerate(([1, 2, 3], [4, 4, 4, 4], [5, 6])):
        folder = store.round_dir(k)
        os.makedirs(folder)
        save_json(os.path.join(folder, "result.json"), {"round": k})
        save_sequences(os.path.join(folder, "synthetic.npz"), SequenceSet.from_lists([rounds]))
    rows = concentration.store_rows(store, "nofid", 1, n_items)
    assert [(r["round"], r["sequences"], r["occurrences"], r["distinct"]) for r in rows] == [(1, 1, 4, 1), (2, 1, 2, 2)]
    assert concentration.main(["--seeds=2020,x", f"--out={tmp_path / 'out'}"]) == 2
    assert not (tmp_path / "out").exists()
    out = tmp_path / "tables"
    concentration.write(rows, str(out), "cmd a", "SASRec")
    concentration.write(rows[:1], str(out), "cmd b", "CL4SRec")
    concentration.write(rows[1:], str(out), "cmd c", "SASRec")      # replaces SASRec's rows, keeps CL4SRec's
    saved = json.loads((out / "concentration.json").read_text())
    assert saved["commands"] == {"SASRec": "cmd c", "CL4SRec": "cmd b"}
    assert [(r["model"], r["round"]) for r in saved["rows"]] == [("CL4SRec", 1), ("SASRec", 2)]
    md = (out / "concentration.md").read_text()
    assert md.index("## CL4SRec") < md.index("`cmd b`") < md.index("## SASRec") < md.index("`cmd c`")
    assert md.count("| nofid | 1 |") == 2 and "cmd a" not in md


# ---- the real command ---------------------------------------------------------------------

def _study(cwd, *args):
    return subprocess.run([sys.executable, "-m", "recbole_rsir.study", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT})


@pytest.mark.parametrize("args, message", [
    (["--arms=rsir,bogus"], "unknown arm 'bogus'"),
    (["--seeds=1,x"], "--seeds must be a comma-separated list"),
    (["--rounds=0"], "--rounds must be an integer >= 1"),
    (["--dataset=nowhere"], "unknown dataset 'nowhere'"),
    (["--models=NoSuchModel"], "unknown model 'NoSuchModel'"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert runner.main([*args, "--out=out", "--work=work"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert os.listdir(tmp_path) == []


def test_the_real_study_command_exits_2_with_one_line(tmp_path):
    done = _study(str(tmp_path), "--arms=rsir,bogus", "--out=out", "--work=work")
    assert done.returncode == 2 and done.stderr.startswith("error: unknown arm 'bogus'")
    assert done.stderr.count("\n") == 1 and os.listdir(tmp_path) == []


def test_a_run_claimed_by_another_live_study_process_is_left_to_it(tmp_path):
    folder = tmp_path / "work" / "tiny" / "SASRec" / "rsir" / "seed1"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert worker.claim(str(folder)) and (folder / worker.CLAIM).read_text() == str(os.getpid())
        (folder / worker.CLAIM).write_text(str(holder.pid))
        assert not worker.claim(str(folder))                       # a live holder keeps it
        tiny_study_data(tmp_path, "epochs: 1\n")
        done = _study(str(tmp_path), "--dataset=tiny", "--seeds=1", "--rounds=1", "--arms=rsir,nofid",
                      "--config_files=tiny.yaml", "--out=out", "--work=work", "--jobs=1")
        assert done.returncode == 0, done.stderr
        assert "skip tiny SASRec/rsir/seed1: another study process is running it" in done.stdout
        assert "start" not in done.stdout and not (folder / "rounds").exists()
    finally:
        holder.kill()
        holder.wait()
    assert worker.claim(str(folder)) and (folder / worker.CLAIM).read_text() == str(os.getpid())  # dead: taken
    worker.release(str(folder))
    assert not (folder / worker.CLAIM).exists()


def test_a_run_another_lane_finished_after_the_plan_is_not_run_again(tmp_path):
    """Two lanes plan the same runs; one that the other lane finished meanwhile is skipped and
    left unclaimed, and its published file is not touched."""
    args = runner.parse_args(["--dataset=amazon-beauty", f"--out={tmp_path / 'out'}", f"--work={tmp_path / 'work'}"])
    run = Run("amazon-beauty", "SASRec", "rsir", 1, 1)
    folder = worker.run_dir(args.work, run)
    assert runner.take(args, run) is None                  # neither running nor finished: taken
    assert open(os.path.join(folder, worker.CLAIM)).read() == str(os.getpid())
    worker.release(folder)
    path = results.result_path(args.out, run)
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write('{"wall_seconds": 692.8}')
    assert runner.take(args, run) == "another study process has finished it"
    assert not os.path.exists(os.path.join(folder, worker.CLAIM))
    assert open(path).read() == '{"wall_seconds": 692.8}'


def tiny_study_data(tmp_path, keys):
    """The tiny dataset under ``dataset/`` and ``tiny.yaml``: a small model, ``keys`` on top."""
    write_atomic(make_rows(), os.path.join(tmp_path, "dataset", "tiny", "tiny.inter"))
    (tmp_path / "tiny.yaml").write_text(
        keys + "rsir_m: 2\ntrain_batch_size: 16\nhidden_size: 16\ninner_size: 32\nn_layers: 1\n"
        "MAX_ITEM_LIST_LENGTH: 10\nuser_inter_num_interval: '[0,inf)'\nitem_inter_num_interval: '[0,inf)'\n")


def test_rounds_computed_again_are_compared_metric_by_metric():
    published = [_fake_payload("SASRec", "rsir", 1, (0.1, 0.2))["rounds"][0]]
    again = json.loads(json.dumps(published))
    assert worker.differences(again, published) == "match its published results"
    again[0]["protocols"]["exclude_history"]["test"]["recall@10"] = 0.2001
    again[0]["protocols"]["recbole"]["test"]["mrr@10"] += 0.01
    assert worker.differences(again, published) == (
        "DIFFER from its published results in 2 metric(s), by at most 0.01 (round 0 recbole test mrr@10)")


def test_shared_rounds_already_there_need_nothing_from_the_base(tmp_path):
    """A run restored with its state holds its shared rounds: sharing neither reads the base's
    results nor computes its weights again (neither exists here)."""
    run = next(r for r in plan(["d"], ["SASRec"], [1], 3, ["nofid"]) if r.arm == "nofid")
    (tmp_path / "work" / "d" / "SASRec" / "nofid" / "seed1" / "rounds" / "round0").mkdir(parents=True)
    worker.share_rounds(run, str(tmp_path / "out"), str(tmp_path / "work"), 1)
    assert not (tmp_path / "work" / "d" / "SASRec" / "rsir").exists()
    with pytest.raises(FileNotFoundError, match="rsir/seed1.json"):          # missing: the base is asked
        worker.share_rounds(dataclasses.replace(run, shared_rounds=2), str(tmp_path / "out"),
                            str(tmp_path / "work"), 1)


def git_repository(path):
    """A new git repository at ``path`` and a function running git there (returns its stdout)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    git("config", "user.email", "t@t")
    git("config", "user.name", "t")
    return git


def test_commit_takes_the_dataset_folder_and_the_summary_only(tmp_path):
    git = git_repository(tmp_path)
    (tmp_path / "out" / "d" / "runs").mkdir(parents=True)
    (tmp_path / "out" / "d" / "runs" / "seed1.json").write_text("{}")
    (tmp_path / "out" / "summary.md").write_text("table")
    (tmp_path / "elsewhere.txt").write_text("not the study's")
    assert runner.commit(str(tmp_path / "out"), "d", "study: d")
    assert sorted(git("show", "--name-only", "--format=", "HEAD").split()) == ["out/d/runs/seed1.json",
                                                                                "out/summary.md"]
    assert git("status", "--porcelain").strip() == "?? elsewhere.txt"
    finished = tmp_path / "out" / "d" / "runs" / "SASRec" / "nofid"
    finished.mkdir(parents=True)
    (finished / "seed3.partial.json").write_text('{"rounds": [0]}')
    assert runner.commit(str(tmp_path / "out"), "d", "study: d rounds in progress published")
    assert git("log", "-1", "--format=%s").strip() == "study: d rounds in progress published"
    (finished / "seed3.partial.json").unlink()                  # the run finished while another was publishing
    (finished / "seed3.json").write_text('{"rounds": [0]}')
    assert runner.commit(str(tmp_path / "out"), "d", "study: d rounds in progress published")
    assert git("log", "-1", "--format=%s").strip() == (
        "study: d rounds in progress published; SASRec/nofid/seed3 finished")
    (finished / "seed4.json").write_text("{}")
    assert runner.commit(str(tmp_path / "out"), "d", "study: d SASRec/nofid/seed4 (4 of 6 runs)")
    assert git("log", "-1", "--format=%s").strip() == "study: d SASRec/nofid/seed4 (4 of 6 runs)"  # once
    (finished / "seed5.json").write_text("{}")                  # seed50 in the message is not seed5
    assert runner.commit(str(tmp_path / "out"), "d", "study: d SASRec/nofid/seed50 (5 of 6 runs)")
    assert git("log", "-1", "--format=%s").strip() == (
        "study: d SASRec/nofid/seed50 (5 of 6 runs); SASRec/nofid/seed5 finished")


def test_report_only_publishes_finished_rounds_of_unfinished_runs(tmp_path):
    """A run stopped inside round 2 of 3 counts with rounds 0-1, is listed as in progress, is not
    published twice, and gives way to its complete results file; the runs the command names are
    listed in the report without being added to the saved plan."""
    tiny_study_data(tmp_path, "")
    saved = _fake_payload("SASRec", "strong", 1, (0.1, 0.2))
    r1 = json.loads(json.dumps(saved["rounds"][0]))
    r1.update(round=1, generation={"n_accepted": 5, "mean_length": 4.0})
    for protocol, value in zip(r1["protocols"].values(), (0.3, 0.4)):
        protocol["test"]["recall@10"] = value
    saved["rounds"].append(r1)
    del saved["run"]                       # rsir_results.json does not know the study's run
    work = tmp_path / "work" / "tiny" / "SASRec" / "strong" / "seed1"
    work.mkdir(parents=True)
    (work / "rsir_results.json").write_text(json.dumps(saved))
    args = ["--dataset=tiny", "--seeds=1", "--rounds=3", "--arms=rsir,strong", "--out=out", "--work=work",
            "--report-only"]
    done = _study(str(tmp_path), *args)
    assert done.returncode == 0, done.stderr
    assert "start" not in done.stdout and not (tmp_path / "work" / "tiny" / "SASRec" / "rsir").exists()
    folder = tmp_path / "out" / "tiny"
    partial = folder / "runs" / "SASRec" / "strong" / "seed1.partial.json"
    published = json.loads(partial.read_text())
    assert published["complete"] is False and published["rounds"] == saved["rounds"]
    assert published["run"]["arm"] == "strong" and published["run"]["rounds"] == 3
    report = (folder / "report.md").read_text()
    assert "- SASRec/strong/seed1 (in progress: 2 of 4 rounds published): ~" in report
    assert "- SASRec/rsir/seed1: not measured yet\n" in report          # only strong rounds are
    assert "| strong + RSIR round 1 | 1 | 0.3000 |" in report and "| strong + RSIR round 1 | 1 | 0.4000 |" in report
    assert "(0 finished runs, 1 in progress" in report
    assert not (folder / "plan.json").exists()          # listed, not recorded: a later plan stays its own
    stamp = partial.stat().st_mtime_ns
    assert _study(str(tmp_path), *args).returncode == 0 and partial.stat().st_mtime_ns == stamp
    again = json.loads(json.dumps(saved))               # round 1 computed again elsewhere, a digit off
    again["rounds"][1]["protocols"]["recbole"]["test"]["recall@10"] = 0.31
    (work / "rsir_results.json").write_text(json.dumps({**again, "rounds": again["rounds"][:1]}))
    assert _study(str(tmp_path), *args).returncode == 0 and partial.stat().st_mtime_ns == stamp
    (work / "rsir_results.json").write_text(json.dumps(again))
    assert _study(str(tmp_path), *args).returncode == 0
    published = json.loads(partial.read_text())
    assert published["rounds"] == again["rounds"] and "| strong + RSIR round 1 | 1 | 0.3100 |" in (
        folder / "report.md").read_text()
    complete = {**published, "complete": True}
    complete["rounds"][1]["protocols"]["recbole"]["test"]["recall@10"] = 0.5
    (folder / "runs" / "SASRec" / "strong" / "seed1.json").write_text(json.dumps(complete))
    assert _study(str(tmp_path), *args).returncode == 0
    report = (folder / "report.md").read_text()
    assert "| strong + RSIR round 1 | 1 | 0.5000 |" in report and "in progress:" not in report
    assert not partial.exists()


def test_a_failed_run_shows_why_where_the_study_reports_it(tmp_path):
    tiny_study_data(tmp_path, "epochs: 1\nn_heads: 3\n")          # 16 is not a multiple of 3
    result = _study(str(tmp_path), "--dataset=tiny", "--models=SASRec", "--seeds=1", "--rounds=1", "--arms=rsir",
                    "--config_files=tiny.yaml", "--out=out", "--work=work")
    assert result.returncode == 1
    failure = result.stdout.split("FAILED tiny SASRec/rsir/seed1 (exit 1)", 1)[1].splitlines()
    log = (tmp_path / "work" / "tiny" / "SASRec" / "rsir" / "seed1" / "study.log").read_text()
    assert failure[1:4] == ["    " + line.rstrip() for line in log.strip().splitlines()[-3:]]
    assert "is not a multiple of the number of attention heads" in failure[3]
    assert not (tmp_path / "out" / "tiny" / "runs").exists()


def test_last_lines_of_a_log_skip_blank_lines_and_progress_bar_redraws(tmp_path):
    log = tmp_path / "study.log"
    log.write_text("x" * 9000 + "\nepoch 1: 10%\repoch 1: 100%\n\nTraceback\n  File a\nValueError: bad\n\n")
    assert runner.last_lines(str(log)) == ["Traceback", "  File a", "ValueError: bad"]
    assert runner.last_lines(str(log), 5) == ["epoch 1: 10%", "epoch 1: 100%", "Traceback", "  File a",
                                              "ValueError: bad"]


@pytest.mark.slow
def test_study_command_end_to_end(tmp_path):
    tiny_study_data(tmp_path, "epochs: 1\n")
    git = git_repository(tmp_path)
    args = ["--dataset=tiny", "--models=SASRec", "--seeds=1", "--rounds=1", "--arms=rsir,nofid,ft,aug-insert,w2s",
            "--config_files=tiny.yaml", "--out=out", "--work=work", "--jobs=2", "--commit"]
    first = _study(str(tmp_path), *args)
    assert first.returncode == 0, first.stdout + first.stderr
    folder = tmp_path / "out" / "tiny"
    results = json.loads((folder / "results.json").read_text())
    assert results["missing"] == []
    runs = results["runs"]
    assert len(runs) == 6              # the operators' plumbing is one: aug-insert stands for them
    assert git("status", "--porcelain", "--", "out") == ""
    for name in runs:                  # the commit that adds a results file names its run
        added = git("log", "--no-renames", "--diff-filter=A", "--format=%s", "--", f"out/tiny/runs/{name}.json")
        assert added.startswith(f"study: tiny {name} (") or f"; {name} finished" in added, (name, added)
    for name, payload in runs.items():
        for r in payload["rounds"]:
            for protocol in r["protocols"].values():
                assert all(np.isfinite(v) for split in protocol.values() for v in split.values()), name
    rsir, nofid = runs["SASRec/rsir/seed1"], runs["SASRec/nofid/seed1"]
    assert nofid["rounds"][0]["test"] == rsir["rounds"][0]["test"]          # round 0 shared
    assert nofid["rounds"][1]["generation"]["fidelity_tests"] == 0
    extra = runs["SASRec/aug-insert/seed1"]["extra"]
    assert extra["n_sequences"] == rsir["rounds"][1]["generation"]["n_accepted"]
    assert runs["SASRec/w2s/seed1"]["rounds"][0]["n_extra_sequences"] > 0
    report = (folder / "report.md").read_text()
    for label in ["base (round 0)", "RSIR round 1", "RSIR-FT round 1", "no fidelity round 1", "augment: insert",
                  "weak-to-strong"]:
        assert report.count(f"| {label} |") == 2          # one row per protocol
    assert "Every planned run is finished." in report
    for plot in ("collapse", "training_set", "accepted_lengths"):
        assert (folder / "plots" / f"SASRec-{plot}.png").read_bytes()[:4] == b"\x89PNG"
    stamps = {p: p.stat().st_mtime_ns for p in (folder / "runs").rglob("*.json")}
    again = _study(str(tmp_path), *args)
    assert again.returncode == 0 and "0 to run" in again.stdout
    assert stamps == {p: p.stat().st_mtime_ns for p in (folder / "runs").rglob("*.json")}
    assert not list((folder / "runs").rglob("*.rounds"))         # a finished run keeps no state

    # on a machine without the work folder, runs that took weights from another run (nofid: rsir's
    # round 0; w2s: the small model) train them again and end alike
    shutil.rmtree(tmp_path / "work")
    for arm in ("nofid", "w2s"):
        (folder / "runs" / "SASRec" / arm / "seed1.json").unlink()
    moved = _study(str(tmp_path), *args)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    timeless = lambda payload: [{k: v for k, v in r.items() if not k.endswith("seconds")}  # noqa: E731
                                for r in payload["rounds"]]
    for arm in ("nofid", "w2s"):
        assert timeless(json.loads((folder / "runs" / "SASRec" / arm / "seed1.json").read_text())) == timeless(
            runs[f"SASRec/{arm}/seed1"]), arm


@pytest.mark.slow
def test_study_command_runs_the_variant_arms(tmp_path):
    """Two rounds, so that the previous-round judge judges and tau tightens in round 2."""
    tiny_study_data(tmp_path, "epochs: 1\nrsir_tau: 8\n")
    done = _study(str(tmp_path), "--dataset=tiny", "--models=SASRec", "--seeds=1", "--rounds=2",
                  "--arms=rsir,refine,judge,tau", "--config_files=tiny.yaml", "--out=out", "--work=work",
                  "--jobs=2")
    assert done.returncode == 0, done.stdout + done.stderr
    folder = tmp_path / "out" / "tiny"
    runs = json.loads((folder / "results.json").read_text())["runs"]
    assert len(runs) == 6            # the strong preset's variants are planned alike (tested above)
    plain = runs["SASRec/rsir/seed1"]["rounds"]
    variant = {arm: runs[f"SASRec/{arm}/seed1"]["rounds"]
               for arm in ("refine", "judge-previous", "judge-HSTU", "tau-tighten", "tau-user")}
    for arm, rounds in variant.items():
        assert rounds[0] == plain[0]                                        # the base's round 0, taken
        assert (rounds[1] == plain[1]) == (arm in ("judge-previous", "tau-tighten"))   # round 1 too, timings and all
    assert variant["refine"][1]["generation"]["refine_attempts"] > 0
    assert [r["generation"]["tau"] for r in variant["tau-tighten"][1:]] == [8, 4]
    assert all("tau" not in r["generation"] and r["generation"]["tau_mean"] >= 1 for r in variant["tau-user"][1:])
    assert variant["judge-previous"][1]["generation"]["n_accepted"] == plain[1]["generation"]["n_accepted"]
    assert variant["judge-HSTU"][1]["generation"]["fidelity_tests"] > 0
    report = (folder / "report.md").read_text()
    for label in ("RSIR, refine on miss (K=3), round 2", "RSIR, judge: HSTU trained beside it, round 1",
                  "RSIR, tau x0.5 per round, round 2", "RSIR, judge: the previous round's model, round 2"):
        assert report.count(f"| {label} |") == 2
