"""SAE training memory and throughput through the shard cache.

Writes synthetic activation caches of 1x and Nx the base token count (shards of
--shard-size tokens, ~17 tokens per "sequence" like 100 bp windows under NT v2), then
trains one epoch on each in a fresh child process and reports the child's peak RSS
(getrusage ru_maxrss) and the training throughput (tokens/s, data loading and shuffling
included). If memory is bounded by the shard size, the peak RSS ratio stays close to 1.0
while the data grows N-fold.

    .venv/bin/python benchmarks/bench_sae_memory.py            # defaults below
    .venv/bin/python benchmarks/bench_sae_memory.py --tokens 65536 --d-sae 4096 --threads 16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOKENS_PER_SEQUENCE = 17


def _rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def write_cache(directory: Path, n_tokens: int, d_in: int, shard_size: int, seed: int) -> None:
    """Stream a synthetic cache to disk: sparse non-negative mixes of random atoms + noise."""
    import numpy as np

    from hsg.sae.activations import ShardWriter

    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((4 * d_in, d_in)).astype(np.float32)
    writer = ShardWriter(directory, shard_size=shard_size, d_in=d_in)
    written, s = 0, 0
    while written < n_tokens:
        t = min(TOKENS_PER_SEQUENCE, n_tokens - written)
        coef = rng.random((t, atoms.shape[0]), dtype=np.float32)
        coef *= rng.random((t, atoms.shape[0]), dtype=np.float32) < 0.02
        rows = coef @ atoms + 0.05 * rng.standard_normal((t, d_in), dtype=np.float32)
        writer.add(f"seq{s}", rows)
        written += t
        s += 1
    writer.close(model_id="synthetic", layer=0)


def child(args: argparse.Namespace) -> None:
    """Train one epoch on the cache; print a JSON line with peak RSS and throughput."""
    import torch

    torch.set_num_threads(args.threads)
    from hsg.sae.activations import ShardCacheStore
    from hsg.sae.config import SAEConfig, TrainConfig
    from hsg.sae.model import SparseAutoencoder
    from hsg.sae.train import train_sae

    store = ShardCacheStore(args.cache)
    cfg = SAEConfig(d_in=store.d_in, d_sae=args.d_sae, l1_coefficient=1e-3, lr=1e-4, seed=0)
    # Fixed overhead: torch's allocator, thread pools and kernels warmed by one training step
    # on a random batch, so what follows is what the data adds.
    warm = SparseAutoencoder(cfg)
    opt = torch.optim.Adam(warm.parameters(), lr=cfg.lr)
    warm.loss(torch.randn(args.batch_size, store.d_in), 1e-3).loss.backward()
    opt.step()
    del warm, opt
    base = _rss_peak_mb()
    tcfg = TrainConfig(
        batch_size=args.batch_size,
        epochs=1,
        val_fraction=0.1,
        shuffle_buffer_shards=args.buffer,
        device="cpu",
    )
    t0 = time.perf_counter()
    res = train_sae(store, cfg, tcfg)
    wall = time.perf_counter() - t0
    epoch = res.history[-1]
    print(
        json.dumps(
            {
                "tokens": store.n_tokens,
                "train_tokens": epoch["train"]["n_tokens"],
                "shards": store.num_shards,
                "rss_fixed_mb": base,
                "peak_rss_mb": _rss_peak_mb(),
                "train_tokens_per_s": epoch["tokens_per_s"],
                "epoch_wall_s": wall,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tokens", type=int, default=16384, help="tokens at scale 1")
    p.add_argument("--scales", default="1,4")
    p.add_argument("--d-in", type=int, default=512, help="NT v2 50M/100M width")
    p.add_argument("--d-sae", type=int, default=2048)
    p.add_argument("--shard-size", type=int, default=2048)
    p.add_argument("--buffer", type=int, default=4, help="shards shuffled together")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return

    print(
        f"d_in={args.d_in} d_sae={args.d_sae} shard_size={args.shard_size} "
        f"buffer={args.buffer} shards batch={args.batch_size} threads={args.threads}"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="hsg-bench-sae-") as tmp:
        for scale in (int(s) for s in args.scales.split(",")):
            cache = Path(tmp) / f"x{scale}"
            write_cache(cache, scale * args.tokens, args.d_in, args.shard_size, seed=scale)
            size_mb = sum(f.stat().st_size for f in cache.iterdir()) / 2**20
            cmd = [sys.executable, __file__, "--child", "--cache", str(cache)]
            for flag in ("d_sae", "batch_size", "buffer", "threads"):
                cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            r.update(scale=scale, cache_mb=size_mb)
            rows.append(r)
            print(
                f"{scale}x: {r['tokens']:>8} tokens ({size_mb:7.1f} MB on disk, "
                f"{r['shards']} shards)  peak RSS {r['peak_rss_mb']:7.1f} MB "
                f"(fixed {r['rss_fixed_mb']:6.1f} MB)  "
                f"train {r['train_tokens_per_s']:8.0f} tokens/s",
                flush=True,
            )
            for f in cache.iterdir():
                f.unlink()
    lo, hi = rows[0], rows[-1]
    ratio = hi["peak_rss_mb"] / lo["peak_rss_mb"]
    d_lo = lo["peak_rss_mb"] - lo["rss_fixed_mb"]
    d_hi = hi["peak_rss_mb"] - hi["rss_fixed_mb"]
    print(
        f"peak RSS ratio {hi['scale']}x/{lo['scale']}x = {ratio:.3f} "
        f"(above fixed overhead: {d_lo:.1f} -> {d_hi:.1f} MB; data grew "
        f"{lo['cache_mb']:.0f} -> {hi['cache_mb']:.0f} MB)"
    )


if __name__ == "__main__":
    main()
