"""Steering and dependency-map reports: report.md, metrics.json, arrays and PNG plots.

Figures are built with matplotlib's object API (`*_figure` returns a `Figure`), never through
pyplot: no display is needed (safe in CI and on servers) and the caller's backend is left
alone, so a notebook keeps its inline plots. `plot_*` writes a figure as a PNG; every PNG is
written next to the report that links it, so a run folder can be copied or archived whole.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hsg.fileio import atomic_write_text
from hsg.steer.metrics import binary_metrics, jsonable, roc_curve
from hsg.steer.run import SteerResult, Target

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
PROBS_FILE = "probabilities.npz"
MAX_ROC_CURVES = 12


def _figure(**kwargs: Any) -> Figure:
    """A figure detached from pyplot: no backend is selected, nothing is kept open."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _save(fig: Figure, path: Path, **kwargs: Any) -> None:
    fig.savefig(path, dpi=110, **kwargs)


def _fmt(x: Any) -> str:
    """Three decimals for floats, an en dash for missing or undefined values (NaN AUROC)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _signed(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:+.3f}"


# ---------------------------------------------------------------------- figures


def probabilities_figure(title: str, labels: np.ndarray, series: dict[str, np.ndarray]) -> Figure:
    """Boxes of P(positive) per condition, split by true class (baseline first)."""
    names = list(series)
    fig = _figure(figsize=(max(5.0, 0.9 * len(names) + 2), 4))
    ax = fig.subplots()
    pos_data = [series[n][labels] for n in names]
    neg_data = [series[n][~labels] for n in names]
    x = np.arange(len(names))
    for data, shift, colour, lab in (
        (neg_data, -0.18, "#4c72b0", "true negative"),
        (pos_data, 0.18, "#dd8452", "true positive"),
    ):
        keep = [i for i, d in enumerate(data) if len(d)]
        if not keep:
            continue
        bp = ax.boxplot(
            [data[i] for i in keep],
            positions=x[keep] + shift,
            widths=0.3,
            patch_artist=True,
            showfliers=False,
        )
        for box in bp["boxes"]:
            box.set_facecolor(colour)
            box.set_alpha(0.6)
        ax.plot([], [], color=colour, lw=6, alpha=0.6, label=lab)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("P(positive)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_probabilities(
    path: Path, title: str, labels: np.ndarray, series: dict[str, np.ndarray]
) -> None:
    _save(probabilities_figure(title, labels, series), path)


def roc_figure(title: str, labels: np.ndarray, series: dict[str, np.ndarray]) -> Figure:
    """ROC curves of the baseline (black) and up to MAX_ROC_CURVES conditions."""
    fig = _figure(figsize=(5, 5))
    ax = fig.subplots()
    names = list(series)[: MAX_ROC_CURVES + 1]
    for i, name in enumerate(names):
        fpr, tpr = roc_curve(labels, series[name])
        m = binary_metrics(labels, series[name])
        style = {"color": "black", "lw": 2.0} if i == 0 else {"lw": 1.0}
        ax.plot(fpr, tpr, label=f"{name} (AUROC {_fmt(m['auroc'])})", **style)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_roc(path: Path, title: str, labels: np.ndarray, series: dict[str, np.ndarray]) -> None:
    _save(roc_figure(title, labels, series), path)


def confusions_figure(title: str, labels: np.ndarray, series: dict[str, np.ndarray]) -> Figure:
    """One confusion matrix (threshold 0.5) per condition, five to a row."""
    names = list(series)
    cols = min(5, len(names))
    rows = math.ceil(len(names) / cols)
    fig = _figure(figsize=(2.3 * cols, 2.3 * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names, strict=False):
        cm = np.array(binary_metrics(labels, series[name])["confusion"])
        ax.axis("on")
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(1, cm.sum()))
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=9)
        ax.set_xticks([0, 1])
        ax.set_xticklabels(["pred −", "pred +"], fontsize=7)
        ax.set_yticks([0, 1])
        ax.set_yticklabels(["true −", "true +"], fontsize=7)
        ax.set_title(name, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_confusions(
    path: Path, title: str, labels: np.ndarray, series: dict[str, np.ndarray]
) -> None:
    _save(confusions_figure(title, labels, series), path)


def grid_figure(title: str, rows: Sequence[dict[str, Any]]) -> Figure | None:
    """Heatmap of Δ mean P(positive) over δ (rows) × α (columns); None if no steering rows."""
    steer = [r for r in rows if r["kind"] == "steer"]
    if not steer:
        return None
    deltas = sorted({r["min_act"] for r in steer})
    alphas = sorted({r["alpha"] for r in steer})
    grid = np.full((len(deltas), len(alphas)), np.nan)
    for r in steer:
        grid[deltas.index(r["min_act"]), alphas.index(r["alpha"])] = r["delta_mean_prob"]
    fig = _figure(figsize=(1.0 * len(alphas) + 2.5, 0.7 * len(deltas) + 1.8))
    ax = fig.subplots()
    lim = max(0.05, float(np.nanmax(np.abs(grid))))
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(alphas)))
    ax.set_xticklabels([f"{a:g}" for a in alphas])
    ax.set_yticks(range(len(deltas)))
    ax.set_yticklabels([f"{d:g}" for d in deltas])
    ax.set_xlabel("α")
    ax.set_ylabel("δ (min activation)")
    ablate = next((r for r in rows if r["kind"] == "ablate"), None)
    extra = "" if ablate is None else f"; ablation {ablate['delta_mean_prob']:+.3f}"
    ax.set_title(f"{title}\nΔ mean P(positive){extra}", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


def plot_grid(path: Path, title: str, rows: Sequence[dict[str, Any]]) -> bool:
    """Write `grid_figure` as a PNG; False (and nothing written) if there is no grid."""
    fig = grid_figure(title, rows)
    if fig is None:
        return False
    _save(fig, path)
    return True


def summary_figure(summary: Sequence[dict[str, Any]]) -> Figure:
    """Per target: Δ mean P(positive) of its strongest steering condition and of ablation."""
    names = [f"#{s['rank']} f{s['index']}" for s in summary]
    strongest = [(s["strongest"] or {}).get("delta_mean_prob") or 0.0 for s in summary]
    ablation = [(s["ablation"] or {}).get("delta_mean_prob") or 0.0 for s in summary]
    x = np.arange(len(names))
    fig = _figure(figsize=(max(5.0, 0.5 * len(names) + 2), 4))
    ax = fig.subplots()
    ax.bar(x - 0.2, strongest, 0.4, label="strongest steering condition", color="#dd8452")
    ax.bar(x + 0.2, ablation, 0.4, label="ablation", color="#4c72b0")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("Δ mean P(positive)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_summary(path: Path, summary: Sequence[dict[str, Any]]) -> None:
    _save(summary_figure(summary), path)


# ---------------------------------------------------------------------- steering report


def write_steer_report(
    out: Path,
    result: SteerResult,
    rows: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    targets: Sequence[Target],
    provenance: dict[str, Any],
    parameters: dict[str, Any],
    plots: bool = True,
) -> dict[str, Any]:
    """Write metrics.json, probabilities.npz, report.md and (optionally) the PNGs into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    baseline = binary_metrics(result.labels, result.baseline)
    figures: dict[str, list[str]] = {}
    if plots:
        base = {"baseline": result.baseline}
        plot_roc(out / "baseline_roc.png", "baseline", result.labels, base)
        figures["baseline"] = ["baseline_roc.png"]
        for t in targets:
            idx = [k for k, c in enumerate(result.conditions) if c.target.index == t.index]
            series = {"baseline": result.baseline}
            series.update({result.conditions[k].label: result.probs[k] for k in idx})
            stem = f"target{t.rank:02d}_f{t.index}"
            title = f"#{t.rank} feature {t.index}"
            plot_probabilities(out / f"{stem}_probs.png", title, result.labels, series)
            plot_roc(out / f"{stem}_roc.png", title, result.labels, series)
            plot_confusions(out / f"{stem}_confusion.png", title, result.labels, series)
            files = [f"{stem}_probs.png", f"{stem}_roc.png", f"{stem}_confusion.png"]
            if plot_grid(
                out / f"{stem}_grid.png", title, [r for r in rows if r["index"] == t.index]
            ):
                files.append(f"{stem}_grid.png")
            figures[str(t.index)] = files
        plot_summary(out / "summary.png", summary)
        figures["summary"] = ["summary.png"]
    doc = {
        "provenance": provenance,
        "parameters": parameters,
        "n_sequences": int(result.labels.size),
        "n_positive": int(result.labels.sum()),
        "route": result.route,
        "baseline": baseline,
        "targets": summary,
        "conditions": rows,
        "figures": figures,
    }
    atomic_write_text(out / METRICS_FILE, json.dumps(jsonable(doc), indent=2) + "\n")
    np.savez_compressed(
        out / PROBS_FILE,
        ids=np.array(result.ids),
        labels=result.labels,
        baseline=result.baseline,
        probs=result.probs,
        feature=np.array([c.target.index for c in result.conditions], dtype=np.int64),
        kind=np.array([c.intervention.kind for c in result.conditions]),
        min_act=np.array([c.intervention.min_act for c in result.conditions], dtype=np.float64),
        alpha=np.array([c.intervention.alpha for c in result.conditions], dtype=np.float64),
    )
    atomic_write_text(out / REPORT_FILE, _steer_markdown(doc, targets))
    return doc


