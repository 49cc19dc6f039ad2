"""Training speed and planted-dictionary recovery per second, for every SAE architecture.

    .venv/bin/python benchmarks/bench_sae_train.py [--rows 60000] [--threads 1]

The same planted-dictionary activations (`hsg.sae.planted`: d_in 64, 128 unit atoms, 3-5
active per row, scaled by 7) train each architecture with `hsg.api.train_sae` and its
defaults alone (d_sae 256, k 5 for topk/batchtopk), as `hsg sae train` would. Reported per
architecture: training tokens/s (the training passes only, from metrics.jsonl), wall time
of the whole run (statistics, training, validation, checkpoints), epochs, the recovered
fraction of atoms (a decoder row at cosine >= 0.9), validation FVE and L0, and recovery per
second of wall time; ratios are against relu measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=60_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--archs", default="relu,topk,batchtopk,jumprelu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from hsg import api
    from hsg.sae.planted import planted_dictionary, recovered_fraction

    data = planted_dictionary(args.rows, d_in=64, n_atoms=128, scale=7.0, seed=13)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        acts = Path(tmp) / "acts.npy"
        np.save(acts, data.x)
        for arch in args.archs.split(","):
            extra = {"k": 5} if arch in ("topk", "batchtopk") else {}
            t0 = time.perf_counter()
            res = api.train_sae(
                Path(tmp) / arch, activations=acts, architecture=arch, d_sae=256,
                device="cpu", **extra,
            )  # fmt: skip
            wall = time.perf_counter() - t0
            hist = res.history
            tok = sum(r["train"]["n_tokens"] for r in hist)
            train_s = sum(r["seconds"] for r in hist)
            best = hist[res.best_epoch - 1]["val"]
            rec = recovered_fraction(res.sae.W_dec.detach().numpy(), data.atoms)
            rows.append(
                {
                    "arch": arch,
                    "tokens_per_s": tok / train_s,
                    "wall_s": wall,
                    "epochs": len(hist),
                    "recovered": rec,
                    "val_fve": best["fve"],
                    "val_l0": best["l0"],
                    "recovered_per_s": rec / wall,
                }
            )
    base = next((r for r in rows if r["arch"] == "relu"), rows[0])
    print(f"{args.rows} rows, d_in 64, d_sae 256, {args.threads} thread(s), defaults")
    print("| arch | train tokens/s | × relu | wall s | epochs | recovered | val FVE | val L0 "
          "| recovered/s | × relu |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['arch']} | {r['tokens_per_s']:,.0f} | "
            f"{r['tokens_per_s'] / base['tokens_per_s']:.2f} | {r['wall_s']:.1f} | "
            f"{r['epochs']} | {r['recovered']:.3f} | {r['val_fve']:.4f} | {r['val_l0']:.2f} | "
            f"{r['recovered_per_s']:.4f} | {r['recovered_per_s'] / base['recovered_per_s']:.2f} |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
