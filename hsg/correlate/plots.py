"""Box plots of the best-feature scores per layer, one panel per track subset.

This is the picture behind the study's Figure 2: if SAE features were consistent labels of
regulatory elements, each layer's best-feature correlations would sit high and tight and
the best layer would be the same for related tracks. A box per layer shows the spread over
the subset's tracks at once. Built with matplotlib's object API, never through pyplot, so it
needs no display and leaves the caller's backend alone (a notebook keeps its inline plots),
and from the result rows alone, so it can be redrawn from best_features.tsv.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_SCORES = (("pearson", "Pearson r of best feature"), ("ncc", "best NCC over lags"))


def best_scores_figure(best: Sequence[dict[str, Any]], members: dict[str, list[str]]) -> Figure:
    """Rows = Pearson / NCC, columns = subsets, x = layer, box over the subset's tracks."""
    import numpy as np
    from matplotlib.figure import Figure

    rng = np.random.default_rng(0)  # jitter only; fixed so the same input gives the same PNG
    firsts = [r for r in best if r["rank"] == 1]
    layers = sorted({r["layer"] for r in firsts})
    n_cols = max(1, len(members))
    width = max(4.0, 0.35 * len(layers) + 2.0)
    fig = Figure(figsize=(width * n_cols, 6.5), layout="constrained")
    axes = fig.subplots(len(_SCORES), n_cols, squeeze=False, sharey=True)
    for col, (subset, names) in enumerate(members.items()):
        held = set(names)
        for row, (key, label) in enumerate(_SCORES):
            ax = axes[row][col]
            data = [
                [
                    r[key]
                    for r in firsts
                    if r["layer"] == layer and r["track"] in held and r[key] is not None
                ]
                for layer in layers
            ]
            shown = [(layer, d) for layer, d in zip(layers, data, strict=True) if d]
            if shown:
                ax.boxplot(
                    [d for _, d in shown],
                    positions=list(range(len(shown))),
                    widths=0.6,
                    showfliers=False,  # every track is drawn as a point below
                )
                for x, (_, d) in enumerate(shown):
                    jitter = rng.uniform(-0.15, 0.15, size=len(d))
                    ax.scatter(x + jitter, d, s=9, alpha=0.5, color="tab:blue", zorder=3)
                ax.set_xticks(range(len(shown)), [str(layer) for layer, _ in shown])
            else:
                ax.text(
                    0.5, 0.5, "no scored tracks", ha="center", va="center", transform=ax.transAxes
                )
            ax.axhline(0.0, color="grey", lw=0.6)
            ax.grid(axis="y", alpha=0.3)
            if row == 0:
                ax.set_title(f"{subset} ({len(names)} tracks)")
            if row == len(_SCORES) - 1:
                ax.set_xlabel("layer")
            if col == 0:
                ax.set_ylabel(label)
    fig.suptitle("Best SAE feature per track, by layer")
    return fig


def plot_best_scores(
    best: Sequence[dict[str, Any]], members: dict[str, list[str]], path: str | Path
) -> Path:
    """Write `best_scores_figure(best, members)` as a PNG at `path`; returns the path."""
    out = Path(path)
    best_scores_figure(best, members).savefig(out, dpi=110)
    return out
