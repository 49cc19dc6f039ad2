"""Token-level precision, recall and F1 of every (feature, concept) pair, over thresholds.

A feature *predicts* a concept at threshold ``t`` on the tokens where its activation is
above ``t × (its maximum activation)``; the concept is *true* on the tokens that overlap it
(`hsg.concepts.data`). The thresholds are a grid of fractions; the maximum is taken on the
**select** split only, the threshold of each pair is the one with the best F1 on the select
split, and the reported precision, recall and F1 are those of the **test** split at that
threshold. Nothing measured on the test split chooses anything.

Why sparse products and bins: for one split, let ``s(i, f)`` be the number of grid steps
the activation of feature ``f`` at token ``i`` clears. The sparse matrix ``B`` [tokens,
(steps+1) × features] has a 1 at ``(i, s·F + f)``; then ``Lᵀ B`` (``L`` the token × concept
labels) counts, for every concept, step and feature, the true tokens whose activation clears
exactly that many steps, and a reverse cumulative sum over the steps turns "exactly s" into
"at least s". The product is computed a block of concepts at a time: the rows of ``B`` of
each concept's tokens are gathered by scipy's compiled row indexing and counted by one
bincount (`_concept_counts`). The work is one operation per (label, activation of its
token) pair — not per threshold, not per token × feature, and with no Python loop over
features or pairs. The select split's F1 and its best step are then taken plane by plane
over the steps of the block, so no dense [features, steps, concepts] array of either split
is ever held whole; the test split's counts are read at the chosen step only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from hsg.concepts.data import ConceptLabels, TokenActivations, split_rows

try:  # optional compiled kernels (numba comes with the `motifs` extra)
    from hsg.concepts import kernels as _kernels
except ImportError:  # pragma: no cover - depends on the environment
    _kernels = None

ENGINES = ("auto", "numba", "numpy")

DEFAULT_THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class ConceptConfig:
    """Parameters of one concept evaluation; round-trips through JSON."""

    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    select_fraction: float = 0.5
    seed: int = 0
    # unused since counts are blocked by concept (sized to memory); kept so that configs
    # written before still load and round-trip
    feature_block: int = 64

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
    """Every pair's chosen threshold and its select/test scores, as [features, concepts]
    (the numba engine's are views of [concepts, features] rows, i.e. Fortran-ordered: the
    same values, without a transposing copy)."""

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


_EXACT_F32 = 1 << 24  # integers below this are exact in float32
_BUCKETS = 4096  # ratio buckets of `_steps_cleared` (a few of them hold a grid value)
_MARGIN = 1e-5  # far wider than float32 rounding of activation × (buckets / max)


def _bucket_table(grid: np.ndarray, m: int) -> np.ndarray:
    """Steps cleared by every ratio activation / max in each of m + 2 buckets, or -1 where
    a grid value (± a margin far wider than any rounding of the ratio) lies in the bucket.
    Bucket i (1..m) holds ratios in [(i-1)/m, i/m); 0 holds negatives, m+1 ratios ≥ 1."""
    dtype = np.int8 if len(grid) < 127 else np.int16
    edges = np.arange(m + 2, dtype=np.float64)
    lo = np.concatenate([[-np.inf], (edges[1:-1] - 1) / m, [1.0]]) - _MARGIN
    hi = np.concatenate([[0.0], edges[1:-1] / m, [np.inf]]) + _MARGIN
    sure = np.searchsorted(grid, lo, side="left").astype(dtype)  # steps with g < lo
    most = np.searchsorted(grid, hi, side="left").astype(dtype)
    if len(grid) and grid[0] < 0:  # a step every activation clears, even where max ≤ 0
        most[:] = -1
    return np.where(sure == most, sure, -1).astype(dtype)  # -1: count exactly


def _steps_cleared(
    values: sp.csr_matrix,
    feature_max: np.ndarray,
    grid: np.ndarray,
    cols: np.ndarray | None = None,
) -> np.ndarray:
    """Per stored entry, how many grid steps its activation clears (0: none), exactly as
    ``activation > grid[k] × max`` in float64 decides it (0 where max ≤ 0).

    Why buckets: comparing every entry with every step is K passes over all activations.
    Instead, activation / max is cut into a fine grid of buckets (one float32 multiply);
    a bucket that holds no grid value (± a margin far wider than any rounding) clears the
    same steps for all its entries, read from a small table. Only entries in the few
    buckets that hold a grid value — ties on a threshold among them — are compared
    exactly. ``cols``: the entries' feature numbers as intp, if the caller has them (numpy
    converts int32 indices on every gather otherwise)."""
    grid = np.asarray(grid, dtype=np.float64)
    cols = values.indices.astype(np.intp) if cols is None else cols
    m = _BUCKETS
    table = _bucket_table(grid, m)
    dtype = table.dtype
    with np.errstate(divide="ignore"):
        scale = np.where(feature_max > 0, m / feature_max, 0.0).astype(np.float32)
    y = values.data * scale.take(cols)  # activation / max × m, float32
    np.fmax(y, -1.0, out=y)  # fmax/fmin, not clip: NaN goes to bucket 0, counted exactly
    np.fmin(y, float(m), out=y)
    y += 1.0
    steps = table.take(y.astype(np.intp))
    unsure = np.flatnonzero(steps < 0)
    if len(unsure):
        x = values.data[unsure].astype(np.float64)
        peak = feature_max[cols[unsure]]
        exact = np.zeros(len(unsure), dtype=dtype)
        for g in grid:
            exact += x > g * peak
        exact[peak <= 0] = 0
        steps[unsure] = exact
    return steps


def _bin_matrix(
    values: sp.csr_matrix, feature_max: np.ndarray, grid: np.ndarray
) -> tuple[sp.csr_matrix, np.ndarray]:
    """``B`` [tokens, (K+1)·features]: a 1 at ``(i, s·F + f)`` where feature ``f``'s activation
    at token ``i`` clears exactly ``s`` steps (block s = 0: none, never counted). Step-major
    columns make each step a contiguous [concepts, features] plane of the counts. Also
    [K, F]: the tokens above each step of each feature (predictions), from the same keys."""
    n_features, k = values.shape[1], len(grid)
    cols = values.indices.astype(np.intp)  # gathers and bincounts take intp as it is
    steps = _steps_cleared(values, feature_max, grid, cols)
    cols += steps * np.intp(n_features)
    predicted = np.bincount(cols, minlength=(k + 1) * n_features).reshape(k + 1, n_features)
    predicted = predicted[1:]
    for step in range(k - 2, -1, -1):
        predicted[step] += predicted[step + 1]
    # int32 columns: scipy keeps them as they are (int64 ones it would scan and narrow)
    b = sp.csr_matrix(
        (np.ones(len(cols), dtype=np.int8), cols.astype(np.int32), values.indptr),
        shape=(values.shape[0], (k + 1) * n_features),
    )
    return b, predicted


def _concept_counts(
    b: sp.csr_matrix, lab: sp.csc_matrix, lo: int, hi: int, k: int, dtype: type = np.int64
) -> np.ndarray:
    """True positives [hi-lo, K, F] of concepts lo..hi: ``Lᵀ B`` for those columns of ``L``.

    The rows of ``B`` of every token in the concept are gathered (one compiled row-index
    copy) and counted by one bincount keyed ``concept·(K+1)·F + column``; keys are grouped
    by concept, so the bincount writes one cache-sized window at a time. The work is one
    operation per (label, activation of its token) pair. A reverse cumulative sum over the
    step planes then turns "clears exactly s steps" into "clears step s" (in ``dtype``:
    float32 is exact while counts stay below 2²⁴, and half the bytes of int64)."""
    width = b.shape[1]
    n_features = width // (k + 1)
    rows = lab.indices[lab.indptr[lo] : lab.indptr[hi]]
    sub = b[rows]
    ends = sub.indptr[lab.indptr[lo : hi + 1] - lab.indptr[lo]]
    keys = sub.indices  # a fresh copy: concept j's entries are shifted to its window
    for j in range(1, hi - lo):
        keys[ends[j] : ends[j + 1]] += j * width
    counts = np.bincount(keys, minlength=(hi - lo) * width)
    tp = counts.reshape(hi - lo, k + 1, n_features)[:, 1:, :]
    if dtype != counts.dtype:
        tp = tp.astype(dtype)
    for step in range(k - 2, -1, -1):
        tp[:, step] += tp[:, step + 1]
    return tp


def _column_max(values: sp.csr_matrix) -> np.ndarray:
    """Each column's maximum, implicit zeros included (as ``values.max(axis=0)``), without
    the CSC copy scipy makes for it: one unbuffered ``maximum.at`` over the stored entries."""
    if values.dtype.kind != "f":
        return np.asarray(values.max(axis=0).toarray()).ravel()
    out = np.full(values.shape[1], -np.inf, dtype=values.dtype)
    np.maximum.at(out, values.indices, values.data)
    stored = np.bincount(values.indices, minlength=values.shape[1])
    np.maximum(out, 0, out=out, where=stored < values.shape[0])
    return out


def _concept_block(n_concepts: int, k: int, n_features: int) -> int:
    """Concepts per block: about 2²⁰ counts ([block, K+1, F] int64, ~8 MB) at a time."""
    return max(1, min(n_concepts, (1 << 20) // max(1, (k + 1) * n_features)))


def _use_numba(engine: str) -> bool:
    """Whether to count with the numba kernels: ``auto`` when numba imports, ``numba``
    always (an error without it), ``numpy`` never. Both give identical results."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "numba" and _kernels is None:
        raise RuntimeError("engine='numba' needs numba (pip install 'hsg[motifs]')")
    return _kernels is not None and engine != "numpy"


