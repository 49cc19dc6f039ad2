"""Pearson and lagged, normalised cross-correlation of every feature with every track.

The inputs are token-aligned matrices: ``x`` [n_tokens, n_features] (SAE latents) and ``y``
[n_tokens, n_tracks] (track coverage). Every score of every (feature, track) pair comes out
of matrix products of ``x`` with the centred ``y`` (one wide product per batch covers all
2L + 1 lags, see `CorrelationAccumulator`); there is no loop over features or tracks
anywhere, only short ones over the lags to index and fold the results.

Tokens arrive in batches (a genome-scale set of regions does not fit in memory as a
[tokens, features] matrix), so the statistics are kept as running *centred* co-moments and
merged batch by batch with the pairwise update of Chan, Golub and LeVeque:

    n   = n_a + n_b,    δx = x̄_b - x̄_a,   δy = ȳ_b - ȳ_a
    Cxy = Cxy_a + Cxy_b + δx δyᵀ · n_a n_b / n        (same for the variances)

Summing raw ``Σxy`` and subtracting ``n x̄ ȳ`` at the end would cancel catastrophically for
features whose mean is large next to their spread; the centred update does not.

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


class CoMoments:
    """Running count, means, centred sums of squares and cross-products of two matrices."""

    def __init__(
        self,
        n_x: int,
        n_y: int,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        kw = {"dtype": dtype, "device": device}
        self.n = 0
        self.mean_x = torch.zeros(n_x, **kw)
        self.mean_y = torch.zeros(n_y, **kw)
        self.m2_x = torch.zeros(n_x, **kw)
        self.m2_y = torch.zeros(n_y, **kw)
        self.c_xy = torch.zeros(n_x, n_y, **kw)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add the rows of ``x`` [n, n_x] and ``y`` [n, n_y] (paired row by row)."""
        n_b = x.shape[0]
        if n_b != y.shape[0]:
            raise ValueError(f"{n_b} rows of x but {y.shape[0]} rows of y")
        if n_b == 0:
            return
        x = x.to(self.c_xy)
        y = y.to(self.c_xy)
        mx_b = x.mean(0)
        my_b = y.mean(0)
        xc = x - mx_b
        yc = y - my_b
        # the one matrix product: every feature against every track
        self.merge(n_b, mx_b, my_b, xc.square().sum(0), yc.square().sum(0), xc.T @ yc)

    def merge(
        self,
        n_b: int,
        mx_b: torch.Tensor,
        my_b: torch.Tensor,
        m2x_b: torch.Tensor,
        m2y_b: torch.Tensor,
        c_b: torch.Tensor,
    ) -> None:
        """Fold in the centred moments of another group of rows (module docstring)."""
        if n_b == 0:
            return
        n_a = self.n
        n = n_a + n_b
        w = n_a * n_b / n
        dx = mx_b - self.mean_x
        dy = my_b - self.mean_y
        self.c_xy += c_b
        self.c_xy.addr_(dx, dy, alpha=w)
        self.m2_x += m2x_b + dx.square() * w
        self.m2_y += m2y_b + dy.square() * w
        self.mean_x += dx * (n_b / n)
        self.mean_y += dy * (n_b / n)
        self.n = n

    def correlation(self) -> torch.Tensor:
        """Pearson r [n_x, n_y]; NaN where either column is constant (or no rows seen)."""
        if self.n == 0:
            return torch.full_like(self.c_xy, float("nan"))
        live_x = self.m2_x > _CONSTANT_RTOL * (self.m2_x + self.n * self.mean_x.square())
        live_y = self.m2_y > _CONSTANT_RTOL * (self.m2_y + self.n * self.mean_y.square())
        sx = torch.where(live_x, self.m2_x, torch.nan).sqrt()
        sy = torch.where(live_y, self.m2_y, torch.nan).sqrt()
        return (self.c_xy / torch.outer(sx, sy)).clamp_(-1.0, 1.0)


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

    All lags of a batch come out of one wide product. With ``xs = x - s`` (a fixed
    per-feature shift ``s``, the first batch's mean, which keeps the sums of squares free of
    cancellation), ``m_τ`` the indicator of rows that have a partner at lag τ and ``ŷ_τ``
    those partners' track rows centred on their own mean (zero elsewhere),

        [ŷ_τ for every τ | m_τ for every τ]ᵀ xs   gives Σ xs·ŷ_τ and Σ xs per lag,
        [m_τ for every τ]ᵀ xs²                    gives Σ xs² per lag.

    As ``ŷ_τ`` sums to zero over its pairs, ``Σ xs·ŷ_τ`` already is the centred
    cross-product: ``x`` is never centred, copied or gathered per lag, only written once
    into a reused float64 buffer. Memory is (2L + 1) × n_features × n_tracks numbers of
    ``dtype`` plus two batch-sized buffers, whatever the number of tokens.
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
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.moments = [CoMoments(n_features, n_tracks, dtype, self.device) for _ in self.lags]
        self._shift: torch.Tensor | None = None
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def n_tokens(self) -> int:
        return self.moments[0].n

    def _scratch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Fresh multi-megabyte tensors per batch cost more in page faults than the
        # arithmetic on them; two buffers grown on demand are reused instead.
        if self._buffers is None or self._buffers[0].shape[0] < n:
            shape = (n, self.n_features)
            kw = {"dtype": self.dtype, "device": self.device}
            self._buffers = (torch.empty(shape, **kw), torch.empty(shape, **kw))
        return self._buffers[0][:n], self._buffers[1][:n]

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
        x = x.to(self.device)
        y = y.to(device=self.device, dtype=self.dtype)
        if self._shift is None:
            self._shift = x.to(self.dtype).mean(0)
        xs, xs2 = self._scratch(n)
        xs.copy_(x)  # convert, then shift in place: a mixed-dtype sub(out=) is ~5x slower
        xs.sub_(self._shift)
        torch.mul(xs, xs, out=xs2)
        k, n_lags = self.n_tracks, len(self.lags)
        if n_lags == 1:
            pos = seg_len = None
        else:
            pos, seg_len = segment_positions(lengths, self.device)
        partners = torch.zeros(n, n_lags * k + n_lags, dtype=self.dtype, device=self.device)
        stats_y = []
        for slot, lag in enumerate(self.lags):
            if pos is None:
                i = j = torch.arange(n, device=self.device)
            else:
                i, j = lag_pairs(pos, seg_len, lag)
            if len(i) == 0:
                stats_y.append(None)
                continue
            yj = y[j]
            my = yj.mean(0)
            yc = yj - my
            partners[i, slot * k : (slot + 1) * k] = yc
            partners[i, n_lags * k + slot] = 1.0
            stats_y.append((len(i), my, yc.square().sum(0)))
        wide = partners.T @ xs  # [lags*K + lags, F]: the one product per batch
        sq = partners[:, n_lags * k :].T @ xs2  # [lags, F]
        for slot, st in enumerate(stats_y):
            if st is None:
                continue
            n_t, my, m2y = st
            sx = wide[n_lags * k + slot]
            self.moments[slot].merge(
                n_t,
                self._shift + sx / n_t,
                my,
                sq[slot] - sx.square() / n_t,
                m2y,
                wide[slot * k : (slot + 1) * k].T,
            )

    def pearson(self) -> torch.Tensor:
        return self.moments[0].correlation()

    def per_lag(self) -> torch.Tensor:
        """[2L + 1, n_features, n_tracks] correlations, in `lags` order."""
        return torch.stack([m.correlation() for m in self.moments])

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
    acc = CoMoments(x.shape[1], y.shape[1], device=x.device)
    acc.update(x, y)
    return acc.correlation()


def ncc(
    x: torch.Tensor, y: torch.Tensor, lengths: Sequence[int], max_lag: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-over-lags centred, normalised cross-correlation and its lag (module docstring)."""
    acc = CorrelationAccumulator(x.shape[1], y.shape[1], max_lag, device=x.device)
    acc.update(x, y, lengths)
    return acc.ncc()
