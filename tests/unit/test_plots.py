"""Plots are built without pyplot: they return figures and leave the caller's backend alone.

A notebook's inline plots stop working when a library calls `matplotlib.use("Agg")`; these
tests draw every hsg figure under a backend that is not Agg and check that it is still the
backend afterwards, and that pyplot holds no figure hsg opened.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from hsg.analysis.plots import fragmentation_figure, plot_fragmentation
from hsg.correlate.plots import best_scores_figure, plot_best_scores
from hsg.steer import report

PNG = b"\x89PNG"


@pytest.fixture
def svg_backend():
    """Select a backend that is not Agg for the test; restore the previous one afterwards."""
    before = matplotlib.get_backend()
    matplotlib.use("svg", force=True)
    current = matplotlib.get_backend()
    yield current
    matplotlib.use(before, force=True)


def _open_pyplot_figures() -> list[int]:
    import sys

    pyplot = sys.modules.get("matplotlib.pyplot")  # never imported here: only if already loaded
    return list(pyplot.get_fignums()) if pyplot is not None else []


def _fragmentation_report() -> dict:
    curve = [
        {"fraction": f, "components": 1 + int(10 * f), "density": 0.3 - f / 2} for f in (0, 0.25)
    ]
    return {"sae": "s", "labels": [{"label": "a", "fragmentation": curve}]}


def _best_rows() -> tuple[list[dict], dict[str, list[str]]]:
    best = [
        {"rank": 1, "layer": layer, "track": track, "pearson": 0.1 * layer, "ncc": 0.2}
        for layer in (0, 1, 2)
        for track in ("t1", "t2")
    ]
    return best, {"histone": ["t1", "t2"], "empty": ["t9"]}


def _steer_inputs() -> dict:
    rng = np.random.default_rng(0)
    labels = rng.random(40) > 0.5
    series = {"baseline": rng.random(40), "steer a=2": rng.random(40), "ablate": rng.random(40)}
    rows = [
        {"kind": "steer", "min_act": d, "alpha": a, "delta_mean_prob": 0.01 * a - d}
        for d in (0.0, 0.5)
        for a in (1.0, 2.0)
    ] + [{"kind": "ablate", "min_act": 0.0, "alpha": 0.0, "delta_mean_prob": -0.1}]
    summary = [
        {"rank": 1, "index": 7, "strongest": {"delta_mean_prob": 0.2}, "ablation": None},
        {"rank": 2, "index": 3, "strongest": None, "ablation": {"delta_mean_prob": -0.1}},
    ]
    n = 12
    dm = SimpleNamespace(
        sequence="ACGTACGTACGT",
        reference=rng.random(3),
        token_of_base=np.repeat(np.arange(3), 4),
        name="seq1",
        feature=7,
        layer=1,
    )
    return {
        "labels": labels,
        "series": series,
        "rows": rows,
        "summary": summary,
        "dm": dm,
        "m": rng.random((n, n)),
        "spec": rng.random(n),
    }


def test_figure_functions_return_figures_and_keep_the_backend(svg_backend: str) -> None:
    s = _steer_inputs()
    best, members = _best_rows()
    open_before = _open_pyplot_figures()
    figures = [
        fragmentation_figure(_fragmentation_report()),
        best_scores_figure(best, members),
        report.probabilities_figure("t", s["labels"], s["series"]),
        report.roc_figure("t", s["labels"], s["series"]),
        report.confusions_figure("t", s["labels"], s["series"]),
        report.grid_figure("t", s["rows"]),
        report.summary_figure(s["summary"]),
        report.depmap_figure(s["dm"], s["m"], s["spec"]),
    ]
    assert all(isinstance(fig, Figure) for fig in figures)
    assert report.grid_figure("t", [r for r in s["rows"] if r["kind"] != "steer"]) is None
    assert matplotlib.get_backend() == svg_backend
    assert _open_pyplot_figures() == open_before


def test_plot_functions_write_pngs_and_keep_the_backend(svg_backend: str, tmp_path: Path) -> None:
    s = _steer_inputs()
    best, members = _best_rows()
    open_before = _open_pyplot_figures()
    written = [
        plot_fragmentation(_fragmentation_report(), tmp_path / "fragmentation.png"),
        plot_best_scores(best, members, tmp_path / "best.png"),
    ]
    report.plot_probabilities(tmp_path / "probs.png", "t", s["labels"], s["series"])
    report.plot_roc(tmp_path / "roc.png", "t", s["labels"], s["series"])
    report.plot_confusions(tmp_path / "confusion.png", "t", s["labels"], s["series"])
    assert report.plot_grid(tmp_path / "grid.png", "t", s["rows"]) is True
    assert report.plot_grid(tmp_path / "none.png", "t", []) is False
    report.plot_summary(tmp_path / "summary.png", s["summary"])
    report.plot_depmap(tmp_path / "depmap.png", s["dm"], s["m"], s["spec"])
    written += [
        tmp_path / f"{name}.png"
        for name in ("probs", "roc", "confusion", "grid", "summary", "depmap")
    ]
    assert written[:2] == [tmp_path / "fragmentation.png", tmp_path / "best.png"]
    for path in written:
        assert path.read_bytes()[:4] == PNG, path
    assert not (tmp_path / "none.png").exists()
    assert matplotlib.get_backend() == svg_backend
    assert _open_pyplot_figures() == open_before
