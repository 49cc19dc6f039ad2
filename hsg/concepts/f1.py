"""Token-level precision, recall and F1 of every (feature, concept) pair, over thresholds.

A feature *predicts* a concept at threshold ``t`` on the tokens where its activation is
above ``t × (its maximum activation)``; the concept is *true* on the tokens that overlap it
(`hsg.concepts.data`). The thresholds are a grid of fractions; the maximum is taken on the
**select** split only, the threshold of each pair is the one with the best F1 on the select
split, and the reported precision, recall and F1 are those of the **test** split at that
threshold. Nothing measured on the test split chooses anything.

Why sparse products and bins: for one split, let ``bin(i, f)`` be the highest grid step the
activation of feature ``f`` at token ``i`` clears. The sparse matrix ``B`` [tokens, features ×
steps] has a 1 at ``(i, f·K + bin)``; then ``Bᵀ L`` (``L`` the token × concept labels) counts,
for every feature, step and concept, the true tokens whose activation lands in that bin, and
a reverse cumulative sum over the steps turns "lands in bin k" into "clears step k". The
product is computed feature block by feature block as a join of each stored activation with
its token's labels and one bincount into a cache-sized dense accumulator (`split_counts`):
the work is one operation per (activation, label of its token) pair — not per threshold, not
per token × feature, and with no Python loop over features or pairs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from hsg.concepts.data import ConceptLabels, TokenActivations, split_rows

DEFAULT_THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class ConceptConfig:
    """Parameters of one concept evaluation; round-trips through JSON."""

    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    select_fraction: float = 0.5
    seed: int = 0
    feature_block: int = 64  # features whose counts are accumulated together (cache-sized)

    def __post_init__(self) -> None:
        ts = tuple(float(t) for t in self.thresholds)
        if not ts or any(not 0.0 <= t < 1.0 for t in ts) or list(ts) != sorted(set(ts)):
            raise ValueError(
                f"thresholds must be distinct, increasing fractions in [0, 1), got {ts}"
            )
        object.__setattr__(self, "thresholds", ts)
        if not 0.0 < self.select_fraction < 1.0:
            raise ValueError(f"select_fraction must be in (0, 1), got {self.select_fraction}")
        if self.feature_block < 1:
            raise ValueError("feature_block must be at least 1")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ConceptConfig:
        data = json.loads(text)
        data["thresholds"] = tuple(data["thresholds"])
        return cls(**data)


@dataclass
class SplitCounts:
    """Counts of one split: tp [F, K, C], predicted [F, K], positives [C], tokens."""

    tp: np.ndarray
    predicted: np.ndarray
    positives: np.ndarray
    tokens: int


@dataclass
class ConceptResult:
    """Every pair's chosen threshold and its select/test scores, as [features, concepts]."""

    config: ConceptConfig
    feature_ids: list[str]
    concepts: list  # list[Concept]
    feature_max: np.ndarray  # [F] on the select split
    step: np.ndarray  # [F, C] chosen grid step (on select)
    select_f1: np.ndarray
    f1: np.ndarray  # test split, at the chosen step
    precision: np.ndarray
    recall: np.ndarray
    tp: np.ndarray  # test true positives at the chosen step
    support: np.ndarray  # [C] test tokens in the concept
    tokens: dict[str, int] = field(default_factory=dict)
    sequences: dict[str, int] = field(default_factory=dict)

    def threshold(self) -> np.ndarray:
        """[F, C] absolute activation threshold of each pair."""
        grid = np.asarray(self.config.thresholds)
        return grid[self.step] * self.feature_max[:, None]

    def table(self, min_select_f1: float = 0.0) -> pd.DataFrame:
        """One row per pair with select F1 above `min_select_f1` (> 0 by default), best first."""
        f, c = np.nonzero(self.select_f1 > min_select_f1)
        grid = np.asarray(self.config.thresholds)
        frame = pd.DataFrame(
            {
                "feature": [self.feature_ids[i] for i in f],
                "concept": [self.concepts[j].name for j in c],
                "annotation_id": [self.concepts[j].annotation_id for j in c],
                "kind": [self.concepts[j].kind for j in c],
                "f1": self.f1[f, c],
                "precision": self.precision[f, c],
                "recall": self.recall[f, c],
                "select_f1": self.select_f1[f, c],
                "threshold_fraction": grid[self.step[f, c]],
                "threshold": grid[self.step[f, c]] * self.feature_max[f],
                "tp": self.tp[f, c],
                "support": self.support[c],
            }
        )
        return frame.sort_values(
            ["concept", "select_f1", "f1", "feature"], ascending=[True, False, False, True]
        ).reset_index(drop=True)

    def best_per_concept(self, top: int = 1) -> pd.DataFrame:
        """The `top` features of each concept ranked by *select* F1 (the test F1 is what is
        reported; ranking by it would select on the test split)."""
        frame = self.table()
        return frame.groupby("concept", sort=True).head(top).reset_index(drop=True)


