"""Binary-classification metrics in plain numpy: accuracy, F1, confusion, ROC and AUROC.

scikit-learn is not a dependency, and these few formulas are easier to audit than a new
package. AUROC is computed from ranks (the Mann-Whitney U statistic) with average ranks for
ties, which equals the area under the trapezoidal ROC curve, so a classifier that outputs a
constant gets exactly 0.5 rather than an artefact of sort order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _as_arrays(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels for {s.size} scores")
    return y, s


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``; tied values share the mean of the ranks they span."""
    values = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    # boundaries of runs of equal values in sorted order
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], sorted_vals.size]
    mean_rank = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auroc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve; NaN when only one class is present (it is undefined)."""
    y, s = _as_arrays(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = average_ranks(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0)."""
    y, s = _as_arrays(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # one point per distinct score: the last index of each run of equal scores
    last = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s_sorted.size - 1]
    tp = np.cumsum(y_sorted)[last]
    fp = (last + 1) - tp
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def confusion(labels: Any, predicted: Any) -> list[list[int]]:
    """2x2 counts ``[[TN, FP], [FN, TP]]`` (rows: true class 0/1, columns: predicted)."""
    y = np.asarray(labels).astype(bool).ravel()
    p = np.asarray(predicted).astype(bool).ravel()
    return [
        [int((~y & ~p).sum()), int((~y & p).sum())],
        [int((y & ~p).sum()), int((y & p).sum())],
    ]


def f1_score(labels: Any, predicted: Any) -> float:
    """F1 of the positive class; 0.0 when there are no true and no predicted positives."""
    (_, fp), (fn, tp) = confusion(labels, predicted)
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0


def binary_metrics(labels: Any, probs: Any, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, F1, AUROC, mean P(positive) and the confusion matrix at ``threshold``."""
    y, p = _as_arrays(labels, probs)
    if y.size == 0:
        raise ValueError("no predictions to score")
    pred = p >= threshold
    return {
        "n": int(y.size),
        "n_positive": int(y.sum()),
        "accuracy": float((pred == y).mean()),
        "f1": f1_score(y, pred),
        "auroc": auroc(y, p),
        "mean_prob": float(p.mean()),
        "confusion": confusion(y, pred),
    }


def json_number(x: float) -> float | None:
    """NaN/inf are not JSON; write them as null so the metrics file stays standard JSON."""
    return None if x is None or not math.isfinite(x) else float(x)


def jsonable(obj: Any) -> Any:
    """Recursively replace non-finite floats by None (and numpy scalars by Python ones)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return json_number(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
