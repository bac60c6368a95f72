"""The study report's plots, each drawn from the runs' cells into ``plots/<model>-<name>.png``."""
import numpy as np

from recbole_rsir.study.cells import (PROTOCOLS, SHORT_NAMES, paired_changes, recall_at_10, round_of, sweep_grid,
                                      training_size, values, variant_arms)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _write(plt, fig, path, **savefig):
    fig.tight_layout()
    fig.savefig(path, dpi=110, **savefig)
    plt.close(fig)


def _save(plt, fig, legend_ax, path, **legend):
    if legend_ax.get_legend_handles_labels()[0]:
        legend_ax.legend(**legend)
    _write(plt, fig, path)


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
                seeds = f"{n[0]} seed{'s' * (n[0] > 1)}" if len(n) == 1 else f"{n[0]}-{n[-1]} seeds"
                ax.errorbar([k + 0.06 * (i - (len(arms) - 1) / 2) for k, _ in rounds],
                            [100 * np.mean(c) for _, c in rounds],
                            yerr=[100 * np.std(c, ddof=1) if len(c) > 1 else 0.0 for _, c in rounds],
                            marker="o", capsize=3, color=colours[i % len(colours)],
                            label=f"{label} ({seeds})")
            ax.set_title(f"{title}, {SHORT_NAMES[protocol]}", fontsize=10)
            ax.set_xticks(range(1, n_rounds + 1))
            ax.grid(alpha=0.3)
        axes[-1][column].set_xlabel("round")
        axes[-1][column].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    fig.supylabel(f"{model} test Recall@10: change against plain RSIR, % (mean ± sd over seeds)", fontsize=10)
    _write(plt, fig, path, bbox_inches="tight")      # the legends sit below the axes
    return True


def plot_training_set(runs, model, n_rounds, path):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for arm, label in (("rsir", "RSIR"), ("nofid", "no fidelity"), ("strong", "strong + RSIR")):
        xs, seqs, dens = [], [], []
        for k in range(n_rounds + 1):
            rs = [round_of(p, k) for (m, a, _), p in runs.items() if (m, a) == (model, arm)]
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
                r = round_of(p, k) if (m, a) == (model, arm) else None
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
    _write(plt, fig, path)
    return True
