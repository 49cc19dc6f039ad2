"""Concept F1: equal to a brute-force count on a small case, planted feature → F1 ≈ 1, and
the threshold is chosen on the select split only."""

from __future__ import annotations

import numpy as np
import pytest

from hsg.concepts.data import (
    Concept,
    activations_from_rows,
    concept_labels,
    split_rows,
    token_index,
)
from hsg.concepts.f1 import ConceptConfig, concept_f1, split_counts, split_counts_loop

rng = np.random.default_rng(7)


def _random_case(n_seq=40, length=40, n_features=6, n_concepts=3, density=0.3, ties=False):
    ids = [f"s{i}" for i in range(n_seq)]
    seqs = ["".join(rng.choice(list("ACGT"), length)) for _ in ids]
    index = token_index(ids, seqs)
    rows = []
    for s in range(n_seq):
        n_tok = int(index.row_start[s + 1] - index.row_start[s])
        for p in range(n_tok):
            for f in range(n_features):
                if rng.random() < density:
                    value = 0.3 * int(rng.integers(1, 5)) if ties else float(rng.gamma(2.0))
                    rows.append((s, p, f, value))
    concepts = [Concept(f"c{j}", f"concept{j}", "test") for j in range(n_concepts)]
    intervals = {}
    for s in range(n_seq):
        items = []
        for c in concepts:
            if rng.random() < 0.5:
                a = int(rng.integers(0, length - 5))
                items.append((c, a, a + int(rng.integers(1, 12))))
        intervals[s] = items
    acts = activations_from_rows(index, rows, [f"f{i}" for i in range(n_features)])
    return acts, concept_labels(index, intervals), intervals


def _brute(acts, intervals, concepts, config):
    """Dense, token by token, straight from the definitions; nothing shared with f1.py."""
    index = acts.index
    dense = acts.values.toarray()
    truth = np.zeros((index.n_tokens, len(concepts)), dtype=bool)
    for s, items in intervals.items():
        for c, a, b in items:
            j = [x.annotation_id for x in concepts].index(c.annotation_id)
            for r in range(index.row_start[s], index.row_start[s + 1]):
                t0, t1 = index.spans[r]
                if t0 < b and t1 > a:
                    truth[r, j] = True
    parts = split_rows(index, config.select_fraction, config.seed)
    sel, test = parts["select"], parts["test"]
    out = {}
    for f in range(dense.shape[1]):
        m = dense[sel, f].max()
        for j in range(len(concepts)):
            best, best_k = -1.0, 0
            for k, g in enumerate(config.thresholds):
                pred = dense[sel, f] > g * m
                tp = int((pred & truth[sel, j]).sum())
                denom = int(pred.sum()) + int(truth[sel, j].sum())
                f1 = 2 * tp / denom if denom else 0.0
                if f1 > best:
                    best, best_k = f1, k
            pred = dense[test, f] > config.thresholds[best_k] * m
            tp = int((pred & truth[test, j]).sum())
            p = tp / pred.sum() if pred.sum() else 0.0
            r = tp / truth[test, j].sum() if truth[test, j].sum() else 0.0
            f1 = 2 * p * r / (p + r) if p + r else 0.0
            out[f, j] = (best, best_k, p, r, f1)
    return out


@pytest.mark.parametrize("ties", [False, True])
def test_f1_equals_brute_force(ties):
    # with ties, activations sit exactly on thresholds (0.3·k vs 0.25/0.5/0.75 of max 1.2)
    acts, labels, intervals = _random_case(ties=ties)
    config = ConceptConfig(thresholds=(0.0, 0.25, 0.5, 0.75), feature_block=4)
    result = concept_f1(acts, labels, config)
    brute = _brute(acts, intervals, labels.concepts, config)
    for (f, j), (sel_f1, k, p, r, f1) in brute.items():
        assert result.select_f1[f, j] == pytest.approx(sel_f1)
        assert result.step[f, j] == k
        assert result.precision[f, j] == pytest.approx(p)
        assert result.recall[f, j] == pytest.approx(r)
        assert result.f1[f, j] == pytest.approx(f1)


