"""A study's report, rebuilt from whatever results files exist: results.json, report.md, plots.

Rows compare arms on the test set under both evaluation protocols, as mean ± sd over
seeds with the change relative to their base and a paired t-test across the seeds both
have; RSIR rounds on the strong preset are compared with the strong base. Cells planned
but not yet run are listed, so a partial report says what it lacks.
"""
import json
import os

import numpy as np

from recbole_rsir.config import PROPERTIES_DIR
from recbole_rsir.study.augment import OPERATORS
from recbole_rsir.study.cells import (PROTOCOLS, compare, generation_mean, paired_means, recall_at_10, round_of,
                                      round_outcome, sweep_grid, training_size, values, variant_arms)
from recbole_rsir.study.claims import CLAIMS, verdict
from recbole_rsir.study.estimates import estimate, minutes, round_seconds, total_line
from recbole_rsir.study.plan import STRONG_PRESET, VARIANT_ARMS, Run, variants
from recbole_rsir.study.plots import plot_collapse, plot_lengths, plot_sweep, plot_training_set, plot_variants
from recbole_rsir.study.results import finished_rounds, in_progress, load_runs

METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr@10")
TESTED = ("recall@10", "ndcg@10")


def rows_for(model, n_rounds):
    """``(label, arm, round, base arm)`` of a model's table, in reading order."""
    rows = [("base (round 0)", "rsir", 0, "rsir")]
    rows += [(f"RSIR round {k}", "rsir", k, "rsir") for k in range(1, n_rounds + 1)]
    rows += [(f"RSIR-FT round {k}", "ft", k, "rsir") for k in range(1, n_rounds + 1)]
    rows += [(f"no fidelity round {k}", "nofid", k, "rsir") for k in range(1, n_rounds + 1)]
    rows += [(f"augment: {op}", f"aug-{op}", 0, "rsir") for op in OPERATORS]
    rows += [("weak-to-strong: the small generator alone", "w2s-small", 0, "rsir"),
             ("weak-to-strong", "w2s", 0, "rsir")]
    rows += [("strong base (round 0)", "strong", 0, "strong")]
    rows += [(f"strong + RSIR round {k}", "strong", k, "strong") for k in range(1, n_rounds + 1)]
    for base, prefix in (("rsir", ""), ("strong", "strong + ")):
        for arm, label in variant_arms(model, base):
            rows += [(f"{prefix}RSIR, {label}, round {k}", arm, k, base) for k in range(1, n_rounds + 1)]
    return rows


def variant_commands(model, dataset, n_rounds, seeds):
    """How to get each variant's rows: its keys in the run_rsir command of one seed, and the study's command."""
    preset = os.path.join("properties", os.path.relpath(STRONG_PRESET, PROPERTIES_DIR))
    lines = []
    for arm in VARIANT_ARMS:
        for label, overrides in variants(arm, model).values():
            flags = " ".join(f"--{key}={value}" for key, value in overrides.items())
            lines.append(f"- {label}: `python run_rsir.py --model={model} --dataset={dataset} "
                         f"--rsir_rounds={n_rounds} --seed={seeds[0]} {flags}`")
    return lines + [f"- strong + any of them: add `--config_files={preset}`", "",
                    f"Every row: `python -m recbole_rsir.study --dataset={dataset} --rounds={n_rounds} "
                    f"--seeds={','.join(map(str, seeds))} --arms=rsir,strong,{','.join(VARIANT_ARMS)}`."]


def _mean_sd(cell):
    v = np.array(list(cell.values()))
    return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v.mean():.4f}"


def _pct(x):
    return "" if x is None else f"{x:+.1%}"


def _p(x):
    return "" if x is None else f"{x:.3f}"


