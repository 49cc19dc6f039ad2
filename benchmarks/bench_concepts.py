"""Concept F1 throughput: one sparse product over threshold bins versus a per-feature loop.

Input: the 23,048 shared cisplatin windows (../shared/data/cisplatin/loci.tsv), tokenised as
NT v2 does (100 bp → 16 six-mers + 4 single bases), and **real concept masks**: every RefSeq
functional element name of ../shared/data/annotations/refseq_functional_elements.GRCh38.bed
overlapping the windows, and every JASPAR CORE vertebrate motif (pyjaspar's bundled release)
found by `hsg.regions.motifs.MotifScanner` at p ≤ 1e-4 — the concepts `hsg concepts --bed …
--jaspar` scores. The **activations are synthetic** (no trained SAE on real NT weights ships
with hsg): --features latents, --active per token (TopK-like), feature popularity Zipf-like
(a few features fire often, most rarely, as in trained SAEs), gamma-distributed values.

* vectorised: `hsg.concepts.f1.concept_f1` — both splits, threshold choice, test scores;
  run --repeat times, the median is reported (the speed-up uses it). With numba installed
  (``--engine auto``, the default) it counts with the compiled kernels of
  `hsg.concepts.kernels`; their JIT compile (or load from numba's on-disk cache in
  __pycache__) is timed first, on a tiny input, and printed on its own line — it is paid
  once per process, not per run. The numpy/scipy engine is timed too (--numpy-repeat runs)
  and its results must be identical to the kernels';
* loop: `split_counts_loop` — per feature and threshold, the tokens above it index the label
  matrix (sparse row sums over concepts), on both splits. By default it runs over **every**
  feature, so nothing is scaled. With --loop-features m it runs on m features spaced evenly
  over all of them (``linspace(0, F-1, m)``) and its time is scaled by F/m: popularity falls
  with the feature number, so the first m features would be the most expensive ones and
  overstate the loop. Its counts are compared with the vectorised ones (`split_counts`) on
  the same features before any number is printed.

    .venv/bin/python benchmarks/bench_concepts.py
    .venv/bin/python benchmarks/bench_concepts.py --loop-features 512   # a sample, scaled
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def timed_and_equal(result, runs: int, between: str, *args, **kwargs) -> list[float] | None:
    """`runs` timed calls of concept_f1(*args, **kwargs); None (after saying which array
    differs) when the last one's results are not exactly `result`'s."""
    import numpy as np

    from hsg.concepts.f1 import concept_f1

    times = []
    for _ in range(runs):
        t = time.perf_counter()
        other = concept_f1(*args, **kwargs)
        times.append(time.perf_counter() - t)
    for name in ("step", "select_f1", "f1", "precision", "recall", "tp"):
        if not np.array_equal(getattr(result, name), getattr(other, name)):
            print(f"MISMATCH between {between}: {name}", file=sys.stderr)
            return None
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loci", type=Path, default=SHARED / "cisplatin" / "loci.tsv")
    ap.add_argument(
        "--bed", type=Path, default=SHARED / "annotations" / "refseq_functional_elements.GRCh38.bed"
    )
    ap.add_argument("--no-jaspar", action="store_true", help="RefSeq concepts only")
    ap.add_argument("--features", type=int, default=4096)
    ap.add_argument("--active", type=int, default=32, help="active latents per token")
    ap.add_argument(
        "--loop-features",
        type=int,
        default=0,
        help="time the loop on this many evenly spaced features (0: all)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="vectorised runs (median)")
    ap.add_argument("--engine", choices=("auto", "numba", "numpy"), default="auto")
    ap.add_argument("--numpy-repeat", type=int, default=1, help="numpy-engine runs (0: none)")
    ap.add_argument(
        "--threads",
        type=int,
        default=2,
        help="also time the numba engine with this many threads (≤ 1: not)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the numbers here too")
    args = ap.parse_args(argv)  # fmt: skip

    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from hsg.concepts.data import TokenActivations, split_rows, token_index
    from hsg.concepts.f1 import ConceptConfig, concept_f1, split_counts, split_counts_loop
    from hsg.concepts.run import Inputs, add_bed, add_jaspar

    if not args.loci.is_file():
        print(f"no {args.loci}: the shared data is needed", file=sys.stderr)
        return 2
    t = time.perf_counter()
    loci = pd.read_csv(args.loci, sep="\t")
    index = token_index(loci["id"].tolist(), loci["sequence"].tolist())
    n = index.n_tokens
    print(f"{len(loci)} windows, {n} tokens (tokenised in {time.perf_counter() - t:.1f} s)")

    rng = np.random.default_rng(args.seed)
    popularity = 1.0 / np.arange(1, args.features + 1) ** 0.8
    popularity /= popularity.sum()
    # popular features more often: draw with replacement from the popularity, then keep
    # one of each (feature, token) pair (a few tokens get slightly fewer than --active)
    cdf = np.cumsum(popularity)
    cols = np.minimum(np.searchsorted(cdf, rng.random((n, args.active))), args.features - 1)
    cols.sort(axis=1)
    dup = np.zeros_like(cols, dtype=bool)
    dup[:, 1:] = cols[:, 1:] == cols[:, :-1]
    values = rng.standard_gamma(2.0, size=cols.shape).astype(np.float32)
    rows = np.repeat(np.arange(n), args.active).reshape(n, args.active)
    keep = ~dup
    matrix = sp.csr_matrix((values[keep], (rows[keep], cols[keep])), shape=(n, args.features))
    acts = TokenActivations(index, matrix, [f"f{i}" for i in range(args.features)])
    coords = [{"chrom": c, "start": int(s), "end": int(e), "strand": st}
              for c, s, e, st in zip(loci["chrom"], loci["start"], loci["end"], loci["strand"],
                                     strict=True)]  # fmt: skip
    inputs = Inputs(acts, coordinates=coords)
    t = time.perf_counter()
    n_bed = add_bed(inputs, args.bed)
    print(f"RefSeq: {n_bed} element overlaps ({time.perf_counter() - t:.1f} s)")
    if not args.no_jaspar:
        t = time.perf_counter()
        n_motif = add_jaspar(inputs)
        print(f"JASPAR: {n_motif} motif hits ({time.perf_counter() - t:.1f} s)")
    labels = inputs.labels()
    kinds = pd.Series([c.kind for c in labels.concepts]).value_counts().to_dict()
    print(f"{len(labels.concepts)} concepts {kinds}, {labels.matrix.nnz} labelled token pairs; "
          f"{matrix.nnz} activations (≤ {args.active}/token, synthetic)")  # fmt: skip

    import hsg.concepts.f1 as f1_module

    config = ConceptConfig()
    engine = args.engine
    if engine == "auto":
        engine = "numpy" if f1_module._kernels is None else "numba"
    jit = None
    if engine == "numba":  # compile (or load the cached kernels) on a tiny input
        tiny = TokenActivations(index, matrix[:, :2], ["a", "b"])
        tiny_labels = type(labels)(labels.concepts[:1], labels.matrix[:, :1])
        t = time.perf_counter()
        concept_f1(tiny, tiny_labels, config, engine="numba")
        jit = time.perf_counter() - t
        print(f"numba first call (JIT compile or cache load, + a tiny run): {jit:.2f} s, "
              "once per process; not in the times below")  # fmt: skip
    runs, phases = [], []
    for _ in range(max(1, args.repeat)):
        marks = [("splitting the sequences", time.perf_counter())]

        def mark(msg: str, marks: list = marks) -> None:
            marks.append((msg, time.perf_counter()))

        result = concept_f1(acts, labels, config, engine=engine, progress=mark)
        mark("")
        runs.append(marks[-1][1] - marks[0][1])
        # each progress message starts a phase, which lasts until the next one
        phases.append([(m[0], n[1] - m[1]) for m, n in zip(marks, marks[1:], strict=False)])
    vec = float(np.median(runs))
    print(f"vectorised ({engine}): {vec:.2f} s (median of {', '.join(f'{r:.2f}' for r in runs)})"
          f" for {args.features} features × {len(labels.concepts)} concepts × "
          f"{len(config.thresholds)} thresholds, both splits")  # fmt: skip
    if engine == "numba":  # the median run's phases (the numpy path reports per block)
        for msg, seconds in phases[int(np.argsort(runs)[len(runs) // 2])]:
            print(f"  {seconds:6.3f} s  {msg}")
    threaded: list[float] = []
    if engine == "numba" and args.threads > 1:
        threaded = timed_and_equal(
            result, max(1, args.repeat), f"1 and {args.threads} threads",
            acts, labels, config, engine="numba", threads=args.threads,
        )  # fmt: skip
        if threaded is None:
            return 1
        print(f"numba, {args.threads} threads for the counting passes: "
              f"{np.median(threaded):.2f} s (median of {', '.join(f'{r:.2f}' for r in threaded)})"
              "; results identical (the first run includes loading its kernels)")  # fmt: skip
    numpy_runs: list[float] = []
    if engine == "numba" and args.numpy_repeat > 0:
        numpy_runs = timed_and_equal(
            result, args.numpy_repeat, "the numba and numpy engines",
            acts, labels, config, engine="numpy",
        )  # fmt: skip
        if numpy_runs is None:
            return 1
        print(f"numpy engine: {np.median(numpy_runs):.2f} s (median of "
              f"{', '.join(f'{r:.2f}' for r in numpy_runs)}); results identical")  # fmt: skip

    m = args.features if args.loop_features <= 0 else min(args.loop_features, args.features)
    sample = np.unique(np.linspace(0, args.features - 1, m).round().astype(np.int64))
    m = len(sample)
    parts = split_rows(index, config.select_fraction, config.seed)
    sub = matrix[:, sample]
    fmax = result.feature_max[sample]
    loop = 0.0
    for name in ("select", "test"):
        r = parts[name]
        t = time.perf_counter()
        slow = split_counts_loop(sub[r], labels.matrix[r], fmax, config.thresholds)
        loop += time.perf_counter() - t
        fast = split_counts(sub[r], labels.matrix[r], fmax, config.thresholds, engine=engine)
        if not (np.array_equal(slow.tp, fast.tp) and np.array_equal(slow.predicted,
                                                                    fast.predicted)):  # fmt: skip
            print(f"MISMATCH between the loop and the sparse product on {name}", file=sys.stderr)
            return 1
    loop_all = loop * args.features / m
    scaled = (
        " (all features, not scaled)"
        if m == args.features
        else f" (measured on {m} evenly spaced features, scaled ×{args.features / m:g})"
    )
    print(f"loop:       {loop_all:.1f} s{scaled}; counts equal")
    print(f"speed-up:   {loop_all / vec:.1f}× (serial, as the loop)")
    if threaded:
        print(f"            {loop_all / np.median(threaded):.1f}× with {args.threads} threads")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpus = os.cpu_count()
    print(f"machine: {cpus} CPUs, load average {load:.1f} at the end (shared with other jobs)")
    if args.json:
        args.json.write_text(json.dumps({
            "windows": len(loci), "tokens": n, "features": args.features,
            "concepts": len(labels.concepts), "activations": int(matrix.nnz),
            "engine": engine, "jit_first_call_s": jit, "numpy_engine_runs_s": numpy_runs,
            "vectorised_s": vec, "vectorised_runs_s": runs, "phases_s": phases,
            "threads": args.threads, "threaded_runs_s": threaded,
            "loop_s": loop_all,
            "loop_features_measured": m, "load_average": load,
            "speedup": loop_all / vec}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