def _bins(values: sp.csc_matrix, feature_max: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Per stored entry of the CSC matrix, the number of steps its activation clears (0:
    none). Exact comparisons ``activation > grid[k] × max`` per step, in chunks: K cheap
    vector passes beat a binary search over unsorted keys, and no division can round an
    activation across a threshold."""
    data = values.data
    cols = np.repeat(np.arange(values.shape[1]), np.diff(values.indptr))
    bins = np.empty(len(data), dtype=np.int8 if len(grid) < 127 else np.int16)
    chunk = 1 << 20
    for lo in range(0, len(data), chunk):
        hi = min(lo + chunk, len(data))
        peak = feature_max[cols[lo:hi]]
        x = data[lo:hi].astype(np.float64)
        count = np.zeros(hi - lo, dtype=bins.dtype)
        for g in grid:
            count += x > g * peak
        count[peak <= 0] = 0
        bins[lo:hi] = count
    return bins


def split_counts(
    values: sp.spmatrix,
    labels: sp.spmatrix,
    feature_max: np.ndarray,
    grid: Sequence[float],
    block: int = 64,
) -> SplitCounts:
    """True positives and predictions of every (feature, step, concept) on these rows.

    ``tp = Bᵀ L`` is computed as the sparse product it is, column block by column block of
    ``B`` (``block`` features at a time, so the dense accumulator of the block,
    block × K × C counts, stays in cache): every stored activation of the block meets the
    few labels of its token (a join on the token, CSC column against CSR rows of ``L``), and
    one ``bincount`` over ``(feature·K + step)·C + concept`` adds them up. Only tokens inside
    some concept can be true positives; predictions are one bincount per feature.
    """
    g = np.asarray(grid, dtype=np.float64)
    k = len(g)
    csc = sp.csc_matrix(values)
    n_features = csc.shape[1]
    n_concepts = labels.shape[1]
    steps = _bins(csc, feature_max, g)
    lab = sp.csr_matrix(labels, dtype=bool)
    per_row = np.diff(lab.indptr)
    # counts fit int32 (at most the tokens of a split); half the memory of int64
    tp = np.zeros((n_features, k, n_concepts), dtype=np.int32)
    predicted = np.zeros((n_features, k), dtype=np.int64)
    for lo in range(0, n_features, block):
        hi = min(lo + block, n_features)
        a, b = csc.indptr[lo], csc.indptr[hi]
        st = steps[a:b].astype(np.int64)
        local = np.repeat(np.arange(hi - lo), np.diff(csc.indptr[lo : hi + 1]))
        live = st > 0
        key = local[live] * k + st[live] - 1  # (feature in block)·K + highest step cleared
        predicted[lo:hi] = np.bincount(key, minlength=(hi - lo) * k).reshape(hi - lo, k)
        rows = csc.indices[a:b][live]
        reps = per_row[rows]
        inside = reps > 0
        rows, key, reps = rows[inside], key[inside], reps[inside]
        total = int(reps.sum())
        starts = np.repeat(lab.indptr[rows] - (np.cumsum(reps) - reps), reps)
        concept = lab.indices[starts + np.arange(total)]
        counts = np.bincount(
            np.repeat(key, reps) * n_concepts + concept, minlength=(hi - lo) * k * n_concepts
        )
        tp[lo:hi] = counts.reshape(hi - lo, k, n_concepts)
    # "lands in step k" → "clears step k": reverse cumulative sums over the steps, in place
    for step in range(k - 2, -1, -1):
        tp[:, step] += tp[:, step + 1]
        predicted[:, step] += predicted[:, step + 1]
    positives = np.asarray(labels.sum(axis=0)).ravel().astype(np.int64)
    return SplitCounts(tp, predicted, positives, int(values.shape[0]))


def scores(tp: np.ndarray, predicted: np.ndarray, positives: np.ndarray) -> tuple:
    """(precision, recall, f1), 0 where undefined; shapes broadcast as tp's."""
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(positives > 0, tp / np.maximum(positives, 1), 0.0)
        denom = predicted + positives
        f1 = np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0)
    return precision, recall, f1


