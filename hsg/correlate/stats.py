"""Pearson and lagged, normalised cross-correlation of every feature with every track.

The inputs are token-aligned matrices: ``x`` [n_tokens, n_features] (SAE latents) and ``y``
[n_tokens, n_tracks] (track coverage). Every score of every (feature, track) pair comes out
of matrix products of ``x`` with ``y`` (one wide product per batch covers all 2L + 1 lags,
see `CorrelationAccumulator`); there is no loop over features or tracks anywhere, only short
ones over the lags to index the pairs.

Tokens arrive in batches (a genome-scale set of regions does not fit in memory as a
[tokens, features] matrix), so only sums are kept, in float64: per lag τ the pair count, and
over that lag's pairs Σ xs, Σ xs², Σ y, Σ y² and Σ xs·y, where ``xs = x - s`` with ``s`` a
per-feature shift: the first batch's mean, moved to the running mean after batches 2, 4,
8, … (`CorrelationAccumulator._reshift`). At the end

    C = Σ xs·y − Σ xs Σ y / n,    m2_x = Σ xs² − (Σ xs)² / n,    m2_y likewise,

the "shifted data" algorithm. Raw sums (s = 0) would cancel catastrophically for a feature
whose mean is large next to its spread: the relative error of m2_x is about
ε · (1 + (x̄ − s)² / var x), and the shift keeps that ratio small: one batch's mean is
usually close to the whole run's, and the re-shift covers features that switch on later.
Tracks need no shift: coverage lies in [0, 1] and a track that is nearly constant is not
scored (below). Keeping sums instead of centred moments means a batch only adds into the
totals: nothing is re-centred per batch, which at the CLI's batch size cost as much as the
products.

Definitions (``r`` is Pearson's correlation coefficient):

* ``pearson[f, k]`` = r(x[:, f], y[:, k]) over all tokens.
* ``ncc_τ[f, k]`` = r over the pairs (x[t, f], y[t + τ, k]) for which t and t + τ lie in the
  same segment (a region, or a window of one): the *centred and normalised*
  cross-correlation at lag τ. Each lag is centred and normalised on its own pairs, so
  ``ncc_0 == pearson`` and every ``ncc_τ`` lies in [-1, 1]. A positive lag means the track
  signal sits τ tokens further along the region (in the region's own reading direction)
  than the feature activity: if ``y[t] = x[t - s]`` then ``ncc_s = 1``.
* ``ncc[f, k]`` = max over τ in [-L, L] of ``ncc_τ[f, k]`` (signed: a feature that is *off*
  on the element is not a detector of it), ``lag[f, k]`` its argmax; ties go to the
  smallest |τ|, so a lag is reported only when it beats lag 0.

A column that is constant over the tokens (a dead feature, a track that covers nothing or
everything) has no correlation: its scores are NaN, never 0 or ±1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# A column counts as constant when its centred sum of squares is below this fraction of its
# raw sum of squares: far above float64 rounding for millions of tokens, far below any
# real signal.
_CONSTANT_RTOL = 1e-9

# Above this fraction of non-zero (token, track) cells the track product is dense. A sparse
# product costs ~9x more per multiply-add than a dense one on a CPU (1.6 vs 14.6 GMAC/s,
# benchmarks/bench_correlate.py), so the crossover is near 10 %; 5 % leaves a margin.
SPARSE_TRACKS = 0.05

# Batches smaller than this many (token, feature) cells are gathered before they are added:
# 2M float32 cells (8 MB) keep a batch's buffer cache-sized while amortising the fixed cost.
BATCH_ELEMENTS = 2**21


def lag_order(max_lag: int) -> list[int]:
    """Lags by increasing distance from 0 (0, -1, 1, -2, 2, …): argmax ties pick small |τ|."""
    if max_lag < 0:
        raise ValueError(f"max_lag must be >= 0, got {max_lag}")
    order = [0]
    for t in range(1, max_lag + 1):
        order += [-t, t]
    return order


def segment_positions(lengths: Sequence[int], device: torch.device | str | None = None):
    """(position within its segment, that segment's length) for every row of a batch."""
    lens = torch.as_tensor(list(lengths), dtype=torch.long, device=device)
    if (lens < 0).any():
        raise ValueError("segment lengths must be >= 0")
    seg_len = torch.repeat_interleave(lens, lens)
    starts = torch.cumsum(lens, 0) - lens
    pos = torch.arange(int(lens.sum()), device=device) - torch.repeat_interleave(starts, lens)
    return pos, seg_len


def lag_pairs(
    pos: torch.Tensor, seg_len: torch.Tensor, lag: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (i, i + lag) of the pairs at ``lag`` that stay inside one segment."""
    target = pos + lag
    i = torch.nonzero((target >= 0) & (target < seg_len), as_tuple=True)[0]
    return i, i + lag


class CorrelationAccumulator:
    """Streams token batches and yields Pearson and max-over-lags NCC for all pairs.

    With ``xs = x - s`` (module docstring), a batch costs one pass for the sums and one
    product for the cross terms:

    * Σ xs and Σ xs² per lag: whether a row has a partner at lag τ depends only on how many
      tokens of its segment lie before and after it, capped at L. Rows are summed per such
      class (``index_add``, one pass over [xs | xs²]), and each lag adds up the classes
      valid for it: a [lags, (L + 1)²] × [(L + 1)², 2F] product.
    * Σ xs·y per lag: ``[y_τ for every τ]ᵀ xs`` (`_cross`), ``y_τ`` holding each row's
      partner track row.

    ``x`` is never centred, copied or gathered per lag, only written once into a reused
    buffer. The track product is sparse
    when coverage is (the usual case), dense otherwise; both give the same numbers.

    ``dtype`` is the arithmetic of a batch: float64 (the default) agrees with a float64
    reference to ~1e-14, float32 to ~1e-6 at about half the time. Either way the totals
    are float64, so the batch dtype's error does not grow with the number of batches.
    Memory is (2L + 1) × n_features × n_tracks float64 numbers plus one
    [batch, 2 × n_features] buffer, whatever the number of tokens.
    """

    def __init__(
        self,
        n_features: int,
        n_tracks: int,
        max_lag: int = 0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        self.lags = lag_order(max_lag)
        self.max_lag = max_lag
        self.n_features = n_features
        self.n_tracks = n_tracks
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        n_lags = len(self.lags)
        kw = {"dtype": torch.float64, "device": self.device}
        self.n = torch.zeros(n_lags, **kw)
        self.sx = torch.zeros(n_lags, n_features, **kw)  # Σ xs
        self.sxx = torch.zeros(n_lags, n_features, **kw)  # Σ xs²
        self.sy = torch.zeros(n_lags, n_tracks, **kw)  # Σ y
        self.syy = torch.zeros(n_lags, n_tracks, **kw)  # Σ y²
        self.sxy = torch.zeros(n_lags, n_tracks, n_features, **kw)  # Σ y·xs, [lags, K, F]
        self._shift: torch.Tensor | None = None
        self._batches = 0
        self._pending: list[tuple[torch.Tensor, torch.Tensor, list[int]]] = []
        self._pending_rows = 0
        self._buffer: torch.Tensor | None = None
        self._f64 = kw
        self._n_classes = (max_lag + 1) ** 2
        self._valid_x, self._valid_y = (v.to(self.device) for v in self._class_validity())

    @property
    def n_tokens(self) -> int:
        self.flush()
        return int(self.n[0])

    def _scratch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Fresh multi-megabyte tensors per batch cost more in page faults than the
        # arithmetic on them, so one buffer grown on demand is reused; xs and xs² sit side
        # by side in it, so one product sums both over every lag's rows.
        if self._buffer is None or self._buffer.shape[0] < n:
            shape = (n, 2 * self.n_features)
            self._buffer = torch.empty(shape, dtype=self.dtype, device=self.device)
        both = self._buffer[:n]
        return both, both[:, : self.n_features], both[:, self.n_features :]

    def update(self, x: torch.Tensor, y: torch.Tensor, lengths: Sequence[int]) -> None:
        """Add a batch: rows of ``x``/``y`` are tokens, ``lengths`` the tokens per segment."""
        n = x.shape[0]
        if n != y.shape[0] or n != sum(lengths):
            raise ValueError(f"x has {n} rows, y {y.shape[0]}, segments {sum(lengths)} tokens")
        if x.shape[1] != self.n_features or y.shape[1] != self.n_tracks:
            raise ValueError(
                f"expected {self.n_features} features and {self.n_tracks} tracks, "
                f"got {x.shape[1]} and {y.shape[1]}"
            )
        if n == 0:
            return
        if n * self.n_features >= BATCH_ELEMENTS and not self._pending:
            self._add(x, y, lengths)
            return
        # Small batches (a narrow SAE, short regions) are gathered first: below ~1 ms of
        # work per batch the fixed cost of ~30 tensor operations dominates. Copies, so a
        # caller may reuse its tensors.
        self._pending.append((x.to(self.device, copy=True), y.clone(), list(lengths)))
        self._pending_rows += n
        if self._pending_rows * self.n_features >= BATCH_ELEMENTS:
            self.flush()

    def flush(self) -> None:
        """Add the gathered small batches (done by every result accessor)."""
        if not self._pending:
            return
        xs, ys, lengths = zip(*self._pending, strict=True)
        self._pending, self._pending_rows = [], 0
        self._add(torch.cat(xs), torch.cat(ys), [n for part in lengths for n in part])

    def _add(self, x: torch.Tensor, y: torch.Tensor, lengths: Sequence[int]) -> None:
        n = x.shape[0]
        x = x.to(self.device)
        y64 = y.to(device=self.device, dtype=torch.float64)
        y = y64.to(self.dtype)
        if self._shift is None:  # float64, and exactly representable in the batch dtype
            self._shift = x.to(torch.float64).mean(0).to(self.dtype).to(torch.float64)
        both, xs, xs2 = self._scratch(n)
        if x.dtype == self.dtype:
            torch.sub(x, self._shift.to(self.dtype), out=xs)
        else:  # convert, then shift in place: a mixed-dtype sub(out=) is ~5x slower
            xs.copy_(x)
            xs.sub_(self._shift.to(self.dtype))
        torch.mul(xs, xs, out=xs2)
        pos, seg_len = segment_positions(lengths, self.device)
        edge = self._edge_class(pos, seg_len)  # all 0 when L = 0
        # Σ over each lag's rows = Σ over the edge classes valid at that lag: one pass of
        # index_add over the rows (a [lags, n] × [n, 2F] product costs ~4x more)
        per_class = torch.zeros(
            self._n_classes, 2 * self.n_features, dtype=self.dtype, device=self.device
        ).index_add_(0, edge, both)
        sums = (self._valid_x.to(self.dtype) @ per_class).double()  # [lags, 2F]
        self.sx += sums[:, : self.n_features]
        self.sxx += sums[:, self.n_features :]
        y_rows = torch.cat([torch.ones(n, 1, **self._f64), y64, y64.square()], 1)
        y_class = torch.zeros(self._n_classes, y_rows.shape[1], **self._f64)
        y_sums = self._valid_y @ y_class.index_add_(0, edge, y_rows)  # [lags, 1 + 2K]
        self.n += y_sums[:, 0]
        self.sy += y_sums[:, 1 : 1 + self.n_tracks]
        self.syy += y_sums[:, 1 + self.n_tracks :]
        self.sxy += self._cross(xs, y, pos, seg_len).double()
        self._batches += 1
        if self._batches & (self._batches - 1) == 0:  # after batches 1 (a no-op), 2, 4, …
            self._reshift()

    def _reshift(self) -> None:
        """Move the shift to the running mean, rewriting the sums to match (exactly, in
        float64). The first batch's mean can be far from the run's for a feature that only
        switches on later; the batch sums in float32 would then carry ~1e-7 of a large
        Σ xs². Re-shifting at doubling batch counts keeps ``xs`` centred for the cost of
        log2(batches) passes over the [lags, K, F] sums."""
        if self._shift is None or self.n[0] == 0:
            return
        target = (self._shift + self.sx[0] / self.n[0]).to(self.dtype).to(torch.float64)
        d = target - self._shift
        n = self.n[:, None]
        self.sxx += d * (n * d - 2.0 * self.sx)
        self.sx -= n * d
        self.sxy -= self.sy[:, :, None] * d[None, None, :]
        self._shift = target

    def _edge_class(self, pos: torch.Tensor, seg_len: torch.Tensor) -> torch.Tensor:
        """Class of each row: (tokens before it, tokens after it), both capped at L."""
        cap = self.max_lag
        before = pos.clamp(max=cap)
        after = (seg_len - 1 - pos).clamp(max=cap)
        return before * (cap + 1) + after

    def _class_validity(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[lags, classes] 0/1: does a row of the class have a partner at τ (x side), is it
        one's partner (y side)? Row t pairs with t + τ, so τ > 0 needs τ tokens after t and
        τ < 0 needs |τ| before; its partner needs the mirror image."""
        cap = self.max_lag
        classes = torch.arange((cap + 1) ** 2)
        before, after = classes // (cap + 1), classes % (cap + 1)
        lags = torch.as_tensor(self.lags)[:, None]
        valid_x = torch.where(lags >= 0, after >= lags, before >= -lags)
        valid_y = torch.where(lags >= 0, before >= lags, after >= -lags)
        return valid_x.double(), valid_y.double()

    def _cross(self, xs, y, pos, seg_len) -> torch.Tensor:
        """Σ xs[t] · y[t + τ] over each lag's pairs, [lags, K, F].

        Only the tokens a track covers contribute, and coverage is sparse in practice (few
        regions touch any one element type), so below `SPARSE_TRACKS` density this is a
        sparse product costing (non-zeros × features) instead of (tokens × tracks × lags ×
        features).
        """
        n, k = y.shape
        lags = self.lags
        rows, cols = torch.nonzero(y, as_tuple=True)
        if len(rows) > SPARSE_TRACKS * n * k:
            partners = torch.zeros(n, len(lags) * k, dtype=self.dtype, device=self.device)
            for slot, lag in enumerate(lags):
                i, j = lag_pairs(pos, seg_len, lag)
                partners[i, slot * k : (slot + 1) * k] = y[j]
            return (partners.T @ xs).view(len(lags), k, -1)
        vals = y[rows, cols]
        entry_rows, entry_cols, entry_vals = [], [], []
        for slot, lag in enumerate(lags):  # y[j] pairs with x[j - τ] in j's segment
            back = pos[rows] - lag
            keep = (back >= 0) & (back < seg_len[rows])
            entry_rows.append(cols[keep] + slot * k)
            entry_cols.append(rows[keep] - lag)
            entry_vals.append(vals[keep])
        index = torch.stack([torch.cat(entry_rows), torch.cat(entry_cols)])
        shape = (len(lags) * k, n)
        # in bounds by construction (a partner stays in its segment): no check needed
        sparse = torch.sparse_coo_tensor(
            index, torch.cat(entry_vals), shape, check_invariants=False
        )
        return torch.sparse.mm(sparse, xs).view(len(lags), k, -1)

    def pearson(self) -> torch.Tensor:
        return self.per_lag()[0]

    def per_lag(self) -> torch.Tensor:
        """[2L + 1, n_features, n_tracks] correlations, in `lags` order.

        NaN where either column is constant over that lag's pairs, or no pair was seen.
        """
        self.flush()
        n = self.n[:, None]
        safe = n.clamp(min=1.0)
        m2_x = self.sxx - self.sx.square() / safe
        m2_y = self.syy - self.sy.square() / safe
        mean_x = self._shift + self.sx / safe if self._shift is not None else self.sx
        mean_y = self.sy / safe
        live_x = (m2_x > _CONSTANT_RTOL * (m2_x + n * mean_x.square())) & (n > 0)
        live_y = (m2_y > _CONSTANT_RTOL * (m2_y + n * mean_y.square())) & (n > 0)
        sx = torch.where(live_x, m2_x, torch.nan).sqrt()
        sy = torch.where(live_y, m2_y, torch.nan).sqrt()
        c = self.sxy - self.sy[:, :, None] * self.sx[:, None, :] / safe[:, :, None]
        r = c / (sy[:, :, None] * sx[:, None, :])
        return r.clamp_(-1.0, 1.0).transpose(1, 2).contiguous()

    def ncc(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(best NCC over lags, its lag) [n_features, n_tracks]; NaN/0 where undefined."""
        filled = torch.nan_to_num(self.per_lag(), nan=-torch.inf)
        best, where = filled.max(0)
        lags = torch.as_tensor(self.lags, device=where.device)[where]
        undefined = torch.isneginf(best)
        best = torch.where(undefined, torch.nan, best)
        return best, torch.where(undefined, 0, lags)


def pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson r of every column of ``x`` with every column of ``y`` in one product."""
    acc = CorrelationAccumulator(x.shape[1], y.shape[1], device=x.device)
    acc.update(x, y, [x.shape[0]])
    return acc.pearson()


def ncc(
    x: torch.Tensor, y: torch.Tensor, lengths: Sequence[int], max_lag: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-over-lags centred, normalised cross-correlation and its lag (module docstring)."""
    acc = CorrelationAccumulator(x.shape[1], y.shape[1], max_lag, device=x.device)
    acc.update(x, y, lengths)
    return acc.ncc()
