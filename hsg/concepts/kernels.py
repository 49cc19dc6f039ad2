"""Compiled (numba) kernels of concept F1 counting; optional — `hsg.concepts.f1` falls back
to its numpy/scipy path when numba does not import. numba comes with memelite (the
``motifs`` extra); nothing else in hsg needs it.

Why a kernel: the work of one split is one increment per (label, activation of its token)
pair (~21 M on the benchmark data). numpy can only do that as gathers + one big bincount
over materialised keys, then float planes over [features, steps, concepts]. Here each
concept is counted at once into a dense [steps + 1, features] table that stays in the L2
cache: for every token of the concept (the label matrix by column), for each stored
activation of that token, ``table[steps cleared, feature] += 1``. A reverse cumulative sum
turns "clears exactly s steps" into "clears step s", the select split's F1 of every step
and its first best step are taken right there, and the table is reused for the next
concept. The test split is then counted only at the chosen step (an activation counts
when it clears more steps than the chosen one). No [features, steps, concepts] array of
either split is ever made, and neither split is copied out of the activations: every
kernel reads the whole matrix and a per-row split code (0 select, 1 test, -1 neither).

Exactness: the steps are ``activation > grid[k] × max`` in float64, as the numpy path
defines them; F1 is ``float32(tp) / float32(max(positives, 1) + predicted)`` (IEEE
division, correctly rounded in both paths), and ties keep the first step, so step, F1,
tp, precision and recall are array-equal to the numpy path's. Per-concept outputs are
written as [concepts, features] rows (a column-wise [features, concepts] write would evict
the table from the cache) and transposed once at the end. Serial (``parallel`` is off):
the machines this runs on are small and shared, and the baseline is serial too.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_AHEAD_ROWS = 16  # labels ahead whose token's row start is prefetched
_AHEAD_KEYS = 8  # labels ahead whose token's keys are prefetched (row start read by then)


@intrinsic
def _prefetch(typingctx, array, index):  # pragma: no cover - compiled
    """A cache prefetch of ``array[index]`` (LLVM's ``llvm.prefetch``: a hint, no fault,
    no effect on results)."""
    sig = types.void(array, index)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read, high locality, data cache
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def column_max(indptr, indices, data, row_split, n_select, n_features):  # pragma: no cover
    """Each feature's maximum over the select rows (split code 0), implicit zeros included
    (as ``values[select].max(axis=0)``; NaN wins, as numpy's maximum), in float64."""
    out = np.full(n_features, -np.inf)
    nan = np.zeros(n_features, dtype=np.bool_)
    stored = np.zeros(n_features, dtype=np.int64)
    for i in range(len(indptr) - 1):
        if row_split[i] != 0:
            continue
        for q in range(indptr[i], indptr[i + 1]):
            f = indices[q]
            v = np.float64(data[q])
            stored[f] += 1
            if v != v:
                nan[f] = True
            elif v > out[f]:
                out[f] = v
    for f in range(n_features):
        if nan[f]:
            out[f] = np.nan
        elif stored[f] < n_select and out[f] < 0.0:
            out[f] = 0.0
    return out


@njit(cache=True, nogil=True)
def bin_keys(
    indptr, indices, data, feature_max, grid, table, row_split, keys, predicted
):  # pragma: no cover - compiled
    """Fill ``keys`` (per stored entry ``s·F + f``: feature ``f``, and ``s`` how many grid
    steps ``activation > grid[k] × max`` holds for, in float64; 0 where the max is ≤ 0 or
    NaN, and for NaN activations) and ``predicted`` [2, K, F] (entries of each split
    clearing each step). ``keys`` must hold (K+2)·F.

    ``table`` is the bucket table of the numpy path (`hsg.concepts.f1._bucket_table`):
    the ratio activation / max, cut into m buckets (m = len(table) - 2; 0 holds negatives
    and NaN, m + 1 ratios ≥ 1), gives the step count where no grid value lies within a
    wide margin of the bucket, and -1 where one does. A first, branch-free pass reads the
    table for every entry (the ratio is formed in float64, far inside the margin) and
    marks the unsure ones with step K+1; a second pass compares those exactly and counts
    the predictions per split."""
    n_features = len(feature_max)
    k = len(grid)
    m = len(table) - 2
    width = (k + 1) * n_features
    scale = np.empty(n_features, dtype=np.float64)
    for f in range(n_features):  # NaN where max ≤ 0: bucket 0, then exact (→ 0)
        scale[f] = m / feature_max[f] if feature_max[f] > 0.0 else np.nan
    steps = np.empty(m + 2, dtype=np.int64)
    for b in range(m + 2):
        steps[b] = table[b] if table[b] >= 0 else k + 1
    for q in range(len(indices)):
        f = indices[q]
        y = np.float64(data[q]) * scale[f]
        y = y if y >= -1.0 else -1.0  # (NaN too)
        y = y if y <= m else np.float64(m)
        keys[q] = steps[np.int64(y + 1.0)] * n_features + f
    exact = np.zeros(2 * width, dtype=np.int32)
    for i in range(len(indptr) - 1):
        part = row_split[i]
        for q in range(indptr[i], indptr[i + 1]):
            key = np.int64(keys[q])
            if key >= width:
                f = key - width
                peak = feature_max[f]
                s = 0
                if peak > 0.0:
                    x = np.float64(data[q])
                    for g in range(k):
                        s += x > grid[g] * peak
                key = s * n_features + f
                keys[q] = key
            if part >= 0:
                exact[part * width + key] += 1
    for part in range(2):
        base = part * width
        for g in range(k - 1, 0, -1):
            lo = base + g * n_features
            for f in range(n_features):
                exact[lo + f] += exact[lo + n_features + f]
        for g in range(k):
            lo = base + (g + 1) * n_features
            for f in range(n_features):
                predicted[part, g, f] = exact[lo + f]


@njit(cache=True, nogil=True)
def split_positives(lab_indptr, lab_indices, row_split):  # pragma: no cover - compiled
    """[2, C]: labelled tokens of each concept in the select (0) and test (1) split."""
    n_concepts = len(lab_indptr) - 1
    out = np.zeros((2, n_concepts), dtype=np.int64)
    for c in range(n_concepts):
        for p in range(lab_indptr[c], lab_indptr[c + 1]):
            part = row_split[lab_indices[p]]
            if part >= 0:
                out[part, c] += 1
    return out


@njit(cache=True, nogil=True)
def _count_concept(
    c, part, act_indptr, keys, lab_indptr, lab_indices, row_split, table, n_features
):  # pragma: no cover - compiled
    """``table[s·F + f]``: tokens of concept ``c`` in split ``part`` where feature ``f``
    clears step s-1 or more (s = 0 unused after the cumulative sum). Each token's row is
    read as one short run of keys (2 bytes an entry where they fit): the rows are
    scattered, and waiting for them, not the increments, is what costs, so the rows of
    the labels a few steps ahead are prefetched (on the benchmark data: 0.13 → 0.08 s
    per split)."""
    table[:] = 0
    lo, hi = lab_indptr[c], lab_indptr[c + 1]
    for p in range(lo, hi):
        if p + _AHEAD_ROWS < hi:
            _prefetch(act_indptr, lab_indices[p + _AHEAD_ROWS])
        if p + _AHEAD_KEYS < hi:
            start = act_indptr[lab_indices[p + _AHEAD_KEYS]]
            _prefetch(keys, start)
            _prefetch(keys, start + 32)  # a row can straddle two cache lines
        i = lab_indices[p]
        if row_split[i] != part:
            continue
        for q in range(act_indptr[i], act_indptr[i + 1]):
            table[keys[q]] += 1
    k = len(table) // n_features - 1
    for s in range(k - 1, 0, -1):
        lo = s * n_features
        for f in range(n_features):
            table[lo + f] += table[lo + n_features + f]


@njit(cache=True, nogil=True)
def all_counts(
    act_indptr, keys, lab_indptr, lab_indices, row_split, part, k, n_features
):  # pragma: no cover - compiled
    """tp [C, K, F] int32 of split ``part``: every (concept, step, feature) count."""
    n_concepts = len(lab_indptr) - 1
    tp = np.zeros((n_concepts, k, n_features), dtype=np.int32)
    table = np.zeros((k + 1) * n_features, dtype=np.int32)
    for c in range(n_concepts):
        _count_concept(
            c, part, act_indptr, keys, lab_indptr, lab_indices, row_split, table, n_features
        )
        for s in range(k):
            for f in range(n_features):
                tp[c, s, f] = table[(s + 1) * n_features + f]
    return tp


@njit(cache=True, nogil=True)
def select_best(
    act_indptr, keys, lab_indptr, lab_indices, row_split, positives, predicted, step, best_f1
):  # pragma: no cover - compiled
    """On the select split (code 0): into ``step`` and ``best_f1`` [C, F], per pair the
    first step of best F1 and that F1 (float32 2·tp / (max(positives, 1) + predicted))."""
    k, n_features = predicted.shape
    n_concepts = len(lab_indptr) - 1
    table = np.zeros((k + 1) * n_features, dtype=np.int32)
    best = np.empty(n_features, dtype=np.float32)
    arg = np.empty(n_features, dtype=np.int32)  # (an int8 conditional store would not vectorise)
    for c in range(n_concepts):
        _count_concept(
            c, 0, act_indptr, keys, lab_indptr, lab_indices, row_split, table, n_features
        )
        pc = max(positives[c], 1)
        best[:] = 0.0
        arg[:] = 0
        for s in range(k):  # feature-inner: the compiler vectorises the compare-and-keep
            lo = (s + 1) * n_features
            for f in range(n_features):
                v = np.float32(table[lo + f]) / np.float32(pc + predicted[s, f])
                better = v > best[f]
                best[f] = v if better else best[f]
                arg[f] = s if better else arg[f]
        for f in range(n_features):
            step[c, f] = arg[f]
            best_f1[c, f] = best[f] * np.float32(2.0)


@njit(cache=True, nogil=True)
def test_at_step(
    act_indptr,
    keys,
    lab_indptr,
    lab_indices,
    row_split,
    step,
    predicted,
    positives,
    tp,
    precision,
    recall,
    f1,
):  # pragma: no cover - compiled
    """On the test split (code 1): into ``tp`` [C, F] the counts at each pair's chosen
    ``step`` [C, F] (the activations that clear more steps than that number), and the
    scores [C, F] as `hsg.concepts.f1.scores` computes them from ``predicted`` [K, F] and
    ``positives`` [C] (float64 divisions by max(denominator, 1)). Rows, not [F, C]
    columns: column writes evict the table (measured slower than a transpose after)."""
    n_concepts, n_features = step.shape
    k = predicted.shape[0]
    table = np.zeros((k + 1) * n_features, dtype=np.int32)
    for c in range(n_concepts):
        _count_concept(
            c, 1, act_indptr, keys, lab_indptr, lab_indices, row_split, table, n_features
        )
        pos = positives[c]
        pos1 = np.float64(max(pos, 1))
        for f in range(n_features):
            s = step[c, f]
            t = table[(s + 1) * n_features + f]
            pred = predicted[s, f]
            tp[c, f] = t
            precision[c, f] = np.float64(t) / np.float64(max(pred, 1))
            recall[c, f] = np.float64(t) / pos1
            f1[c, f] = (2.0 * t) / np.float64(max(pred + pos, 1))


@njit(cache=True, nogil=True)
def transpose_into(src, dst):  # pragma: no cover - compiled
    """``dst[:] = src.T`` (any numeric types), in cache-sized tiles."""
    rows, cols = src.shape
    tile = 64
    for r0 in range(0, rows, tile):
        r1 = min(r0 + tile, rows)
        for c0 in range(0, cols, tile):
            c1 = min(c0 + tile, cols)
            for c in range(c0, c1):  # contiguous writes; the tile's source lines stay in L1
                for r in range(r0, r1):
                    dst[c, r] = src[r, c]