def test_integer_path_for_huge_splits_gives_the_same_result(monkeypatch):
    """Above 2²⁴ tokens counts are not exact in float32: the integer path (forced here by
    lowering the limit) must give the very same choices and scores."""
    import hsg.concepts.f1 as f1

    acts, labels, _ = _random_case(ties=True)
    config = ConceptConfig(thresholds=(0.0, 0.25, 0.5, 0.75))
    fast = concept_f1(acts, labels, config)
    monkeypatch.setattr(f1, "_EXACT_F32", 0)
    slow = concept_f1(acts, labels, config)
    for name in ("step", "select_f1", "f1", "precision", "recall", "tp"):
        assert np.array_equal(getattr(fast, name), getattr(slow, name)), name


def test_loop_baseline_counts_the_same():
    acts, labels, _ = _random_case(n_seq=12)
    grid = (0.0, 0.3, 0.6)
    fmax = np.asarray(acts.values.max(axis=0).toarray()).ravel().astype(float)
    a = split_counts(acts.values, labels.matrix, fmax, grid, block=4)
    b = split_counts_loop(acts.values, labels.matrix, fmax, grid)
    assert np.array_equal(a.tp, b.tp)
    assert np.array_equal(a.predicted, b.predicted)


def test_threshold_is_never_chosen_on_the_test_split():
    acts, labels, _ = _random_case()
    config = ConceptConfig()
    before = concept_f1(acts, labels, config)
    test_rows = split_rows(acts.index, config.select_fraction, config.seed)["test"]
    scrambled = acts.values.tolil()
    for r in test_rows:  # change every test activation: choices must not move
        scrambled[r, :] = scrambled[r, :] * 0 + rng.random(acts.n_features) * 10
    acts.values = scrambled.tocsr()
    after = concept_f1(acts, labels, config)
    assert np.array_equal(before.step, after.step)
    assert np.array_equal(before.select_f1, after.select_f1)
    assert np.array_equal(before.feature_max, after.feature_max)
    assert not np.allclose(before.f1, after.f1)


def test_planted_feature_is_the_top_f1_of_its_concept():
    motif = "GGGCGGGGC"
    ids, seqs, intervals = [], [], {}
    concept = Concept("jaspar:planted", "planted", "jaspar_motif")
    for i in range(120):
        s = list("".join(rng.choice(list("ACGT"), 96)))
        items = []
        if i % 2 == 0:
            a = int(rng.integers(0, 80))
            s[a : a + len(motif)] = motif
            items.append((concept, a, a + len(motif)))
        ids.append(f"r{i}")
        seqs.append("".join(s))
        intervals[i] = items
    index = token_index(ids, seqs)
    labels = concept_labels(index, intervals)
    rows = []
    for i in range(len(ids)):
        for r in range(index.row_start[i], index.row_start[i + 1]):
            pos = r - index.row_start[i]
            if labels.matrix[r, 0]:
                rows.append((i, pos, 0, 2.0 + rng.random()))  # the planted feature
            for f in range(1, 8):
                if rng.random() < 0.2:
                    rows.append((i, pos, f, float(rng.gamma(2.0))))
    acts = activations_from_rows(index, rows, [f"f{i}" for i in range(8)])
    result = concept_f1(acts, labels)
    best = result.best_per_concept(top=1).iloc[0]
    assert best["feature"] == "f0"
    assert best["f1"] == pytest.approx(1.0)


def test_config_round_trips_and_rejects_bad_grids():
    config = ConceptConfig(thresholds=(0.0, 0.5), select_fraction=0.3, seed=3)
    assert ConceptConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError):
        ConceptConfig(thresholds=(0.5, 0.1))
    with pytest.raises(ValueError):
        ConceptConfig(thresholds=(1.0,))


