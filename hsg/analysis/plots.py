"""The fragmentation plot: labels side by side as their most central features are removed.

Built with matplotlib's object API (`matplotlib.figure.Figure`), never through pyplot, so it
neither needs a display nor switches the backend of the process that calls it: a notebook
keeps its inline plots and can show the returned figure itself. The figure is built from the
topology JSON alone, so it can be redrawn from a saved `topology.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def fragmentation_figure(report: dict[str, Any]) -> Figure:
    """Components and density against the fraction of top-PageRank features removed."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_components, ax_density = fig.subplots(1, 2)
    for label in report["labels"]:
        curve = label["fragmentation"]
        x = [100 * point["fraction"] for point in curve]
        ax_components.plot(x, [p["components"] for p in curve], marker="o", label=label["label"])
        ax_density.plot(x, [p["density"] for p in curve], marker="o", label=label["label"])
    ax_components.set_xlabel("top-PageRank features removed (%)")
    ax_components.set_ylabel("weakly connected components")
    ax_components.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_density.set_xlabel("top-PageRank features removed (%)")
    ax_density.set_ylabel("density (pairs / (sequences × features))")
    for ax in (ax_components, ax_density):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Fragmentation of the sequence–feature graph — SAE {report['sae']}")
    return fig


def plot_fragmentation(report: dict[str, Any], path: str | Path) -> Path:
    """Write `fragmentation_figure(report)` as a PNG at `path`; returns the path."""
    path = Path(path)
    fragmentation_figure(report).savefig(path, dpi=120)
    return path
