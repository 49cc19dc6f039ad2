"""Feature × track correlation throughput: matrix products versus a per-feature loop.

Synthetic, seeded data shaped like `hsg correlate` input: sparse non-negative "SAE latents"
[tokens, features] and per-token track coverage [tokens, tracks] in regions of 20 tokens
(a 100 bp window under NT v2: 16 six-mers and 4 single bases). Both methods see the same
batches of regions and compute Pearson and, with --max-lag L, the centred, normalised
cross-correlation at every lag -L..L (see hsg/correlate/stats.py).

* vectorised: `CorrelationAccumulator.update` per batch of 32 regions, then `.pearson()` /
  `.ncc()`, exactly what the CLI runs; --dtype float32 is `hsg correlate --precision
  float32`. Below 5 % coverage it takes the sparse track product (--coverage).
* loop: a Python loop over features, each feature against all tracks with numpy (centred
  dot products, tracks' centred columns and norms precomputed once per lag, so the loop is
  the strongest one-feature-at-a-time version, not a pair-by-pair strawman).

Throughput is features × tracks × tokens / second (lags not multiplied in). The loop can be
timed on a subset of features (--loop-features) and is then scaled to all of them: its
cost is linear in the number of features. The two results are compared before any number
is printed.

    .venv/bin/python benchmarks/bench_correlate.py                       # defaults below
    .venv/bin/python benchmarks/bench_correlate.py --max-lag 5 --dtype float32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

TOKENS_PER_REGION = 20
TOLERANCE = {"float64": 1e-9, "float32": 1e-5}  # max |Δr| against the float64 loops


def make_data(n_regions: int, n_features: int, n_tracks: int, seed: int, coverage: float = 0.02):
    """Sparse latents (≈5 % active) and track coverage of runs of whole and partial tokens
    (runs of 1-7 tokens, so about ``coverage`` of the tokens per track)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = n_regions * TOKENS_PER_REGION
    active = rng.random((n, n_features), dtype=np.float32) < 0.05
    x = rng.standard_gamma(1.0, size=(n, n_features), dtype=np.float32) * active  # as SAEs give
    y = np.zeros((n, n_tracks))
    for k in range(n_tracks):  # each track covers a few runs of tokens
        for start in rng.integers(0, n - 8, size=max(1, round(coverage * n / 4))):
            y[start : start + rng.integers(1, 8), k] = rng.choice([1.0, 0.5, 1 / 6])
    return x, y


def vectorised(x, y, regions_per_batch: int, max_lag: int, dtype: str = "float64"):
    import torch

    from hsg.correlate.stats import CorrelationAccumulator

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    acc = CorrelationAccumulator(x.shape[1], y.shape[1], max_lag, getattr(torch, dtype))
    step = regions_per_batch * TOKENS_PER_REGION
    for lo in range(0, x.shape[0], step):
        hi = min(lo + step, x.shape[0])
        acc.update(xt[lo:hi], yt[lo:hi], [TOKENS_PER_REGION] * ((hi - lo) // TOKENS_PER_REGION))
    return acc.per_lag().numpy(), acc.lags


def loop(x, y, max_lag: int, n_features: int, per_pair: bool = False):
    """One feature at a time (numpy over tracks), or one (feature, track) pair at a time
    with ``np.corrcoef`` as an analysis script would. [lags, n_features, tracks]."""
    import numpy as np

    from hsg.correlate.stats import lag_order

    pos = np.arange(x.shape[0]) % TOKENS_PER_REGION
    lags = lag_order(max_lag)
    out = np.full((len(lags), n_features, y.shape[1]), np.nan)
    for slot, lag in enumerate(lags):
        i = np.nonzero((pos + lag >= 0) & (pos + lag < TOKENS_PER_REGION))[0]
        yl = y[i + lag]
        ylc = yl - yl.mean(0)
        y_norm = np.sqrt((ylc**2).sum(0))
        for f in range(n_features):
            xf = x[i, f].astype(np.float64)
            if per_pair:
                if xf.min() == xf.max():
                    continue
                for k in range(y.shape[1]):
                    out[slot, f, k] = np.corrcoef(xf, yl[:, k])[0, 1]
                continue
            xc = xf - xf.mean()
            x_norm = np.sqrt(xc @ xc)
            if x_norm > 0:
                out[slot, f] = (xc @ ylc) / (x_norm * y_norm)
    return out


def _timed_loop(x, y, args, n_loop: int, per_pair: bool):
    import time as _time

    t0 = _time.perf_counter()
    result = loop(x, y, args.max_lag, n_loop, per_pair)
    return result, (_time.perf_counter() - t0) * args.features / n_loop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regions", type=int, default=2500, help="100 bp regions (20 tokens)")
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--tracks", type=int, default=32)
    parser.add_argument("--max-lag", type=int, default=0)
    parser.add_argument(
        "--coverage", type=float, default=0.02, help="fraction of tokens each track covers"
    )
    parser.add_argument(
        "--batch-regions",
        type=int,
        default=32,
        help="regions per update (hsg correlate --batch-size)",
    )
    parser.add_argument("--loop-features", type=int, default=512, help="features timed, loop")
    parser.add_argument("--pair-features", type=int, default=64, help="features timed, corrcoef")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/torch threads, both sides")
    parser.add_argument("--repeats", type=int, default=3, help="vectorised runs (best kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dtype", choices=("float64", "float32"), default="float64", help="batch arithmetic"
    )
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy/torch load their BLAS
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    x, y = make_data(args.regions, args.features, args.tracks, args.seed, args.coverage)
    n_tokens = x.shape[0]
    work = args.features * args.tracks * n_tokens

    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        per_lag, lags = vectorised(x, y, args.batch_regions, args.max_lag, args.dtype)
        times.append(time.perf_counter() - t0)
    t_vec = min(times)

    results = {}
    for name, per_pair, timed in (
        ("loop", False, args.loop_features),
        ("corrcoef_loop", True, args.pair_features),
    ):
        n_loop = min(timed, args.features)
        looped, seconds = _timed_loop(x, y, args, n_loop, per_pair)
        got = per_lag[:, :n_loop]
        diff = float(np.nanmax(np.abs(got - looped)))
        same_nan = np.array_equal(np.isnan(got), np.isnan(looped))
        if not (same_nan and diff < TOLERANCE[args.dtype]):
            sys.exit(f"{name}: results differ: max |Δr| = {diff:.3g}, NaN equal: {same_nan}")
        results[name] = (seconds, n_loop, diff)
    result = {
        "tokens": n_tokens,
        "features": args.features,
        "tracks": args.tracks,
        "coverage": round(float((y > 0).mean()), 5),
        "max_lag": args.max_lag,
        "lags": len(lags),
        "threads": args.threads,
        "dtype": args.dtype,
        "vectorised_s": round(t_vec, 4),
        "vectorised_ftt_per_s": f"{work / t_vec:.3g}",
    }
    for name, (seconds, n_loop, diff) in results.items():
        result[f"{name}_s"] = round(seconds, 3)
        result[f"{name}_features_timed"] = n_loop
        result[f"{name}_ftt_per_s"] = f"{work / seconds:.3g}"
        result[f"speedup_vs_{name}"] = round(seconds / t_vec, 1)
        result[f"max_abs_diff_{name}"] = float(f"{diff:.3g}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
