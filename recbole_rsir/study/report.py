"""A study's report, rebuilt from whatever results files exist: results.json, report.md, plots.

Rows compare arms on the test set under both evaluation protocols, as mean ± sd over
seeds with the change relative to their base and a paired t-test across the seeds both
have; RSIR rounds on the strong preset are compared with the strong base. Cells planned
but not yet run are listed, so a partial report says what it lacks.
"""
import json
import os
import warnings

import numpy as np
from scipy import stats

from recbole_rsir.config import PROPERTIES_DIR
from recbole_rsir.study.augment import OPERATORS
from recbole_rsir.study.claims import CLAIMS, verdict
from recbole_rsir.study.estimates import estimate, minutes, round_seconds, total_line
from recbole_rsir.study.plan import STRONG_PRESET, SWEEP_P, SWEEP_TAU, VARIANT_ARMS, Run, variants
from recbole_rsir.study.results import finished_rounds, in_progress, load_runs

METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr@10")
TESTED = ("recall@10", "ndcg@10")
PROTOCOLS = {"recbole": "RecBole's protocol: a user's earlier items stay in the ranking",
             "exclude_history": "earlier items filtered from the ranking (RSIR reference code, strong benchmark)"}
SHORT_NAMES = {"recbole": "RecBole's protocol", "exclude_history": "earlier items filtered"}


def _round(payload, k):
    rounds = payload["rounds"]
    return rounds[k] if k < len(rounds) else None


def training_size(r):
    """``(sequences, density)`` of a round's training set: density = interactions / (sequences x items)."""
    n = r["n_real_sequences"] + r["n_synthetic_sequences"] + r["n_extra_sequences"]
    return n, r["n_interactions"] / (n * r["n_items"])


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


def variant_arms(model, base):
    """``(arm, label)`` of every variant run of ``model`` on ``base`` (rsir or strong)."""
    return [(name if base == "rsir" else f"{base}-{name}", label)
            for arm in VARIANT_ARMS for name, (label, _) in variants(arm, model).items()]


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


def values(runs, model, arm, k, protocol, metric):
    """``{seed: test metric}`` of one cell."""
    out = {}
    for (m, a, seed), payload in runs.items():
        r = _round(payload, k) if (m, a) == (model, arm) else None
        if r is not None and r.get("protocols"):
            out[seed] = r["protocols"][protocol]["test"][metric]
    return out


def compare(cell, base):
    """Relative change of the means and the paired t-test's p, both over the seeds both have (an
    arm run on fewer seeds than its base is compared with the base on those seeds)."""
    common = sorted(set(cell or {}) & set(base or {}))
    if not common:
        return None, None
    a, b = np.array([cell[s] for s in common]), np.array([base[s] for s in common])
    change = a.mean() / b.mean() - 1.0
    if len(common) < 2:
        return change, None
    if np.allclose(a, b):
        return change, 1.0
    with warnings.catch_warnings():   # near-equal pairs: scipy warns, the p it gives is still the test's
        warnings.simplefilter("ignore", RuntimeWarning)
        return change, float(stats.ttest_rel(a, b).pvalue)


def paired_means(cell, base):
    """``(mean of cell, mean of base, seeds)`` over the seeds both have; None without one."""
    common = sorted(set(cell or {}) & set(base or {}))
    if not common:
        return None
    return float(np.mean([cell[s] for s in common])), float(np.mean([base[s] for s in common])), len(common)


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
            rs = [_round(p, k) for (m, a, _), p in runs.items() if (m, a) == (model, arm)]
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
                   f" per user: mean {g('tau_mean'):.1f}, median {g('tau_q50'):g} |" if gen and "tau_mean" in gen[0]
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


def beyond_spread(cell, plain):
    """Whether ``cell`` beats ``plain`` beyond the seeds' spread: over the seeds both have (at least
    two), its mean exceeds plain's by more than the larger of their standard deviations; None with
    fewer seeds, where the spread is unknown."""
    common = sorted(set(cell) & set(plain))
    if len(common) < 2:
        return None
    a, b = (np.array([x[s] for s in common]) for x in (cell, plain))
    return bool(a.mean() - b.mean() > max(a.std(ddof=1), b.std(ddof=1)))


def generation_mean(runs, model, arm, k, seeds, key):
    """Mean over ``seeds`` of a generation statistic of round ``k`` of ``arm``; NaN where none has it."""
    xs = [(_round(p, k) or {}).get("generation", {}).get(key) for (m, a, s), p in runs.items()
          if (m, a) == (model, arm) and s in seeds]
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else float("nan")