def concept_f1(
    activations: TokenActivations,
    labels: ConceptLabels,
    config: ConceptConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> ConceptResult:
    """Score every feature against every concept (see the module docstring)."""
    config = config or ConceptConfig()
    index = activations.index
    if labels.matrix.shape[0] != index.n_tokens:
        raise ValueError(
            f"{labels.matrix.shape[0]} label rows for {index.n_tokens} activation rows"
        )
    parts = split_rows(index, config.select_fraction, config.seed)
    if len(parts["select"]) == 0 or len(parts["test"]) == 0:
        raise ValueError(
            f"{len(index.sequence_ids)} sequence(s) give an empty select or test split; "
            "concept F1 needs sequences in both (use more sequences or another --select-fraction)"
        )
    grid = np.asarray(config.thresholds)
    sel_values = activations.values[parts["select"]]
    feature_max = np.asarray(sel_values.max(axis=0).toarray()).ravel().astype(np.float64)
    counts = {}
    for name in ("select", "test"):
        if progress:
            progress(f"counting the {name} split ({len(parts[name])} tokens)")
        counts[name] = split_counts(
            activations.values[parts[name]], labels.matrix[parts[name]], feature_max, grid,
            config.feature_block,
        )  # fmt: skip
    sel = counts["select"]
    # F1 = 2·tp / (predicted + positives); 0 where both are 0 (then tp is 0 as well)
    denom = (sel.predicted[:, :, None] + sel.positives[None, None, :]).astype(np.float32)
    np.maximum(denom, 1.0, out=denom)
    f1_sel = np.divide(sel.tp, denom, dtype=np.float32)
    f1_sel *= 2.0
    del denom
    step = np.argmax(f1_sel, axis=1)  # [F, C]: first best step on select
    f_idx = np.arange(f1_sel.shape[0])[:, None]
    c_idx = np.arange(f1_sel.shape[2])[None, :]
    test = counts["test"]
    tp = test.tp[f_idx, step, c_idx]
    predicted = test.predicted[f_idx, step]
    precision, recall, f1 = scores(tp, predicted, test.positives[None, :])
    seq_rows = index.sequence_of_row()
    return ConceptResult(
        config=config,
        feature_ids=list(activations.feature_ids),
        concepts=list(labels.concepts),
        feature_max=feature_max,
        step=step,
        select_f1=f1_sel[f_idx, step, c_idx],
        f1=f1,
        precision=precision,
        recall=recall,
        tp=tp,
        support=test.positives,
        tokens={k: len(v) for k, v in parts.items()},
        sequences={k: len(np.unique(seq_rows[v])) for k, v in parts.items()},
    )


def split_counts_loop(
    values: sp.csr_matrix, labels: sp.csr_matrix, feature_max: np.ndarray, grid: Sequence[float]
) -> SplitCounts:
    """The same counts with a loop over features and steps: the benchmark's baseline (and
    the obvious way to write it), kept to show what the sparse product replaces."""
    g = np.asarray(grid, dtype=np.float64)
    csc = values.tocsc()
    lab = sp.csr_matrix(labels, dtype=np.int32)
    n_features, k, n_concepts = values.shape[1], len(g), labels.shape[1]
    tp = np.zeros((n_features, k, n_concepts), dtype=np.int64)
    predicted = np.zeros((n_features, k), dtype=np.int64)
    for f in range(n_features):
        if feature_max[f] <= 0:
            continue
        lo, hi = csc.indptr[f], csc.indptr[f + 1]
        rows, vals = csc.indices[lo:hi], csc.data[lo:hi].astype(np.float64)
        for step in range(k):
            active = rows[vals > g[step] * feature_max[f]]
            predicted[f, step] = len(active)
            tp[f, step] = np.asarray(lab[active].sum(axis=0)).ravel()
    positives = np.asarray(labels.sum(axis=0)).ravel().astype(np.int64)
    return SplitCounts(tp, predicted, positives, int(values.shape[0]))
