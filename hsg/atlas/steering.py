"""Steering results for the atlas: read `hsg steer`'s ``metrics.json`` and check its SAE.

Steering results are not in the graph: `hsg steer` writes them into its output folder. The
atlas reads that file and shows, on the card of each target feature, every condition it
measured. Feature indices mean something only within one dictionary, so a results file is
accepted only when its recorded SAE id (which ends in the hash of the SAE's weights) is the
atlas's SAE; a file that records no SAE id is refused rather than trusted.

The atlas sits on the same import layer as `hsg.steer`, so the file name and the keys read
here are spelled out rather than imported; `tests/unit/test_atlas_steering.py` reads real
`hsg.api.steer` output, which keeps the two in step.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_FILE = "metrics.json"  # hsg.steer.report.METRICS_FILE


class SteeringResultsError(ValueError):
    """A file given as steering results that is not one, or is for another SAE."""


@dataclass
class SteeringRun:
    """One `hsg steer` run: who was steered (model, SAE, classifier) and its conditions."""

    source: str  # the path as read, for error messages to whoever runs the atlas
    provenance: dict[str, Any]
    baseline: dict[str, Any]
    route: str | None
    n_sequences: int | None
    conditions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def sae_id(self) -> str:
        return str(self.provenance["sae_id"])

    @property
    def name(self) -> str:
        """What the cards show: the results file with its folder (``steer/metrics.json``),
        never the full path — an atlas is shared, and a path says whose machine made it."""
        return display_name(self.source)


def display_name(path: str | Path) -> str:
    """The file's name under its folder's name (every results file is ``metrics.json``; the
    folder, `hsg steer --out`, tells runs apart), without the directories above it."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def shown(value: Any) -> Any:
    """A provenance value as a card shows it: an absolute path (a local model or classifier
    folder) by its last part only; anything else (a hub id, a hash) as it is."""
    if isinstance(value, str) and Path(value).is_absolute():
        return Path(value).name or value
    return value


def _results_path(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
        if not p.is_file():
            raise SteeringResultsError(
                f"{p.parent}: no {RESULTS_FILE} in it; give the folder `hsg steer --out` wrote "
                f"or its {RESULTS_FILE}"
            )
    elif not p.is_file():
        raise SteeringResultsError(f"steering results not found: {p}")
    return p


def read_steering(path: str | Path) -> SteeringRun:
    """Parse one results file (or the folder holding it); raise on anything else."""
    p = _results_path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SteeringResultsError(f"{p}: not a steering results file (not JSON: {exc})") from exc
    conditions = doc.get("conditions") if isinstance(doc, dict) else None
    if not isinstance(conditions, list) or not isinstance(doc.get("provenance"), dict):
        raise SteeringResultsError(
            f"{p}: not a steering results file (expected the metrics.json of `hsg steer`, "
            "with 'provenance' and 'conditions')"
        )
    provenance = doc["provenance"]
    if not provenance.get("sae_id"):
        raise SteeringResultsError(
            f"{p}: the steering results record no SAE identity (provenance.sae_id), so their "
            "feature indices cannot be matched to the atlas's SAE; re-run `hsg steer`"
        )
    by_feature: dict[str, list[dict[str, Any]]] = {}
    for k, row in enumerate(conditions):
        index = row.get("index") if isinstance(row, dict) else None
        if isinstance(index, bool) or not isinstance(index, int):
            raise SteeringResultsError(f"{p}: condition {k + 1} has no integer 'index'")
        feature = row.get("feature") or f"{provenance['sae_id']}/{index}"
        if feature != f"{provenance['sae_id']}/{index}":
            raise SteeringResultsError(
                f"{p}: condition {k + 1} names feature {feature!r}, which is not index {index} "
                f"of SAE {provenance['sae_id']!r}"
            )
        by_feature.setdefault(feature, []).append(row)
    baseline = doc.get("baseline")
    return SteeringRun(
        source=str(p),
        provenance=provenance,
        baseline=baseline if isinstance(baseline, dict) else {},
        route=doc.get("route"),
        n_sequences=doc.get("n_sequences"),
        conditions=by_feature,
    )


def read_all(paths: list[str | Path] | tuple[str | Path, ...] | None) -> list[SteeringRun]:
    """Every results file given (a file named twice is read once)."""
    runs: list[SteeringRun] = []
    seen: set[Path] = set()
    for path in paths or ():
        resolved = _results_path(path).resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        runs.append(read_steering(path))
    return runs


def check_sae(runs: list[SteeringRun], sae: str) -> None:
    """Refuse results of another SAE: their feature indices name other features."""
    for run in runs:
        if run.sae_id != sae:
            raise SteeringResultsError(
                f"{run.source} holds steering results for SAE {run.sae_id!r}, but the atlas is "
                f"of SAE {sae!r}: feature indices of one dictionary mean nothing in another"
            )


def shift(row: dict[str, Any]) -> float | None:
    """The measured shift of the classifier under one condition (Δ mean P(positive))."""
    value = row.get("delta_mean_prob")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def largest_shift(runs: list[SteeringRun], feature: str) -> float | None:
    """The signed shift of largest magnitude over every run and condition of `feature`."""
    values = [
        s
        for run in runs
        for row in run.conditions.get(feature, [])
        if (s := shift(row)) is not None
    ]
    return max(values, key=abs, default=None)