def _rounds(ks):
    return f"round{'s' * (len(ks) > 1)} {', '.join(map(str, ks))}"


def round_outcome(*protocols):
    """``better`` or ``worse`` when the variant's cell is beyond the spread of plain RSIR's on every
    protocol (each a ``(variant cell, plain cell)``), ``level`` otherwise; None below two seeds."""
    better = [beyond_spread(cell, plain) for cell, plain in protocols]
    if None in better:
        return None
    return "better" if all(better) else "worse" if all(beyond_spread(p, c) for c, p in protocols) else "level"


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
                {"better": won, "worse": lost}.get(outcome, []).append(k)
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


# ---- plots ---------------------------------------------------------------------------

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, legend_ax, path, **legend):
    if legend_ax.get_legend_handles_labels()[0]:
        legend_ax.legend(**legend)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def round_series(runs, model, n_rounds, protocol, arm, base):
    """``(rounds, means, sds, seeds)`` of test Recall@10 of ``arm`` from its ``base``'s round 0 on,
    over the seeds ``arm``'s round 1 has: a line starts from its own seeds' base, not from the
    base's mean over seeds the arm lacks."""
    seeds = set(values(runs, model, arm, 1, protocol, "recall@10"))
    xs, ys, es = [], [], []
    for k in range(n_rounds + 1):
        cell = [v for s, v in values(runs, model, arm if k else base, k, protocol, "recall@10").items() if s in seeds]
        if cell:
            xs.append(k)
            ys.append(float(np.mean(cell)))
            es.append(float(np.std(cell, ddof=1)) if len(cell) > 1 else 0.0)
    return xs, ys, es, len(seeds)