def _steer_markdown(doc: dict[str, Any], targets: Sequence[Target]) -> str:
    prov, params, base = doc["provenance"], doc["parameters"], doc["baseline"]
    lines = ["# Steering report", ""]
    lines += [f"- **{k}**: `{v}`" for k, v in prov.items()]
    lines += ["", "## Parameters", ""]
    lines += [f"- **{k}**: `{v}`" for k, v in params.items()]
    lines += [
        "",
        "Operator: `z_j ← α·max(z_j, δ)`, `z_k ← z_k/α` (k ≠ j); α = 0 isolates the target "
        "(others set to 0, target kept at max(z_j, δ)); ablation sets `z_j ← 0`. Decoded with the "
        "decoder bias" + (", plus the reconstruction error." if params.get("add_error") else "."),
        "",
        "## Baseline",
        "",
        f"{doc['n_sequences']} held-out sequences ({doc['n_positive']} positive), route "
        f"`{doc['route']}`.",
        "",
        "| accuracy | F1 | AUROC | mean P(positive) |",
        "|---|---|---|---|",
        f"| {_fmt(base['accuracy'])} | {_fmt(base['f1'])} | {_fmt(base['auroc'])} | "
        f"{_fmt(base['mean_prob'])} |",
        "",
    ]
    if "baseline" in doc["figures"]:
        lines += ["![baseline ROC](baseline_roc.png)", ""]
    lines += [
        "## Summary across targets",
        "",
        "Strongest = the steering condition with the largest |Δ mean P(positive)|; flipped = "
        "fraction of predictions whose class changed.",
        "",
        "| rank | feature | log2FC | ablation Δp | ablation ΔAUROC | strongest | Δp | ΔAUROC | "
        "flipped | max flipped |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in doc["targets"]:
        ab, st = s["ablation"] or {}, s["strongest"] or {}
        lfc = s.get("log2_fold_change")
        lines.append(
            f"| {s['rank']} | {s['index']} | {_fmt(lfc)} "
            f"| {_signed(ab.get('delta_mean_prob'))} | {_signed(ab.get('delta_auroc'))} "
            f"| {st.get('label', '–')} | {_signed(st.get('delta_mean_prob'))} "
            f"| {_signed(st.get('delta_auroc'))} | {_fmt(st.get('flipped'))} "
            f"| {_fmt(s['max_flipped'])} |"
        )
    if "summary" in doc["figures"]:
        lines += ["", "![summary](summary.png)"]
    for t in targets:
        lines += ["", f"## Target #{t.rank}: feature {t.index}", "", f"`{t.feature}`", ""]
        lines += [
            "| condition | mean P | Δp | AUROC | ΔAUROC | accuracy | F1 | flipped | → + | → − |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in doc["conditions"]:
            if r["index"] != t.index:
                continue
            lines.append(
                f"| {r['label']} | {_fmt(r['mean_prob'])} | {_signed(r['delta_mean_prob'])} "
                f"| {_fmt(r['auroc'])} | {_signed(r['delta_auroc'])} | {_fmt(r['accuracy'])} "
                f"| {_fmt(r['f1'])} | {_fmt(r['flipped'])} | {_fmt(r['flipped_to_positive'])} "
                f"| {_fmt(r['flipped_to_negative'])} |"
            )
        for f in doc["figures"].get(str(t.index), []):
            lines += ["", f"![{f}]({f})"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- dependency maps


def write_depmap(
    out: Path, dm: Any, provenance: dict[str, Any], plots: bool = True
) -> dict[str, Any]:
    """depmap.tsv (base × base), mutations.tsv, sensitivity.tsv, delta.npy, depmap.json, PNG."""
    from hsg.steer.depmap import summary as dm_summary

    out.mkdir(parents=True, exist_ok=True)
    n = len(dm.sequence)
    m = dm.base_matrix()
    with open(out / "depmap.tsv", "w") as fh:
        fh.write("mutated_position\t" + "\t".join(str(q) for q in range(n)) + "\n")
        for p in range(n):
            fh.write(f"{p}\t" + "\t".join(_num(v) for v in m[p]) + "\n")
    tob = dm.token_of_base
    with open(out / "mutations.tsv", "w") as fh:
        fh.write(
            "position\tref\talt\ttoken\tdelta_own_token\tsum_abs_delta\tmax_abs_delta\t"
            "argmax_token\n"
        )
        for p in range(n):
            for a, alt in enumerate(dm.alternatives[p]):
                d = dm.delta[p, a]
                fh.write(
                    f"{p}\t{dm.sequence[p]}\t{alt}\t{tob[p]}\t{_num(d[tob[p]])}\t"
                    f"{_num(np.abs(d).sum())}\t{_num(np.abs(d).max())}\t{int(np.argmax(np.abs(d)))}\n"
                )
    eff, spec = dm.effect(), dm.spectral()
    own = np.abs(dm.own_token_delta()).mean(axis=1)
    with open(out / "sensitivity.tsv", "w") as fh:
        fh.write("position\tbase\ttoken\treference_activity\teffect\town_token\tspectral\n")
        for p in range(n):
            fh.write(
                f"{p}\t{dm.sequence[p]}\t{tob[p]}\t{_num(dm.reference[tob[p]])}\t{_num(eff[p])}\t"
                f"{_num(own[p])}\t{_num(spec[p])}\n"
            )
    np.save(out / "delta.npy", dm.delta)
    doc = {
        "provenance": provenance,
        **dm_summary(dm),
        "alternatives_order": "per position, the three bases of ACGT other than the reference, "
        "in ACGT order (delta.npy axis 1)",
        "tokens": dm.tokens,
        "offsets": [list(o) for o in dm.offsets],
        "reference": dm.reference.tolist(),
        "files": ["depmap.tsv", "mutations.tsv", "sensitivity.tsv", "delta.npy"]
        + (["depmap.png"] if plots else []),
    }
    atomic_write_text(out / "depmap.json", json.dumps(jsonable(doc), indent=2) + "\n")
    if plots:
        plot_depmap(out / "depmap.png", dm, m, spec)
    return doc


def _num(v: float) -> str:
    return "nan" if not np.isfinite(v) else f"{v:.6g}"


def depmap_figure(dm: Any, m: np.ndarray, spec: np.ndarray) -> Figure:
    """The base × base dependency map with the reference activity above, spectral beside."""
    n = len(dm.sequence)
    fig = _figure(figsize=(7.5, 7.5))
    grid = fig.add_gridspec(
        2, 3, width_ratios=(1, 0.12, 0.03), height_ratios=(0.15, 1), wspace=0.06, hspace=0.05
    )
    ax = fig.add_subplot(grid[1, 0])
    top = fig.add_subplot(grid[0, 0], sharex=ax)
    side = fig.add_subplot(grid[1, 1], sharey=ax)
    im = ax.imshow(
        m,
        cmap="magma",
        aspect="auto",
        interpolation="nearest",
        extent=(-0.5, n - 0.5, n - 0.5, -0.5),
    )
    ax.set_xlabel("base position (token covering it)")
    ax.set_ylabel("mutated base position")
    top.plot(
        np.arange(n), dm.reference[dm.token_of_base], color="black", lw=1, drawstyle="steps-mid"
    )
    top.set_ylabel("z_j", fontsize=8)
    top.tick_params(labelbottom=False)
    top.set_title(f"{dm.name}: feature {dm.feature}, layer {dm.layer}; mean |Δz_j|", fontsize=9)
    side.plot(spec, np.arange(n), color="#dd8452", lw=1)
    side.set_xlabel("spectral", fontsize=8)
    side.tick_params(labelleft=False)
    fig.colorbar(im, cax=fig.add_subplot(grid[1, 2]), label="mean |Δz_j|")
    return fig


def plot_depmap(path: Path, dm: Any, m: np.ndarray, spec: np.ndarray) -> None:
    _save(depmap_figure(dm, m, spec), path, bbox_inches="tight")