@pytest.mark.parametrize(
    "grid", [(0.0, 0.25, 0.5, 0.75), (0.0, 0.1, 0.2, 0.3, 0.7, 0.9), (-0.5, 0.0, 1.0, 1.5)]
)
def test_steps_cleared_equal_exact_comparisons(grid):
    """The bucketed step count equals `activation > g × max` in float64 on ties, on values
    next to every bucket edge and grid value, above the max, negative, and for features
    whose max is ≤ 0."""
    import scipy.sparse as sp

    from hsg.concepts.f1 import _BUCKETS, _steps_cleared

    g = np.asarray(grid)
    peaks = np.array([1.2, 3.0, 1e-30, 7.5, 0.0, -2.0])
    fractions = np.concatenate(
        [np.arange(_BUCKETS + 1) / _BUCKETS, g, rng.random(500) * 1.3 - 0.1, [0.0, 1.0]]
    )
    values = (fractions[:, None] * peaks[None, :]).astype(np.float32)
    near = np.concatenate(  # one float32 step either side of every value
        [values, np.nextafter(values, np.float32(np.inf)), np.nextafter(values, -np.inf)]
    )
    near[:, 0] = np.tile(np.float32(0.3) * np.arange(1, 5, dtype=np.float32), len(near))[
        : len(near)
    ]  # ties: 0.3·k against 0.25/0.5/0.75 × 1.2
    matrix = sp.csr_matrix(near)
    peak = peaks[matrix.indices].astype(np.float32).astype(np.float64)
    x = matrix.data.astype(np.float64)
    expect = sum((x > t * peak).astype(int) for t in g)
    expect[peak <= 0] = 0
    got = _steps_cleared(matrix, peaks.astype(np.float32).astype(np.float64), g)
    assert np.array_equal(got, expect)
    import hsg.concepts.f1 as f1

    if f1._kernels is not None:  # the compiled guess-and-correct steps, on the same values
        row_split = np.zeros(matrix.shape[0], dtype=np.int8)
        keys, _, shift = f1._kernel_bins(
            matrix, peaks.astype(np.float32).astype(np.float64), g, row_split
        )
        assert np.array_equal(keys >> shift, expect)


needs_numba = pytest.mark.skipif(
    __import__("hsg.concepts.f1", fromlist=["_kernels"])._kernels is None,
    reason="numba not installed (the `motifs` extra)",
)