def plot_rounds(runs, model, n_rounds, path, arms):
    """Test Recall@10 per round (mean ± sd over seeds), one panel per protocol; ``arms``:
    ``(arm, base arm, label, line style)``, each a ``round_series``. False if no arm has two
    rounds to draw."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(PROTOCOLS), figsize=(10, 4), sharex=True)
    drawn = False
    for ax, protocol in zip(axes, PROTOCOLS):
        for arm, base, label, style in arms:
            xs, ys, es, n = round_series(runs, model, n_rounds, protocol, arm, base)
            if len(xs) > 1:
                ax.errorbar(xs, ys, yerr=es, marker="o", linestyle=style, capsize=3,
                            label=f"{label} ({n} seed{'s' if n > 1 else ''})")
                drawn = True
        ax.set_title(protocol.replace("_", " "), fontsize=10)
        ax.set_xlabel("round")
        ax.set_xticks(range(n_rounds + 1))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{model} test Recall@10 (mean ± sd)")
    _save(plt, fig, axes[0], path, fontsize=7)
    return drawn


def plot_collapse(runs, model, n_rounds, path):
    arms = [("rsir", "rsir", "RSIR (fidelity)", "-"), ("nofid", "rsir", "no fidelity", "-"),
            ("ft", "rsir", "RSIR-FT", "-")]
    return plot_rounds(runs, model, n_rounds, path, arms)


def paired_changes(runs, model, arm, base, k, protocol):
    """Per seed both have, the relative change of ``arm``'s round-``k`` test Recall@10 over ``base``'s."""
    cell, plain = (values(runs, model, a, k, protocol, "recall@10") for a in (arm, base))
    return [cell[s] / plain[s] - 1 for s in sorted(set(cell) & set(plain))]


def plot_variants(runs, model, n_rounds, path):
    """Each variant's change against plain RSIR on the same base and seeds, round by round (mean ±
    sd over seeds): the question the variants table answers, one column per base and one row per
    protocol; a variant keeps its colour in both columns. False if no variant has a round."""
    bases = [(base, title) for base, title in (("rsir", "default base"), ("strong", "strong base"))
             if any(paired_changes(runs, model, arm, base, 1, "recbole") for arm, _ in variant_arms(model, base))]
    if not bases:
        return False
    plt = _plt()
    fig, axes = plt.subplots(len(PROTOCOLS), len(bases), figsize=(5.5 * len(bases), 7), sharex=True, squeeze=False)
    colours = plt.get_cmap("tab10").colors
    for column, (base, title) in enumerate(bases):
        arms = variant_arms(model, base)
        for row, protocol in enumerate(PROTOCOLS):
            ax = axes[row][column]
            ax.axhline(0, color="black", linewidth=1, label="plain RSIR")
            for i, (arm, label) in enumerate(arms):
                rounds = [(k, paired_changes(runs, model, arm, base, k, protocol)) for k in range(1, n_rounds + 1)]
                rounds = [(k, c) for k, c in rounds if c]
                if not rounds:
                    continue
                n = sorted({len(c) for _, c in rounds})
                ax.errorbar([k + 0.06 * (i - (len(arms) - 1) / 2) for k, _ in rounds],
                            [100 * np.mean(c) for _, c in rounds],
                            yerr=[100 * np.std(c, ddof=1) if len(c) > 1 else 0.0 for _, c in rounds],
                            marker="o", capsize=3, color=colours[i % len(colours)],
                            label=f"{label} ({'-'.join(map(str, (n[0], n[-1]) if len(n) > 1 else n))} "
                                  f"seed{'s' if n[-1] > 1 else ''})")
            ax.set_title(f"{title}, {SHORT_NAMES[protocol]}", fontsize=10)
            ax.set_xticks(range(1, n_rounds + 1))
            ax.grid(alpha=0.3)
        axes[-1][column].set_xlabel("round")
        axes[-1][column].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    fig.supylabel(f"{model} test Recall@10: change against plain RSIR, % (mean ± sd over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_training_set(runs, model, n_rounds, path):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for arm, label in (("rsir", "RSIR"), ("nofid", "no fidelity"), ("strong", "strong + RSIR")):
        xs, seqs, dens = [], [], []
        for k in range(n_rounds + 1):
            rs = [_round(p, k) for (m, a, _), p in runs.items() if (m, a) == (model, arm)]
            rs = [r for r in rs if r is not None and r.get("n_items")]
            if rs:
                xs.append(k)
                seqs.append(np.mean([training_size(r)[0] for r in rs]))
                dens.append(np.mean([training_size(r)[1] for r in rs]))
        if xs:
            axes[0].plot(xs, seqs, marker="o", label=label)
            axes[1].plot(xs, dens, marker="o", label=label)
    axes[0].set_ylabel("training sequences")
    axes[1].set_ylabel("density (interactions / sequences x items)")
    for ax in axes:
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    _save(plt, fig, axes[0], path)


def plot_lengths(runs, model, n_rounds, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm, style in (("rsir", "-"), ("nofid", "--")):
        for k in range(1, n_rounds + 1):
            total = np.zeros(0)
            for (m, a, _), p in runs.items():
                r = _round(p, k) if (m, a) == (model, arm) else None
                hist = np.array(r["generation"].get("length_histogram", []) if r else [], dtype=float)
                if len(hist) > len(total):
                    total = np.pad(total, (0, len(hist) - len(total)))
                total[:len(hist)] += hist
            if total.sum():
                ax.plot(np.arange(len(total)), total / total.sum(), style, marker=".",
                        label=f"{'RSIR' if arm == 'rsir' else 'no fidelity'} round {k}")
    ax.set_xlabel("accepted sequence length")
    ax.set_ylabel("share of accepted sequences")
    ax.grid(alpha=0.3)
    _save(plt, fig, ax, path, fontsize=8)


def recall_at_10(protocol):
    """Reads a round's test Recall@10 under ``protocol``."""
    return lambda r: r["protocols"][protocol]["test"]["recall@10"]


def sweep_grid(runs, model, read):
    """``(taus, ps, grid, seed)``: ``read`` of round 1 of each sweep cell on the sweep's first seed,
    NaN where that cell has no finished round 1."""
    grid = np.full((len(SWEEP_TAU), len(SWEEP_P)), np.nan)
    seed = min((s for m, a, s in runs if m == model and a.startswith("sweep-")), default=None)
    for i, tau in enumerate(SWEEP_TAU):
        for j, p in enumerate(SWEEP_P):
            payload = runs.get((model, f"sweep-tau{tau}-p{p:g}", seed))
            r = payload and _round(payload, 1)
            if r and r.get("protocols"):
                grid[i, j] = read(r)
    return SWEEP_TAU, SWEEP_P, grid, seed


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


def plot_sweep(runs, model, path):
    taus, ps, grid, _ = sweep_grid(runs, model, recall_at_10("recbole"))
    if np.isnan(grid).all():
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(ps)), [f"{p:g}" for p in ps])
    ax.set_yticks(range(len(taus)), [str(t) for t in taus])
    ax.set_xlabel("p (history pool probability)")
    ax.set_ylabel("tau (fidelity rank)")
    for i in range(len(taus)):
        for j in range(len(ps)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.4f}", ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(image, label=f"{model} test Recall@10 after one round")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


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