def _feature_shift(n_features: int) -> int:
    """Bits of the feature in a kernel key ``steps << shift | feature``."""
    return max(0, int(n_features - 1).bit_length())


def _kernel_bins(
    csr: sp.csr_matrix, feature_max: np.ndarray, grid: np.ndarray, row_split: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """(key ``steps << shift | feature`` per stored entry, predicted [2, K, F] of the select
    and test rows, shift). Keys are 2 bytes where (K+2) << shift fits: the counting reads
    them at random."""
    n_features, k = csr.shape[1], len(grid)
    data = csr.data if csr.data.dtype.kind in "fiu" else csr.data.astype(np.float64)
    shift = _feature_shift(n_features)
    width = (k + 2) << shift  # (step K+1 marks entries still to compare exactly)
    dtype = np.uint16 if width <= 1 << 16 else np.int32 if width < 1 << 31 else np.int64
    keys = np.empty(len(csr.indices), dtype=dtype)
    predicted = np.empty((2, k, n_features), dtype=np.int64)
    table = _bucket_table(grid, _BUCKETS)
    _kernels.bin_keys(
        csr.indptr, csr.indices, data, feature_max, grid, table, row_split, shift, keys,
        predicted,
    )  # fmt: skip
    return keys, predicted, shift


def _kernel_labels(labels: sp.spmatrix, row_split: np.ndarray, act_indptr: np.ndarray) -> tuple:
    """`hsg.concepts.kernels.split_columns` of the label matrix (as canonical CSR)."""
    lab = sp.csr_matrix(labels)
    if not lab.has_canonical_format:
        lab = lab.copy()
        lab.sum_duplicates()
    return _kernels.split_columns(
        lab.indptr, lab.indices, lab.data, row_split, lab.shape[1], act_indptr
    )


def _label_columns(labels: sp.spmatrix) -> sp.csc_matrix:
    """The label matrix by concept (CSC), only its true entries."""
    lab = sp.csc_matrix(labels, dtype=bool, copy=True)
    lab.eliminate_zeros()
    return lab


def split_counts(
    values: sp.spmatrix,
    labels: sp.spmatrix,
    feature_max: np.ndarray,
    grid: Sequence[float],
    block: int | None = None,
    engine: str = "auto",
) -> SplitCounts:
    """True positives and predictions of every (feature, step, concept) on these rows.

    ``tp = Lᵀ B`` (`_concept_counts`), ``block`` concepts at a time (default: sized so
    a block's dense counts stay ~8 MB), laid out as [F, K, C] int32; or with the numba
    kernels one concept at a time (`hsg.concepts.kernels`), the same numbers.
    """
    g = np.asarray(grid, dtype=np.float64)
    k = len(g)
    feature_max = np.ascontiguousarray(feature_max, dtype=np.float64)
    positives = np.asarray(labels.sum(axis=0)).ravel().astype(np.int64)
    if _use_numba(engine):
        csr = sp.csr_matrix(values)
        row_split = np.zeros(csr.shape[0], dtype=np.int8)  # every row in "split" 0
        keys, predicted, shift = _kernel_bins(csr, feature_max, g, row_split)
        ptr, starts, ends = _kernel_labels(labels, row_split, csr.indptr)
        tp = _kernels.all_counts(keys, ptr, starts, ends, 0, k, csr.shape[1], shift)
        tp = np.ascontiguousarray(tp.transpose(2, 1, 0))
        predicted = np.ascontiguousarray(predicted[0].T)
        return SplitCounts(tp, predicted, positives, int(values.shape[0]))
    csr = sp.csr_matrix(values)
    n_features, n_concepts = csr.shape[1], labels.shape[1]
    b, predicted = _bin_matrix(csr, feature_max, g)
    lab = _label_columns(labels)
    block = block or _concept_block(n_concepts, k, n_features)
    # counts fit int32 (at most the tokens of a split); half the memory of int64
    tp = np.zeros((n_features, k, n_concepts), dtype=np.int32)
    for lo in range(0, n_concepts, block):
        hi = min(lo + block, n_concepts)
        tp[:, :, lo:hi] = _concept_counts(b, lab, lo, hi, k).transpose(2, 1, 0)
    predicted = np.ascontiguousarray(predicted.T)
    return SplitCounts(tp, predicted, positives, int(values.shape[0]))


def scores(tp: np.ndarray, predicted: np.ndarray, positives: np.ndarray) -> tuple:
    """(precision, recall, f1), 0 where undefined; shapes broadcast as tp's.

    Counts satisfy tp ≤ predicted and tp ≤ positives, so where a denominator is 0 so is tp,
    and dividing by max(denominator, 1) already gives the 0."""
    precision = tp / np.maximum(predicted, 1)
    recall = tp / np.maximum(positives, 1)
    f1 = 2.0 * tp / np.maximum(predicted + positives, 1)
    return precision, recall, f1


def concept_f1(
    activations: TokenActivations,
    labels: ConceptLabels,
    config: ConceptConfig | None = None,
    progress: Callable[[str], None] | None = None,
    engine: str = "auto",
    threads: int = 1,
) -> ConceptResult:
    """Score every feature against every concept (see the module docstring).

    ``engine``: ``auto`` counts with the numba kernels when numba imports, else with
    numpy/scipy; ``numba`` / ``numpy`` force one. The results are identical. ``threads``:
    threads for the numba engine's two counting passes (concepts dealt out, each counted
    by one thread: the same results); 1, the default, runs serially."""
    config = config or ConceptConfig()
    use_numba = _use_numba(engine)
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
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
    grid = np.asarray(config.thresholds, dtype=np.float64)
    n_features = activations.values.shape[1]
    if use_numba:
        feature_max, step, select_f1, tp, precision, recall, f1, pos_test = _select_and_test_numba(
            activations.values, labels.matrix, parts, grid, progress, threads
        )
    else:
        sel_values = activations.values[parts["select"]]
        feature_max = _column_max(sp.csr_matrix(sel_values)).astype(np.float64)
        step, select_f1, tp, pred_test, pos_test = _select_and_test_numpy(
            sel_values, activations.values[parts["test"]], labels.matrix, parts, feature_max,
            grid, progress,
        )  # fmt: skip
        predicted = pred_test.T[np.arange(n_features)[:, None], step]
        precision, recall, f1 = scores(tp, predicted, pos_test[None, :])
    seq_rows = index.sequence_of_row()
    return ConceptResult(
        config=config,
        feature_ids=list(activations.feature_ids),
        concepts=list(labels.concepts),
        feature_max=feature_max,
        step=step,
        select_f1=select_f1,
        f1=f1,
        precision=precision,
        recall=recall,
        tp=tp,
        support=pos_test,
        tokens={k: len(v) for k, v in parts.items()},
        sequences={k: int(np.count_nonzero(np.bincount(seq_rows[v]))) for k, v in parts.items()},
    )


def _select_and_test_numba(
    values: sp.spmatrix,
    labels: sp.spmatrix,
    parts: dict[str, np.ndarray],
    grid: np.ndarray,
    progress: Callable[[str], None] | None,
    threads: int = 1,
) -> tuple:
    """(feature max [F] on select; step, select F1, test tp, precision, recall, F1 [F, C];
    test positives [C]) by the compiled kernels (`hsg.concepts.kernels`): each concept's
    select tokens counted in one cache-sized table, its test tokens at the chosen steps
    only, straight from the whole matrices and a per-row split code (no split is copied
    out)."""
    csr = sp.csr_matrix(values)
    n_features = csr.shape[1]
    row_split = np.full(csr.shape[0], -1, dtype=np.int8)
    row_split[parts["select"]] = 0
    row_split[parts["test"]] = 1
    if progress:
        progress(f"binning {csr.nnz} activations")
    data = csr.data if csr.data.dtype.kind in "fiu" else csr.data.astype(np.float64)
    feature_max = _kernels.column_max(
        csr.indptr, csr.indices, data, row_split, len(parts["select"]), n_features
    )
    keys, predicted, shift = _kernel_bins(csr, feature_max, grid, row_split)
    ptr, starts, ends = _kernel_labels(labels, row_split, csr.indptr)
    positives = np.ascontiguousarray(np.diff(ptr).reshape(-1, 2).T)  # [2, C] tokens per split
    n_concepts = len(ptr) // 2
    if progress:
        progress(f"select split: best step of {n_concepts} concepts")
    # [C, F] rows (each concept's results contiguous, written in order); the result holds
    # their transposes, [F, C] views in Fortran order, not copies
    step_cf = np.empty((n_concepts, n_features), dtype=np.int8 if len(grid) < 127 else np.int16)
    out = [
        np.empty((n_concepts, n_features), dtype=dtype)
        for dtype in (np.intp, np.float32, np.int32, np.float64, np.float64, np.float64)
    ]
    step, select_f1, tp, precision, recall, f1 = out
    pred = predicted[0]  # int32 where it fits: the F1 pass reads it for every concept
    pred = pred.astype(np.int32 if pred.max(initial=0) < 1 << 31 else np.float64)
    args = (keys, ptr, starts, ends, positives[0], pred, shift, step_cf, select_f1)
    if threads > 1:
        _kernels.select_best_parallel(*args, threads)
    else:
        _kernels.select_best(*args)
    if progress:
        progress("test split: counts at the chosen steps")
    args = (keys, ptr, starts, ends, shift, step_cf, predicted[1], positives[1], step, tp)
    if threads > 1:
        _kernels.test_scores_parallel(*args, precision, recall, f1, threads)
    else:
        _kernels.test_scores(*args, precision, recall, f1)
    out = [x.T for x in out]
    return (feature_max, *out, positives[1])


def _select_and_test_numpy(
    sel_values: sp.spmatrix,
    test_values: sp.spmatrix,
    labels: sp.spmatrix,
    parts: dict[str, np.ndarray],
    feature_max: np.ndarray,
    grid: np.ndarray,
    progress: Callable[[str], None] | None,
) -> tuple:
    """The same as `_select_and_test_numba` with numpy/scipy: blocks of concepts counted by
    sparse row gathers and one bincount (`_concept_counts`), F1 plane by plane."""
    k = len(grid)
    n_features, n_concepts = sel_values.shape[1], labels.shape[1]
    split = {}
    for name in ("select", "test"):
        if progress:
            progress(f"binning the {name} split ({len(parts[name])} tokens)")
        values = sel_values if name == "select" else test_values
        b, predicted = _bin_matrix(sp.csr_matrix(values), feature_max, grid)
        rows = labels[parts[name]]
        positives = np.asarray(rows.sum(axis=0)).ravel().astype(np.int64)
        split[name] = (b, _label_columns(rows), predicted, positives)
    b_sel, lab_sel, pred_sel, pos_sel = split["select"]
    b_test, lab_test, pred_test, pos_test = split["test"]
    # F1 = 2·tp / (predicted + positives) in float32, as [concepts, features] planes per
    # step; a concept without positives has tp = 0, so its denominator may be raised to 1
    # (0 where both are 0) without changing any F1. The first best step wins (argmax).
    pos32 = np.maximum(pos_sel, 1).astype(np.float32)
    pred32 = pred_sel.astype(np.float32)
    # float32 sums equal float32(int sums) while both stay below 2²⁴ (exact integers)
    exact32 = int(pos32.max(initial=0)) + int(pred_sel.max(initial=0)) < _EXACT_F32
    step = np.zeros((n_features, n_concepts), dtype=np.intp)
    select_f1 = np.zeros((n_features, n_concepts), dtype=np.float32)
    tp = np.zeros((n_features, n_concepts), dtype=np.int32)
    # select counts as float32 (what F1 divides) when every count is an exact float32
    sel_dtype = np.float32 if len(parts["select"]) < _EXACT_F32 else np.int64
    block = _concept_block(n_concepts, k, n_features)
    for lo in range(0, n_concepts, block):
        hi = min(lo + block, n_concepts)
        if progress:
            progress(f"concepts {lo + 1}-{hi} of {n_concepts}")
        counts = _concept_counts(b_sel, lab_sel, lo, hi, k, sel_dtype)  # [c, K, F]
        best = np.zeros((hi - lo, n_features), dtype=np.float32)
        arg = np.zeros((hi - lo, n_features), dtype=np.int8 if k < 127 else np.int16)
        f1_s = np.empty_like(best)
        better = np.empty(best.shape, dtype=bool)
        for s in range(k):  # preallocated planes: no temporaries, no mixed-type casts
            if exact32:
                np.add(pos32[lo:hi, None], pred32[s], out=f1_s)
            else:
                f1_s[...] = np.maximum(pos_sel[lo:hi, None], 1) + pred_sel[s]
            np.divide(counts[:, s, :], f1_s, out=f1_s, dtype=np.float32)
            np.greater(f1_s, best, out=better)
            np.maximum(best, f1_s, out=best)
            np.copyto(arg, s, where=better)
        best *= 2.0
        step[:, lo:hi] = arg.T
        select_f1[:, lo:hi] = best.T
        counts = _concept_counts(b_test, lab_test, lo, hi, k)
        picked = np.take_along_axis(counts, arg[:, None, :].astype(np.intp), axis=1)
        tp[:, lo:hi] = picked[:, 0, :].T
    return step, select_f1, tp, pred_test, pos_test


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