@needs_numba
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize(
    "grid", [(0.0, 0.25, 0.5, 0.75), (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)]
)
def test_numba_and_numpy_engines_are_identical(ties, grid):
    """The compiled kernels choose the same steps and give bit-equal scores and counts."""
    acts, labels, _ = _random_case(n_seq=60, n_features=9, n_concepts=5, ties=ties)
    config = ConceptConfig(thresholds=grid)
    a = concept_f1(acts, labels, config, engine="numpy")
    b = concept_f1(acts, labels, config, engine="numba")
    for name in ("feature_max", "step", "select_f1", "f1", "precision", "recall", "tp"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert np.array_equal(a.support, b.support)
    assert a.tokens == b.tokens and a.sequences == b.sequences


@needs_numba
def test_engines_identical_over_blocks_and_empty_columns():
    """More concepts than a kernel block, a feature count that is not a power of two, a
    feature that never fires, and concepts with no tokens, or tokens in one split only."""
    import scipy.sparse as sp

    acts, labels, _ = _random_case(n_seq=50, n_features=37, n_concepts=19, density=0.15)
    values = acts.values.tolil()
    values[:, 5] = 0
    acts.values = values.tocsr()
    acts.values.eliminate_zeros()
    parts = split_rows(acts.index, 0.5, 0)
    n = acts.index.n_tokens
    extra = np.zeros((n, 3), dtype=bool)
    extra[parts["test"][:7], 1] = True  # no select token: select F1 0, step 0
    extra[parts["select"][:7], 2] = True  # no test token: support 0
    labels.matrix = sp.hstack([labels.matrix, sp.csr_matrix(extra)]).tocsr()
    labels.concepts += [Concept(f"x{j}", f"extra{j}", "test") for j in range(3)]
    config = ConceptConfig()
    a = concept_f1(acts, labels, config, engine="numpy")
    for threads in (1, 2, 3):  # concepts dealt out to threads: the same results
        b = concept_f1(acts, labels, config, engine="numba", threads=threads)
        for name in ("feature_max", "step", "select_f1", "f1", "precision", "recall", "tp"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and np.array_equal(x, y), (name, threads)
        assert np.array_equal(a.support, b.support)
    assert a.support[-1] == 0 and a.support[-2] == 7
    assert (a.select_f1[:, -3:-1] == 0).all() and (a.step[:, -3:-1] == 0).all()


@needs_numba
def test_numba_split_counts_equal_numpy_and_loop():
    acts, labels, _ = _random_case(n_seq=15, ties=True)
    grid = (0.0, 0.25, 0.5, 0.75)
    fmax = np.asarray(acts.values.max(axis=0).toarray()).ravel().astype(float)
    fmax[1] = 0.0  # a feature that never counts
    a = split_counts(acts.values, labels.matrix, fmax, grid, engine="numba")
    b = split_counts(acts.values, labels.matrix, fmax, grid, engine="numpy")
    c = split_counts_loop(acts.values, labels.matrix, fmax, grid)
    for x in (b, c):
        assert np.array_equal(a.tp, x.tp)
        assert np.array_equal(a.predicted, x.predicted)
        assert np.array_equal(a.positives, x.positives)


@needs_numba
def test_numba_steps_equal_the_bucketed_numpy_steps():
    import scipy.sparse as sp

    from hsg.concepts.f1 import _kernel_bins, _steps_cleared

    g = np.array([-0.5, 0.0, 0.25, 0.5, 0.75, 1.0])
    peaks = np.array([1.2, 3.0, 1e-30, 0.0, -2.0, np.nan])
    values = (rng.random((400, 1)) * 1.3 - 0.1) * np.nan_to_num(peaks)[None, :]
    values[:5, 0] = np.float32(0.3) * np.arange(1, 6)  # ties with 0.25/0.5/0.75 × 1.2
    values[5, 1] = np.nan
    matrix = sp.csr_matrix(values.astype(np.float32))
    peak = peaks[matrix.indices]
    row_split = np.tile(np.array([0, 1, -1], dtype=np.int8), 134)[: matrix.shape[0]]
    for grid in (g,):
        keys, predicted, shift = _kernel_bins(matrix, peaks, grid, row_split)
        steps, features = np.divmod(keys.astype(np.int64), 1 << shift)
        assert np.array_equal(features, matrix.indices)
        exact = sum((matrix.data.astype(np.float64) > t * peak).astype(int) for t in grid)
        exact[~(peak > 0)] = 0
        assert np.array_equal(steps, exact)
        assert np.array_equal(steps, _steps_cleared(matrix, peaks, grid))
        entry_split = np.repeat(row_split, np.diff(matrix.indptr))
        for part in (0, 1):
            for s in range(len(grid)):
                chosen = (entry_split == part) & (steps > s)
                expect = np.bincount(matrix.indices[chosen], minlength=len(peaks))
                assert np.array_equal(predicted[part, s], expect)


@needs_numba
def test_numba_column_max_equals_numpy():
    import scipy.sparse as sp

    from hsg.concepts import kernels
    from hsg.concepts.f1 import _column_max

    dense = rng.random((50, 6)).astype(np.float32) - 0.7
    dense[dense < -0.3] = 0  # implicit zeros in some columns
    dense[:, 1] = -rng.random(50) - 0.1  # all negative, stored everywhere
    dense[3, 2] = np.nan
    matrix = sp.csr_matrix(dense)
    row_split = (rng.random(50) < 0.5).astype(np.int8)
    select = np.flatnonzero(row_split == 0)
    got = kernels.column_max(matrix.indptr, matrix.indices, matrix.data, row_split, len(select), 6)
    with np.errstate(invalid="ignore"):  # the NaN planted above, on purpose
        expect = _column_max(sp.csr_matrix(matrix[select])).astype(np.float64)
    assert np.array_equal(got, expect, equal_nan=True)


def test_unknown_or_unavailable_engine_is_refused(monkeypatch):
    import hsg.concepts.f1 as f1

    acts, labels, _ = _random_case(n_seq=10)
    with pytest.raises(ValueError, match="engine"):
        concept_f1(acts, labels, engine="cuda")
    with pytest.raises(ValueError, match="threads"):
        concept_f1(acts, labels, threads=0)
    monkeypatch.setattr(f1, "_kernels", None)
    with pytest.raises(RuntimeError, match="numba"):
        concept_f1(acts, labels, engine="numba")
    concept_f1(acts, labels)  # auto falls back to numpy


def test_split_rows_equals_split_of_per_sequence():
    """The joined-digest split is the per-sequence `split_of` one, on random ids."""
    from hsg.concepts.data import split_of

    alphabet = list("abcXYZ019_:-é")
    ids = ["".join(rng.choice(alphabet, int(rng.integers(1, 20)))) for _ in range(400)]
    ids = list(dict.fromkeys(ids))
    index = token_index(ids, ["ACGTACGTAC"] * len(ids))
    rows = index.sequence_of_row()
    for fraction, seed in [(0.5, 0), (0.3, 7), (0.9, 123)]:
        parts = split_rows(index, fraction, seed)
        chosen = np.array([split_of(s, fraction, seed) == "select" for s in ids])
        assert np.array_equal(parts["select"], np.flatnonzero(chosen[rows]))
        assert np.array_equal(parts["test"], np.flatnonzero(~chosen[rows]))