def metric_table(runs, model, n_rounds, protocol):
    header = ("| arm | seeds | " + " | ".join(m.replace("recall", "Recall").replace("ndcg", "NDCG")
                                              .replace("mrr", "MRR") for m in METRICS)
              + " | ΔRecall@10 | ΔNDCG@10 | p Recall@10 | p NDCG@10 |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    summary = {}
    for label, arm, k, base_arm in rows_for(model, n_rounds):
        cells = {m: values(runs, model, arm, k, protocol, m) for m in METRICS}
        if not cells[METRICS[0]]:
            continue
        tested = {m: compare(cells[m], values(runs, model, base_arm, 0, protocol, m)) for m in TESTED}
        summary[(arm, k)] = {"cells": cells, "tested": tested}
        is_base = (arm, k) == (base_arm, 0)
        lines.append(f"| {label} | {len(cells[METRICS[0]])} | " + " | ".join(_mean_sd(cells[m]) for m in METRICS)
                     + " | " + " | ".join("" if is_base else _pct(tested[m][0]) for m in TESTED)
                     + " | " + " | ".join("" if is_base else _p(tested[m][1]) for m in TESTED) + " |")
    return lines, summary


def claims_table(runs, dataset):
    """The paper's claims on ``dataset`` (claims.py) beside this study's change of the same arm and
    round against its base, on both protocols; the verdict is the filtered protocol's, the paper's."""
    lines = ["| claim | paper: Recall@10 | here, earlier items filtered: Recall@10 | here, RecBole's | verdict |",
             "|---|---|---|---|---|"]
    for claim in (c for c in CLAIMS if c.dataset == dataset):
        paper = (f"{claim.base:.4f} → {claim.value:.4f} ({_pct(claim.change)})" if claim.base
                 else f"{claim.change:+.2%}")
        measured = {}
        for protocol in PROTOCOLS:
            cell = values(runs, claim.model, claim.arm, claim.round, protocol, "recall@10")
            base = values(runs, claim.model, "rsir", 0, protocol, "recall@10")
            measured[protocol] = (cell, base) + compare(cell, base)
        cell, base, change, p = measured["exclude_history"]
        pair = paired_means(cell, base)
        n = pair[2] if pair else 0
        here = (f"{pair[1]:.4f} → {pair[0]:.4f} ({_pct(change)}, {n} seed{'s' if n > 1 else ''}"
                f"{', p ' + _p(p) if p is not None else ''})" if pair else "–")
        lines.append(f"| {claim.text} | {paper} | {here} | {_pct(measured['recbole'][2]) or '–'} | "
                     f"{verdict(claim.change, change, p, n)} |")
    return lines if len(lines) > 2 else []


def round_stats(runs, model, n_rounds):
    """Training data and generation statistics per round, mean over seeds."""
    header = ("| arm | round | seeds | sequences (real+syn+extra) | interactions | density | accepted this round "
              "| mean accepted length | acceptance rate | failed fidelity tests | picks from history | tau "
              "| refine attempts (rescued) |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    arms = ("rsir", "ft", "nofid", "strong", "w2s") + tuple(f"aug-{op}" for op in OPERATORS)
    arms += tuple(arm for base in ("rsir", "strong") for arm, _ in variant_arms(model, base))
    for arm in arms:
        for k in range(n_rounds + 1):
            rs = [round_of(p, k) for (m, a, _), p in runs.items() if (m, a) == (model, arm)]
            rs = [r for r in rs if r is not None and "n_interactions" in r]
            if not rs:
                continue
            extras = [p["extra"] for (m, a, _), p in runs.items() if (m, a) == (model, arm) and p.get("extra")]
            gen = [r["generation"] for r in rs if r["generation"]] or (extras if k == 0 else [])
            mean = lambda xs: float(np.mean(xs)) if xs else float("nan")
            n_seq = mean([training_size(r)[0] for r in rs])
            n_inter = mean([r["n_interactions"] for r in rs])
            density = mean([training_size(r)[1] for r in rs])
            g = lambda key: mean([x[key] for x in gen if key in x])
            accepted = g("n_accepted") if gen and "n_accepted" in gen[0] else g("n_sequences")
            lines.append(
                f"| {arm} | {k} | {len(rs)} | {n_seq:,.0f} | {n_inter:,.0f} | {density:.5f} | "
                + (f"{accepted:,.0f} | {g('mean_length'):.2f} | " if gen else "- | - | ")
                + (f"{g('acceptance_rate'):.1%} | {g('fidelity_failure_rate'):.1%} | {g('history_pick_share'):.1%} |"
                   if gen and "acceptance_rate" in gen[0] else "- | - | - |")
                + (f" {g('tau'):g} |" if gen and "tau" in gen[0] else
                   f" per user: mean {g('tau_mean'):.1f}, median {g('tau_q50'):.1f} |" if gen and "tau_mean" in gen[0]
                   else " - |")
                + (f" {g('refine_attempts'):,.0f} ({g('refine_success_rate'):.1%}) |"
                   if gen and gen[0].get("refine_attempts") else " - |"))
    return lines


def findings(summary, n_rounds, protocol, model):
    """Plain sentences answering the study's questions from the table's numbers."""
    out = []

    def cell(arm, k):
        return summary.get((arm, k), {}).get("cells", {}).get("recall@10")

    def said(arm, k, what, base="rsir"):
        entry, pair = summary.get((arm, k)), paired_means(cell(arm, k), cell(base, 0))
        if entry is None or pair is None:
            return None
        (r, pr), (n, pn) = entry["tested"]["recall@10"], entry["tested"]["ndcg@10"]
        return (f"{what}: Recall@10 {_pct(r)} (p {_p(pr) or 'n/a'}), NDCG@10 {_pct(n)} (p {_p(pn) or 'n/a'}) "
                f"over {pair[2]} seed(s)")

    for k in range(1, n_rounds + 1):
        line = said("rsir", k, f"RSIR round {k} vs base")
        if line:
            out.append(line)
    pairs = {op: paired_means(cell("rsir", 1), cell(f"aug-{op}", 0)) for op in OPERATORS}
    pairs = {op: pair for op, pair in pairs.items() if pair}
    if pairs:
        beaten = [op for op, (r, a, _) in pairs.items() if r > a]
        out.append(f"RSIR round 1 Recall@10 is above {len(beaten)} of {len(pairs)} augmentation baselines on the "
                   f"seeds both have ({', '.join(f'{op} {a:.4f} against {r:.4f}' for op, (r, a, _) in pairs.items())})")
    nofid, plain = (paired_means(cell("nofid", n_rounds), cell(arm, k)) for arm, k in (("rsir", 0), ("rsir", n_rounds)))
    if nofid:
        out.append(f"without fidelity, round {n_rounds} Recall@10 is {nofid[0]:.4f} against base {nofid[1]:.4f}"
                   + (f" and RSIR round {n_rounds} {plain[1]:.4f}" if plain else "") + f" on {nofid[2]} seed(s)")
        out.append(said("nofid", n_rounds, f"no fidelity round {n_rounds} vs base"))
    for base, prefix in (("rsir", "RSIR"), ("strong", "strong + RSIR")):
        for arm, label in variant_arms(model, base):
            for k in range(1, n_rounds + 1):
                pair = paired_means(cell(arm, k), cell(base, k))
                if pair:
                    change, p = compare(cell(arm, k), cell(base, k))
                    out.append(f"{prefix}, {label}, round {k} vs without it: Recall@10 {pair[0]:.4f} against "
                               f"{pair[1]:.4f} on {pair[2]} seed(s) ({_pct(change)}, p {_p(p) or 'n/a'})")
    for arm, what in (("w2s", "weak-to-strong vs base"), ("strong", None)):
        if arm == "strong":
            for k in range(1, n_rounds + 1):
                line = said("strong", k, f"strong + RSIR round {k} vs strong base", base="strong")
                if line:
                    out.append(line)
        else:
            line = said(arm, 0, what)
            if line:
                out.append(line)
    return [f"- {line}" for line in out if line]


def _rounds(ks):
    return f"round{'s' * (len(ks) > 1)} {', '.join(map(str, ks))}"


def variant_verdict(won, lost, judged, n_rounds):
    """A variant's verdict from the rounds it won, those it lost and those judged (round -> seeds);
    until every round is judged on two seeds or more, one not yet won says so instead of calling it off."""
    if not judged:
        return "one seed so far, no verdict"
    seeds = f"({min(judged.values())} seeds)"
    pending = [k for k in range(1, n_rounds + 1) if k not in judged]
    worse = f"; worse beyond the spread in {_rounds(lost)}" if lost else ""
    later = f"; {_rounds(pending)} not judged yet" if pending else ""
    if won:
        return f"beats plain RSIR beyond the spread on both protocols in {_rounds(won)} {seeds}{worse}{later}"
    if pending:
        return f"no win in {_rounds(sorted(judged))} {seeds}{worse}{later}"
    return f"does not beat plain RSIR beyond the spread in any round {seeds}{worse}; it stays off"


def variant_table(runs, model, n_rounds):
    """Each variant beyond the paper against plain RSIR on the same base, round by round and over the
    seeds both have: test Recall@10 on both protocols, the generation beside it, and whether it beats
    plain RSIR beyond the seeds' spread on both protocols, the bar for becoming a default."""
    lines = ["| variant | round | seeds | RecBole's: variant / plain (Δ) | filtered: variant / plain (Δ) "
             "| acceptance rate: variant / plain | mean accepted length: variant / plain "
             "| beyond the spread on both |", "|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for base, prefix in (("rsir", ""), ("strong", "strong + ")):
        for arm, label in variant_arms(model, base):
            won, lost, judged, shown = [], [], {}, False      # judged: round -> seeds it was judged on
            for k in range(1, n_rounds + 1):
                cells = {p: (values(runs, model, arm, k, p, "recall@10"), values(runs, model, base, k, p, "recall@10"))
                         for p in PROTOCOLS}
                seeds = set.intersection(*(set(c) & set(pl) for c, pl in cells.values()))
                if not seeds:
                    continue
                outcome = round_outcome(*cells.values())
                if outcome is not None:
                    judged[k] = len(seeds)
                if outcome == "better":
                    won.append(k)
                elif outcome == "worse":
                    lost.append(k)
                figures = []
                for c, pl in cells.values():
                    v, w, _ = paired_means(c, pl)
                    figures.append(f"{v:.4f} / {w:.4f} ({_pct(v / w - 1)})")
                for key, fmt in (("acceptance_rate", "{:.1%}"), ("mean_length", "{:.2f}")):
                    figures.append(" / ".join(fmt.format(generation_mean(runs, model, a, k, seeds, key))
                                              for a in (arm, base)))
                lines.append(f"| {prefix}{label} | {k} | {len(seeds)} | " + " | ".join(figures) + " | "
                             + {None: "one seed: no spread", "level": "no"}.get(outcome, outcome) + " |")
                shown = True
            if shown:
                verdicts.append(f"- {prefix}{label}: {variant_verdict(won, lost, judged, n_rounds)}")
    return lines + [""] + verdicts if verdicts else []


def sweep_table(runs, model):
    """The sweep grid in figures: both protocols and the acceptance rate of each cell, beside the base."""
    taus, ps, grid, seed = sweep_grid(runs, model, recall_at_10("recbole"))
    if np.isnan(grid).all():
        return []
    filtered = sweep_grid(runs, model, recall_at_10("exclude_history"))[2]
    accepted = sweep_grid(runs, model, lambda r: r["generation"].get("acceptance_rate", np.nan))[2]
    base = {protocol: values(runs, model, "rsir", 0, protocol, "recall@10").get(seed) for protocol in PROTOCOLS}
    lines = [f"Test Recall@10 after one round, RecBole's / filtered, and the share of generated sequences "
             f"accepted (seed {seed}; its base: {base['recbole'] or float('nan'):.4f} / "
             f"{base['exclude_history'] or float('nan'):.4f}).", "",
             "| tau | " + " | ".join(f"p {p:g}" for p in ps) + " |", "|---|" + "---|" * len(ps)]
    for i, tau in enumerate(taus):
        cells = ["-" if np.isnan(grid[i, j]) else
                 f"{grid[i, j]:.4f} / {filtered[i, j]:.4f} ({accepted[i, j]:.1%})" for j in range(len(ps))]
        lines.append(f"| {tau} | " + " | ".join(cells) + " |")
    return lines


# ---- the report ------------------------------------------------------------------------

def build_report(folder, dataset, planned, record=True):
    """Write ``results.json``, ``report.md`` and ``plots/*.png`` in ``folder``. The report lists
    as missing what ``plan.json`` (every run a study command planned here) and ``planned`` hold;
    ``record`` adds ``planned`` to ``plan.json``, so a narrower command later still lists them."""
    runs = load_runs(folder)
    os.makedirs(folder, exist_ok=True)
    plan_path = os.path.join(folder, "plan.json")
    known = {}
    if os.path.isfile(plan_path):
        with open(plan_path, encoding="utf-8") as f:
            known = {r["name"]: r for r in json.load(f)}
    known.update({r.name: {"name": r.name, **r.as_dict()} for r in planned})
    if record:
        with open(plan_path, "w", encoding="utf-8") as f:
            json.dump(sorted(known.values(), key=lambda r: r["name"]), f, indent=1)
    missing, left = [], []
    seconds = round_seconds(runs.values())
    for name, r in sorted(known.items()):
        payload = runs.get((r["model"], r["arm"], r["seed"]))
        if payload is not None and not in_progress(payload):
            continue
        missing.append(name if payload is None else
                       f"{name} (in progress: {len(payload['rounds'])} of {r['rounds'] + 1} rounds published)")
        left.append(estimate(Run.from_dict({k: v for k, v in r.items() if k != "name"}), seconds,
                             finished_rounds(payload)))

    with open(os.path.join(folder, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"dataset": dataset, "missing": missing,
                   "runs": {f"{m}/{a}/seed{s}": p for (m, a, s), p in sorted(runs.items())}}, f, indent=1)

    models = sorted({m for m, _, _ in runs} | {r["model"] for r in known.values()})
    n_rounds = max([r["rounds"] for r in known.values() if r["arm"] == "rsir"] or [0])
    finished = sum(not in_progress(p) for p in runs.values())
    plots = os.path.join(folder, "plots")
    os.makedirs(plots, exist_ok=True)
    md = [f"# Study: {dataset}", "",
          "Test-set metrics, leave-one-out by time, full ranking; mean ± sd over seeds; Δ relative to the base "
          "(the strong base for strong rows) and p (paired t-test), both over the seeds both have. Built from "
          f"`runs/` ({finished} finished runs, {len(runs) - finished} in progress, whose finished rounds count) by "
          "`python -m recbole_rsir.study`; every run's valid and test metrics, config and seconds are in "
          "`results.json`.", ""]
    claims = claims_table(runs, dataset)
    if claims:
        md += ["## The paper's claims", "",
               "Recall@10 of the paper beside this study's mean over seeds (base: round 0 of the same model). "
               "A claim reproduces when the change has the paper's direction and at least half its size; "
               "p: paired t-test over seeds.", ""] + claims + [""]
    for model in models:
        if not any(m == model for m, _, _ in runs):
            continue
        md += [f"## {model}", ""]
        for protocol, label in PROTOCOLS.items():
            table, summary = metric_table(runs, model, n_rounds, protocol)
            md += [f"### {label}", ""] + table + ["", "Findings:", ""]
            md += findings(summary, n_rounds, protocol, model) + [""]
        md += ["### Training data and generation per round", "",
               "Sequences and interactions of the round's training set; density = interactions / (sequences x "
               "items); the generation columns describe the sequences generated for that round (for augmentation "
               "and weak-to-strong rows: the extra sequences); failed fidelity tests and picks from history are "
               "shares of all steps of all attempted sequences.", ""]
        md += round_stats(runs, model, n_rounds) + [""]
        compared = variant_table(runs, model, n_rounds)
        if compared:
            md += ["### Variants beyond the paper against plain RSIR", "",
                   "Test Recall@10 of each variant beside plain RSIR on the same base and seeds. A variant beats "
                   "plain RSIR beyond the seeds' spread when its mean exceeds plain's by more than the larger of "
                   "the two standard deviations over seeds, on both protocols (better; worse when plain's "
                   "exceeds its mean so); only a better variant may become a default. Each variant is plain "
                   "RSIR with one option on:", ""]
            seeds = sorted({seed for (m, _, seed) in runs if m == model})
            md += variant_commands(model, dataset, n_rounds, seeds) + [""] + compared + [""]
        sweep = sweep_table(runs, model)
        if sweep:
            md += ["### tau x p sweep", ""] + sweep + [""]
        pictures = []
        for name, draw in (("collapse", plot_collapse), ("training_set", plot_training_set),
                           ("accepted_lengths", plot_lengths)):
            file = os.path.join(plots, f"{model}-{name}.png")
            draw(runs, model, n_rounds, file)
            pictures.append(f"![{name}](plots/{model}-{name}.png)")
        if plot_variants(runs, model, n_rounds, os.path.join(plots, f"{model}-variants.png")):
            pictures.append(f"![variants](plots/{model}-variants.png)")
        if plot_sweep(runs, model, os.path.join(plots, f"{model}-sweep.png")):
            pictures.append(f"![tau x p sweep](plots/{model}-sweep.png)")
        md += pictures + [""]
    md += ["## Missing", ""]
    if missing:
        md += [f"Estimated from the rounds measured so far: {total_line(left)}.", ""]
    md += [f"- {name}: {minutes(est)}" for name, est in zip(missing, left)] or ["Every planned run is finished."]
    with open(os.path.join(folder, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    return missing
