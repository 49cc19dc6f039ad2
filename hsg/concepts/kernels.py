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
either split is ever made.

Exactness: the steps are ``activation > grid[k] × max`` in float64, as the numpy path
defines them; F1 is ``float32(tp) / float32(max(positives, 1) + predicted)`` (IEEE
division, correctly rounded in both paths), and ties keep the first step, so step, F1,
tp, precision and recall are array-equal to the numpy path's. Serial (``parallel`` is
off): the machines this runs on are small and shared, and one pass is already memory-cheap.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def steps_cleared(indices, data, feature_max, grid):  # pragma: no cover - compiled
    """Per stored entry, how many grid steps ``activation > grid[k] × max`` (float64) holds
    for; 0 where the feature's max is ≤ 0 (or NaN) and for NaN activations."""
    n = len(indices)
    k = len(grid)
    out = np.zeros(n, dtype=np.int16)
    for j in range(n):
        peak = feature_max[indices[j]]
        if not peak > 0.0:
            continue
        x = np.float64(data[j])
        s = 0
        for g in range(k):
            if x > grid[g] * peak:
                s += 1
        out[j] = s
    return out


@njit(cache=True, nogil=True)
def predicted_counts(indices, steps, n_features, k):  # pragma: no cover - compiled
    """[K, F]: stored activations of each feature that clear each step."""
    out = np.zeros((k + 1, n_features), dtype=np.int64)
    for j in range(len(indices)):
        out[steps[j], indices[j]] += 1
    for s in range(k - 1, 0, -1):
        for f in range(n_features):
            out[s, f] += out[s + 1, f]
    return out[1:].copy()


@njit(cache=True, nogil=True)
def _count_concept(
    c, act_indptr, act_indices, steps, lab_indptr, lab_indices, table
):  # pragma: no cover - compiled
    """``table[s, f]``: tokens of concept ``c`` where feature ``f`` clears step s-1 or more
    (row 0 unused after the cumulative sum)."""
    table[:, :] = 0
    for p in range(lab_indptr[c], lab_indptr[c + 1]):
        i = lab_indices[p]
        for q in range(act_indptr[i], act_indptr[i + 1]):
            table[steps[q], act_indices[q]] += 1
    k = table.shape[0] - 1
    n_features = table.shape[1]
    for s in range(k - 1, 0, -1):
        for f in range(n_features):
            table[s, f] += table[s + 1, f]


@njit(cache=True, nogil=True)
def all_counts(
    act_indptr, act_indices, steps, lab_indptr, lab_indices, n_features, k
):  # pragma: no cover - compiled
    """tp [F, K, C] int32 of one split: every (feature, step, concept) count."""
    n_concepts = len(lab_indptr) - 1
    tp = np.zeros((n_features, k, n_concepts), dtype=np.int32)
    table = np.zeros((k + 1, n_features), dtype=np.int64)
    for c in range(n_concepts):
        _count_concept(c, act_indptr, act_indices, steps, lab_indptr, lab_indices, table)
        for f in range(n_features):
            for s in range(k):
                tp[f, s, c] = table[s + 1, f]
    return tp


@njit(cache=True, nogil=True)
def select_best(
    act_indptr, act_indices, steps, lab_indptr, lab_indices, positives, predicted
):  # pragma: no cover - compiled
    """On the select split: per (concept, feature) the first step of best F1 and that F1,
    as [C, F] (int8 steps, float32 F1 = 2·tp / (max(positives, 1) + predicted))."""
    k, n_features = predicted.shape
    n_concepts = len(lab_indptr) - 1
    step = np.zeros((n_concepts, n_features), dtype=np.int16)
    best_f1 = np.zeros((n_concepts, n_features), dtype=np.float32)
    table = np.zeros((k + 1, n_features), dtype=np.int64)
    two = np.float32(2.0)
    for c in range(n_concepts):
        _count_concept(c, act_indptr, act_indices, steps, lab_indptr, lab_indices, table)
        pc = max(positives[c], 1)
        for f in range(n_features):
            best = np.float32(0.0)
            arg = 0
            for s in range(k):
                v = np.float32(table[s + 1, f]) / np.float32(pc + predicted[s, f])
                if v > best:
                    best = v
                    arg = s
            step[c, f] = arg
            best_f1[c, f] = best * two
    return step, best_f1


@njit(cache=True, nogil=True)
def test_at_step(
    act_indptr, act_indices, steps, lab_indptr, lab_indices, step
):  # pragma: no cover - compiled
    """On the test split: tp [C, F] at each pair's chosen step (an activation counts when
    it clears more steps than the chosen step's number)."""
    n_concepts, n_features = step.shape
    tp = np.zeros((n_concepts, n_features), dtype=np.int32)
    for c in range(n_concepts):
        for p in range(lab_indptr[c], lab_indptr[c + 1]):
            i = lab_indices[p]
            for q in range(act_indptr[i], act_indptr[i + 1]):
                f = act_indices[q]
                if steps[q] > step[c, f]:
                    tp[c, f] += 1
    return tp
