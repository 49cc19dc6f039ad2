"""Compiled (numba) kernels of concept F1 counting; optional — `hsg.concepts.f1` falls back
to its numpy/scipy path when numba does not import. numba comes with memelite (the
``motifs`` extra); nothing else in hsg needs it.

Why a kernel: the work of one split is one increment per (label, activation of its token)
pair (~21 M on the benchmark data). numpy can only do that as gathers + one big bincount
over materialised keys, then float planes over [features, steps, concepts]. Here:

* every stored activation gets a 2-byte key ``steps cleared << shift | feature``
  (`bin_keys`), and the label matrix is sorted by concept and split into the spans of its
  tokens' activation rows (`split_columns`), so a counting pass reads only its split's
  tokens and finds each row without a dependent load;
* select split (`select_best`): each concept is counted into one dense
  [steps + 2, features] table that stays in the L2 cache; one pass from the top step down
  (a chunk of features at a time) turns "clears exactly s steps" into "clears step s",
  forms every step's F1, keeps the first best step and zeroes the table for the next
  concept;
* test split (`test_scores`): with the step chosen, an activation counts when it clears
  more steps than that, so the count is one [features] counter per concept (L1-resident)
  and a compare per activation; the scores follow in one vectorised pass over the row.

Outputs are [concepts, features] rows, each written once, in order (`hsg.concepts.f1`
hands out their transposes as [features, concepts] views; writing [features, concepts]
directly, or transposing after, cost more than all the F1 arithmetic). No [features,
steps, concepts] array of either split is ever made, and no split is copied out of the
activations. ``error_model="numpy"``: with numba's default (Python) one every division
checks for zero, which keeps the compiler from vectorising the F1 and score loops (3×
slower); no denominator here can be zero.

Exactness: the steps are ``activation > grid[k] × max`` in float64, as the numpy path
defines them; F1 is ``float32(tp) / float32(max(positives, 1) + predicted)`` (IEEE
division, correctly rounded in both paths), and ties keep the first step, so step, F1,
tp, precision and recall are array-equal to the numpy path's. Serial by default (the
machines this runs on are small and shared, and the benchmark's loop is serial);
``threads`` > 1 deals the concepts of both counting passes out to threads
(`select_best_parallel`, `test_scores_parallel`): each concept is still computed by one
thread, in the same order, so the results are the same.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

_AHEAD = 8  # labels ahead whose token's keys are prefetched


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


@njit(cache=True, nogil=True, error_model="numpy")
def column_max(indptr, indices, data, row_split, n_select, n_features):  # pragma: no cover
    """Each feature's maximum over the select rows (split code 0), implicit zeros included
    (as ``values[select].max(axis=0)``; NaN wins, as numpy's maximum), in float64. The
    stored entries are counted (a second pass) only if some maximum is below 0, the one
    case where an implicit zero can be the maximum."""
    out = np.full(n_features, -np.inf)
    nan = np.zeros(n_features, dtype=np.bool_)
    for i in range(len(indptr) - 1):
        if row_split[i] != 0:
            continue
        for q in range(indptr[i], indptr[i + 1]):
            f = indices[q]
            v = np.float64(data[q])
            if v > out[f]:
                out[f] = v
            elif v != v:
                nan[f] = True
    below = False
    for f in range(n_features):
        below |= out[f] < 0.0 and not nan[f]
    if below:
        stored = np.zeros(n_features, dtype=np.int64)
        for i in range(len(indptr) - 1):
            if row_split[i] == 0:
                for q in range(indptr[i], indptr[i + 1]):
                    stored[indices[q]] += 1
        for f in range(n_features):
            if stored[f] < n_select and out[f] < 0.0:
                out[f] = 0.0
    for f in range(n_features):
        if nan[f]:
            out[f] = np.nan
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def bin_keys(
    indptr, indices, data, feature_max, grid, table, row_split, shift, keys, predicted
):  # pragma: no cover - compiled
    """Fill ``keys`` (per stored entry ``s << shift | f``: feature ``f`` < 2**shift, and
    ``s`` how many grid steps ``activation > grid[k] × max`` holds for, in float64; 0 where
    the max is ≤ 0 or NaN, and for NaN activations) and ``predicted`` [2, K, F] (entries of
    each split clearing each step). ``keys`` must hold (K+2) << shift.

    Why a power-of-two stride: the test pass needs both halves of a key back (the step to
    compare with the chosen one, the feature to count it for); a shift and a mask do that,
    a division by F would cost more than the count itself.

    ``table`` is the bucket table of the numpy path (`hsg.concepts.f1._bucket_table`):
    the ratio activation / max, cut into m buckets (m = len(table) - 2; 0 holds negatives
    and NaN, m + 1 ratios ≥ 1), gives the step count where no grid value lies within a
    wide margin of the bucket, and -1 where one does: a first pass reads the table for
    every entry (the ratio is formed in float64, far inside the margin) and compares only
    those exactly; a second counts the predictions per split."""
    n_features = len(feature_max)
    k = len(grid)
    m = len(table) - 2
    stride = np.int64(1) << shift
    width = (k + 1) * stride
    scale = np.empty(n_features, dtype=np.float64)
    for f in range(n_features):  # NaN where max ≤ 0: bucket 0, then exact (→ 0)
        scale[f] = m / feature_max[f] if feature_max[f] > 0.0 else np.nan
    steps = np.empty(m + 2, dtype=keys.dtype)  # (keys' type holds (K+2) << shift)
    for b in range(m + 2):
        steps[b] = (table[b] if table[b] >= 0 else k + 1) << shift
    for q in range(len(indices)):
        f = indices[q]
        y = np.float64(data[q]) * scale[f]
        y = y if y >= -1.0 else -1.0  # (NaN too)
        y = y if y <= m else np.float64(m)
        key = steps[np.int64(y + 1.0)] | f
        if key >= width:  # a grid value near: compare exactly (rare, so predictable)
            peak = feature_max[f]
            s = 0
            if peak > 0.0:
                x = np.float64(data[q])
                for g in range(k):
                    s += x > grid[g] * peak
            key = (s << shift) | f
        keys[q] = key
    exact = np.zeros(2 * width, dtype=np.int32)
    for i in range(len(indptr) - 1):
        part = row_split[i]
        if part < 0:
            continue
        base = part * width
        for q in range(indptr[i], indptr[i + 1]):
            exact[base + keys[q]] += 1
    for part in range(2):
        base = part * width
        for g in range(k - 1, 0, -1):
            lo = base + g * stride
            for f in range(n_features):
                exact[lo + f] += exact[lo + stride + f]
        for g in range(k):
            lo = base + (g + 1) * stride
            for f in range(n_features):
                predicted[part, g, f] = exact[lo + f]


@njit(cache=True, nogil=True, error_model="numpy")
def split_columns(indptr, indices, data, row_split, n_concepts, act_indptr):  # pragma: no cover
    """The label matrix (CSR [tokens, concepts]) by concept and split, true entries only, as
    the spans of its tokens' activation rows: ``starts[p]:ends[p]`` for p in
    ``ptr[2c]:ptr[2c+1]`` are concept c's select tokens (split code 0), then up to
    ``ptr[2c+2]`` its test tokens (code 1), each in row order. One counting sort instead of
    a CSC copy; the counting passes then read only their own split's tokens and find each
    row without a dependent load (label → row number → row start: two cache misses in a
    row), and the sizes are the positives of each split."""
    ptr = np.zeros(2 * n_concepts + 1, dtype=np.int64)
    for i in range(len(indptr) - 1):
        part = row_split[i]
        if part < 0:
            continue
        for q in range(indptr[i], indptr[i + 1]):
            if data[q]:
                ptr[2 * indices[q] + part + 1] += 1
    for j in range(2 * n_concepts):
        ptr[j + 1] += ptr[j]
    fill = ptr[:-1].copy()
    starts = np.empty(ptr[-1], dtype=act_indptr.dtype)  # int32 for up to 2³¹ activations
    ends = np.empty(ptr[-1], dtype=act_indptr.dtype)
    for i in range(len(indptr) - 1):
        part = row_split[i]
        if part < 0:
            continue
        lo, hi = act_indptr[i], act_indptr[i + 1]
        for q in range(indptr[i], indptr[i + 1]):
            if data[q]:
                j = 2 * indices[q] + part
                starts[fill[j]] = lo
                ends[fill[j]] = hi
                fill[j] += 1
    return ptr, starts, ends


@njit(cache=True, nogil=True, error_model="numpy")
def _count_tokens(keys, starts, ends, lo, hi, table):  # pragma: no cover - compiled
    """``table[key] += 1`` for every stored activation of the tokens ``lo:hi``.

    The rows are scattered, and waiting for them, not the increments, is what costs: the
    keys of the token ``_AHEAD`` labels ahead are prefetched (written out here and in
    `test_scores`: through an ``inline="always"`` helper the pass took 1.5× as long)."""
    for p in range(lo, hi):
        if p + _AHEAD < hi:
            ahead = starts[p + _AHEAD]
            _prefetch(keys, ahead)
            _prefetch(keys, ahead + 32)  # a row can straddle two cache lines
        for q in range(starts[p], ends[p]):
            table[keys[q]] += 1


@njit(cache=True, nogil=True, error_model="numpy")
def all_counts(keys, ptr, starts, ends, part, k, n_features, shift):  # pragma: no cover
    """tp [C, K, F] int32 of split ``part`` (0 or 1 of `split_columns`): every (concept,
    step, feature) count, the tokens of the concept where the feature clears the step."""
    n_concepts = (len(ptr) - 1) // 2
    stride = 1 << shift
    tp = np.zeros((n_concepts, k, n_features), dtype=np.int32)
    table = np.zeros((k + 2) * stride, dtype=np.int32)
    for c in range(n_concepts):
        table[:] = 0
        _count_tokens(keys, starts, ends, ptr[2 * c + part], ptr[2 * c + part + 1], table)
        for s in range(k - 1, -1, -1):  # "clears exactly s + 1" → "clears step s"
            for f in range(n_features):
                acc = table[(s + 1) * stride + f] + (tp[c, s + 1, f] if s + 1 < k else 0)
                tp[c, s, f] = acc
    return tp


_CHUNK = 256  # features per pass over the steps: its counters stay in the L1 cache


@njit(cache=True, nogil=True, error_model="numpy")
def _select_concept(
    c, keys, ptr, starts, ends, positives, predicted, shift, table, acc, best, arg, step, best_f1
):  # pragma: no cover - compiled
    """`select_best` of concept ``c``, in the caller's work arrays (the table zero)."""
    k, n_features = predicted.shape
    stride = 1 << shift
    _count_tokens(keys, starts, ends, ptr[2 * c], ptr[2 * c + 1], table)
    pc = np.float64(max(positives[c], 1))
    for f0 in range(0, n_features, _CHUNK):
        n = min(_CHUNK, n_features - f0)
        acc_ = acc[:n]
        best_ = best[:n]
        arg_ = arg[:n]
        acc_[:] = 0
        best_[:] = 0.0
        arg_[:] = 0
        for s in range(k - 1, -1, -1):  # feature-inner: the compiler vectorises it
            lo = (s + 1) * stride + f0
            row = table[lo : lo + n]
            den = predicted[s, f0 : f0 + n]
            for j in range(n):
                a = acc_[j] + row[j]
                acc_[j] = a
                row[j] = 0
                v = np.float32(a) / np.float32(pc + den[j])
                better = v >= best_[j]
                best_[j] = v if better else best_[j]
                arg_[j] = s if better else arg_[j]
        for j in range(n):
            step[c, f0 + j] = arg_[j]
            best_f1[c, f0 + j] = best_[j] * np.float32(2.0)
    table[:n_features] = 0  # entries that clear no step


@njit(cache=True, nogil=True, error_model="numpy")
def select_best(
    keys, ptr, starts, ends, positives, predicted, shift, step, best_f1, first=0, every=1
):  # pragma: no cover - compiled
    """On the select split: into ``step`` and ``best_f1`` [C, F], per pair the first step of
    best F1 and that F1 (float32 2·tp / (max(positives, 1) + predicted)); ``predicted``
    [K, F] (its sums with a positives count, in float64, are exact integers, and float32
    of them is float32 of the integer sum, as in the numpy path). Concepts ``first``,
    ``first + every``, … (a thread's share; all by default).

    Each concept is counted into one [K+2, 2**shift] table ("clears exactly s steps") that
    stays in the L2 cache; one pass from the top step down then accumulates "clears step
    s or more", forms the F1 of every step, keeps the best (``>=`` going down keeps the
    first best going up, as argmax) and zeroes the table for the next concept — one read
    and one write of each table entry, vectorised over features, ``_CHUNK`` features at a
    time so that their running counts, best F1 and step stay in the L1 cache (whole rows:
    3.5× slower). ``predicted`` may be int32 (half the bytes read per concept)."""
    k = predicted.shape[0]
    table = np.zeros((k + 2) << shift, dtype=np.int32)
    acc = np.empty(_CHUNK, dtype=np.int32)
    best = np.empty(_CHUNK, dtype=np.float32)
    arg = np.empty(_CHUNK, dtype=np.int32)  # (an int8 conditional store would not vectorise)
    for c in range(first, len(positives), every):
        _select_concept(
            c, keys, ptr, starts, ends, positives, predicted, shift, table, acc, best, arg,
            step, best_f1,
        )  # fmt: skip


@njit(cache=True, parallel=True, error_model="numpy")
def select_best_parallel(
    keys, ptr, starts, ends, positives, predicted, shift, step, best_f1, n_threads
):  # pragma: no cover - compiled
    """`select_best` with the concepts dealt out to ``n_threads`` threads (each with its own
    table; every pair is computed by one thread exactly as serially, so results are equal)."""
    for t in prange(n_threads):
        select_best(keys, ptr, starts, ends, positives, predicted, shift, step, best_f1, t,
                    n_threads)  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def test_scores(
    keys,
    ptr,
    starts,
    ends,
    shift,
    step_cf,
    predicted,
    positives,
    step,
    tp,
    precision,
    recall,
    f1,
    first=0,
    every=1,
):  # pragma: no cover - compiled
    """On the test split: into the [C, F] outputs, every pair's count at its chosen step
    (``step_cf`` [C, F]: the test tokens of the concept where the feature's activation
    clears more steps than the chosen number), the step (``step_cf`` widened) and the
    scores, as `hsg.concepts.f1.scores` computes them from ``predicted`` [K, F] and
    ``positives`` [C] (float64 divisions by max(denominator, 1)). Concepts ``first``,
    ``first + every``, …

    Knowing the chosen steps, the count needs no histogram over steps: one [F] counter
    (L1-resident) and a compare per activation; the scores are then one vectorised pass
    over the concept's row."""
    n_concepts, n_features = step_cf.shape
    mask = (np.int64(1) << shift) - 1
    count = np.zeros(n_features, dtype=np.int32)
    for c in range(first, n_concepts, every):
        chosen = step_cf[c]
        lo, hi = ptr[2 * c + 1], ptr[2 * c + 2]
        for p in range(lo, hi):
            if p + _AHEAD < hi:
                ahead = starts[p + _AHEAD]
                _prefetch(keys, ahead)
                _prefetch(keys, ahead + 32)
            for q in range(starts[p], ends[p]):
                key = np.int64(keys[q])
                f = key & mask
                count[f] += (key >> shift) > chosen[f]
        pos = positives[c]
        pos1 = np.float64(max(pos, 1))
        step_c, tp_c, precision_c, recall_c, f1_c = step[c], tp[c], precision[c], recall[c], f1[c]
        for f in range(n_features):
            s = chosen[f]
            t = count[f]
            count[f] = 0
            pred = predicted[s, f]
            step_c[f] = s
            tp_c[f] = t
            precision_c[f] = np.float64(t) / np.float64(max(pred, 1))
            recall_c[f] = np.float64(t) / pos1
            f1_c[f] = (2.0 * t) / np.float64(max(pred + pos, 1))


@njit(cache=True, parallel=True, error_model="numpy")
def test_scores_parallel(
    keys, ptr, starts, ends, shift, step_cf, predicted, positives, step, tp, precision, recall,
    f1, n_threads,
):  # pragma: no cover - compiled  # fmt: skip
    """`test_scores` with the concepts dealt out to ``n_threads`` threads."""
    for t in prange(n_threads):
        test_scores(keys, ptr, starts, ends, shift, step_cf, predicted, positives, step, tp,
                    precision, recall, f1, t, n_threads)  # fmt: skip
