"""Pearson and lagged, normalised cross-correlation of every feature with every track.

The inputs are token-aligned matrices: ``x`` [n_tokens, n_features] (SAE latents) and ``y``
[n_tokens, n_tracks] (track coverage). Every score of every (feature, track) pair comes out
of matrix products of ``x`` with ``y`` (one wide product per batch covers all 2L + 1 lags,
see `CorrelationAccumulator`); there is no loop over features or tracks anywhere, only short
ones over the lags to index the pairs.

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

# Above this fraction of non-zero (token, track) cells the track product is dense. A sparse
# product costs ~9x more per multiply-add than a dense one on a CPU (1.6 vs 14.6 GMAC/s,
# benchmarks/bench_correlate.py), so the crossover is near 10 %; 5 % leaves a margin.
SPARSE_TRACKS = 0.05


class CoMoments:
    """Running count, means, centred sums of squares and cross-products of two matrices.

    With ``groups`` every statistic gets a leading dimension: one independent set of
    moments per group (the lags of `CorrelationAccumulator`), all merged by the same
    tensor operations instead of one small merge per group. The cross-products are kept
    as ``c_yx`` [..., n_y, n_x], the layout the track products come out in.
    """

    def __init__(
        self,
        n_x: int,
        n_y: int,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        groups: int | None = None,
    ) -> None:
        kw = {"dtype": dtype, "device": device}
        lead = () if groups is None else (groups,)
        self.n = torch.zeros(lead, **kw)
        self.mean_x = torch.zeros(*lead, n_x, **kw)
        self.mean_y = torch.zeros(*lead, n_y, **kw)
        self.m2_x = torch.zeros(*lead, n_x, **kw)
        self.m2_y = torch.zeros(*lead, n_y, **kw)
        self.c_yx = torch.zeros(*lead, n_y, n_x, **kw)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add the rows of ``x`` [n, n_x] and ``y`` [n, n_y] (paired row by row)."""
        n_b = x.shape[0]
        if n_b != y.shape[0]:
            raise ValueError(f"{n_b} rows of x but {y.shape[0]} rows of y")
        if n_b == 0:
            return
        x = x.to(self.c_yx)
        y = y.to(self.c_yx)
        mx_b = x.mean(0)
        my_b = y.mean(0)
        xc = x - mx_b
        yc = y - my_b
        # the one matrix product: every feature against every track
        self.merge(n_b, mx_b, my_b, xc.square().sum(0), yc.square().sum(0), yc.T @ xc)

    def merge(
        self,
        n_b: int | torch.Tensor,
        mx_b: torch.Tensor,
        my_b: torch.Tensor,
        m2x_b: torch.Tensor,
        m2y_b: torch.Tensor,
        c_b: torch.Tensor,
    ) -> None:
        """Fold in the centred moments of another group of rows (module docstring).

        A group with ``n_b == 0`` leaves its moments as they were, whatever its means say.
        """
        n_b = torch.as_tensor(n_b, dtype=self.n.dtype, device=self.n.device)
        n = self.n + n_b
        safe = n.clamp(min=1.0)
        w = (self.n * n_b / safe)[..., None]
        frac = (n_b / safe)[..., None]
        dx = mx_b - self.mean_x
        dy = my_b - self.mean_y
        self.c_yx += c_b
        wdy = (dy * w)[..., :, None]
        if self.c_yx.dim() == 2:
            self.c_yx.addmm_(wdy, dx[None, :])
        else:
            self.c_yx.baddbmm_(wdy, dx[..., None, :])
        self.m2_x += m2x_b + dx.square() * w
        self.m2_y += m2y_b + dy.square() * w
        self.mean_x += dx * frac
        self.mean_y += dy * frac
        self.n = n

    def correlation(self) -> torch.Tensor:
        """Pearson r [..., n_x, n_y]; NaN where either column is constant or no rows seen."""
        n = self.n[..., None]
        live_x = (self.m2_x > _CONSTANT_RTOL * (self.m2_x + n * self.mean_x.square())) & (n > 0)
        live_y = (self.m2_y > _CONSTANT_RTOL * (self.m2_y + n * self.mean_y.square())) & (n > 0)
        sx = torch.where(live_x, self.m2_x, torch.nan).sqrt()
        sy = torch.where(live_y, self.m2_y, torch.nan).sqrt()
        r = self.c_yx / (sy[..., :, None] * sx[..., None, :])
        return r.clamp_(-1.0, 1.0).transpose(-1, -2)


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

    Every lag of a batch comes out of two products. With ``xs = x - s`` (a fixed
    per-feature shift ``s``, the first batch's mean, which keeps the sums of squares free of
    cancellation) and ``m_τ`` the indicator of rows that have a partner at lag τ,

        [m_τ for every τ]ᵀ [xs | xs²]      gives Σ xs and Σ xs² per lag,
        [y_τ for every τ]ᵀ xs              gives Σ xs·y_τ per lag (`_cross`),

    where ``y_τ`` holds each row's partner track row. ``x`` is never centred, copied or
    gathered per lag, only written once into a reused buffer. The track product is sparse
    when coverage is (the usual case), dense otherwise; both give the same numbers.

    ``dtype`` is the arithmetic of a batch: float64 (the default) agrees with a float64
    reference to ~1e-14, float32 to ~1e-6 at about half the time. Either way the running
    moments are float64, so the batch dtype's error does not grow with the number of
    batches. Memory is (2L + 1) × n_features × n_tracks float64 numbers plus one
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
        self.moments = CoMoments(
            n_features, n_tracks, torch.float64, self.device, groups=len(self.lags)
        )
        self._shift: torch.Tensor | None = None
        self._buffer: torch.Tensor | None = None

    @property
    def n_tokens(self) -> int:
        return int(self.moments.n[0])

    def _scratch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Fresh multi-megabyte tensors per batch cost more in page faults than the
        # arithmetic on them; two buffers grown on demand are reused instead.
        # Side by side in one buffer, so one product sums both over every lag's rows.
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
        n_lags = len(self.lags)
        if n_lags == 1:
            pos = seg_len = None
        else:
            pos, seg_len = segment_positions(lengths, self.device)
        masks = torch.zeros(n, n_lags, dtype=self.dtype, device=self.device)
        n_t = torch.zeros(n_lags, dtype=torch.float64, device=self.device)
        my = torch.zeros(n_lags, self.n_tracks, dtype=torch.float64, device=self.device)
        m2y = torch.zeros_like(my)
        for slot, lag in enumerate(self.lags):
            if pos is None:
                i = j = torch.arange(n, device=self.device)
            else:
                i, j = lag_pairs(pos, seg_len, lag)
            if len(i) == 0:
                continue
            yj = y64[j]
            n_t[slot] = len(i)
            my[slot] = yj.mean(0)
            m2y[slot] = (yj - my[slot]).square().sum(0)
            masks[i, slot] = 1.0
        sums_sq = masks.T @ both  # [lags, 2F]: Σ xs and Σ xs² over each lag's rows
        sums = sums_sq[:, : self.n_features]
        cross = self._cross(xs, y, pos, seg_len, my.to(self.dtype), sums)  # [lags, K, F]
        sums_sq = sums_sq.double()
        sums, sq = sums_sq[:, : self.n_features], sums_sq[:, self.n_features :]
        per_row = n_t.clamp(min=1.0)[:, None]
        self.moments.merge(
            n_t,
            self._shift + sums / per_row,
            my,
            sq - sums.square() / per_row,
            m2y,
            cross,  # added into the float64 sums as it is
        )

    def _cross(self, xs, y, pos, seg_len, means, sums) -> torch.Tensor:
        """Σ xs[t] · (y[t + τ] - ȳ_τ) over each lag's pairs, [lags, K, F].

        ``ȳ_τ`` is a constant per lag, so the centred product is the raw one minus
        ``ȳ_τ ⊗ Σ xs``; that difference does not cancel because ``xs`` is already shifted
        onto the feature means. The raw product only needs the tokens a track covers, and
        coverage is sparse in practice (few regions touch any one element type), so below
        `SPARSE_TRACKS` density it is a sparse product costing (non-zeros × features)
        instead of (tokens × tracks × lags × features).
        """
        n, k = y.shape
        lags = self.lags
        rows, cols = torch.nonzero(y, as_tuple=True)
        if len(rows) > SPARSE_TRACKS * n * k:
            partners = torch.zeros(n, len(lags) * k, dtype=self.dtype, device=self.device)
            for slot, lag in enumerate(lags):
                if pos is None:
                    partners[:, :k] = y
                else:
                    i, j = lag_pairs(pos, seg_len, lag)
                    partners[i, slot * k : (slot + 1) * k] = y[j]
            raw = (partners.T @ xs).view(len(lags), k, -1)
        else:
            vals = y[rows, cols]
            entry_rows, entry_cols, entry_vals = [], [], []
            for slot, lag in enumerate(lags):
                if pos is None:
                    keep = slice(None)
                else:  # y[j] pairs with x[j - τ] when that token is in j's segment
                    back = pos[rows] - lag
                    keep = (back >= 0) & (back < seg_len[rows])
                entry_rows.append(cols[keep] + slot * k)
                entry_cols.append(rows[keep] - lag)
                entry_vals.append(vals[keep])
            index = torch.stack([torch.cat(entry_rows), torch.cat(entry_cols)])
            shape = (len(lags) * k, n)
            # in bounds by construction (a partner stays in its segment): no check needed
            values = torch.cat(entry_vals)
            sparse = torch.sparse_coo_tensor(index, values, shape, check_invariants=False)
            raw = torch.sparse.mm(sparse, xs).view(len(lags), k, -1)
        return raw.baddbmm_(means[:, :, None], sums[:, None, :], alpha=-1.0)

    def pearson(self) -> torch.Tensor:
        return self.per_lag()[0]

    def per_lag(self) -> torch.Tensor:
        """[2L + 1, n_features, n_tracks] correlations, in `lags` order."""
        return self.moments.correlation().contiguous()

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
