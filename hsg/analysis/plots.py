"""The fragmentation plot: labels side by side as their most central features are removed.

Drawn with matplotlib's Agg backend, so it works on servers without a display; the figure
is built from the topology JSON alone, so it can be redrawn from a saved `topology.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_fragmentation(report: dict[str, Any], path: str | Path) -> Path:
    """Components and density against the fraction of top-PageRank features removed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_components, ax_density) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
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
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
