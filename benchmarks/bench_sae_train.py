"""Training speed and planted-dictionary recovery per second, for every SAE architecture.

    .venv/bin/python benchmarks/bench_sae_train.py [--rows 60000] [--threads 1]

The same planted-dictionary activations (`hsg.sae.planted`: d_in 64, 128 unit atoms, 3-5
active per row, scaled by 7) train each architecture with `hsg.api.train_sae` and its
defaults alone (d_sae 256, k 5 for topk/batchtopk), as `hsg sae train` would. Reported per
architecture: training tokens/s (the training passes only, from metrics.jsonl), wall time
of the whole run (statistics, training, validation, checkpoints), epochs, the recovered
fraction of atoms (a decoder row at cosine >= 0.9), validation FVE and L0, and recovery per
second of wall time; ratios are against relu measured in the same run.

With SAELens installed (the `interop` extra; `--no-saelens` skips it), each architecture is
also trained by SAELens's own trainer (`SAETrainer` with its `TrainingSAE` of that
architecture: standard, topk, batchtopk, jumprelu) on the same rows, for as many tokens as
hsg's run trained on, with hsg's batch size, learning rate and k, and SAELens's input
normalisation (`expected_average_only_in`, the counterpart of hsg's); its sparsity
coefficients are SAELens's defaults (λ means something else in each library). Reported:
its training tokens/s, hsg's tokens/s over it, and its recovered fraction. Every training
runs in a fresh process; its memory is that process's peak RSS, and in brackets the part
above the peak it had reached after the imports and the data ("− fixed"; 0 when training
never exceeds the import-time peak).
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
    ap.add_argument("--no-saelens", action="store_true", help="skip SAELens's trainer")
    args = ap.parse_args()

    from hsg.sae.planted import planted_dictionary

    saelens = not args.no_saelens and _has_saelens()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        acts = Path(tmp) / "acts.npy"
        np.save(acts, planted_dictionary(args.rows, **PLANTED).x)
        for arch in args.archs.split(","):
            row = _in_child("_hsg_run", args.threads, args.rows, arch, str(acts), tmp)
            rows.append(row)
            if saelens:
                sl = _in_child(
                    "_saelens_run", args.threads, args.rows, arch, row["tokens"],
                    row["batch_size"], row["lr"], row["k"],
                )  # fmt: skip
                row.update({f"saelens_{k}": v for k, v in sl.items()})
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
    if any("saelens_tokens_per_s" in r for r in rows):
        print("\nSAELens's trainer on the same rows, tokens, batch size, lr and k:")
        print("| arch | hsg tokens/s | SAELens tokens/s | hsg × SAELens | hsg recovered "
              "| SAELens recovered | hsg peak RSS MB (− fixed) "
              "| SAELens peak RSS MB (− fixed) |")  # fmt: skip
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(
                f"| {r['arch']} | {r['tokens_per_s']:,.0f} | {r['saelens_tokens_per_s']:,.0f} | "
                f"{r['tokens_per_s'] / r['saelens_tokens_per_s']:.2f} | {r['recovered']:.3f} | "
                f"{r['saelens_recovered']:.3f} | "
                f"{r['fixed_rss_mb'] + r['train_rss_mb']:.0f} ({r['train_rss_mb']:.0f}) | "
                f"{r['saelens_fixed_rss_mb'] + r['saelens_train_rss_mb']:.0f} "
                f"({r['saelens_train_rss_mb']:.0f}) |"
            )
    print(json.dumps(rows))


def _has_saelens() -> bool:
    try:
        import sae_lens  # noqa: F401
    except ImportError:
        return False
    return True


PLANTED = {"d_in": 64, "n_atoms": 128, "scale": 7.0, "seed": 13}


def _rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the
    parent at fork, so a spawned child would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(queue, name: str, threads: int, args: tuple) -> None:
    torch.set_num_threads(threads)
    queue.put(globals()[name](*args))


def _in_child(name: str, threads: int, *args):
    """Run `name(*args)` in a fresh process, so its peak RSS is its own."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, name, threads, args))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _hsg_run(rows: int, arch: str, acts: str, tmp: str) -> dict:
    """hsg's defaults on the planted rows; peak RSS over the child's after imports + data."""
    from hsg import api
    from hsg.sae.planted import planted_dictionary, recovered_fraction

    data = planted_dictionary(rows, **PLANTED)
    fixed = _rss_mb()
    extra = {"k": 5} if arch in ("topk", "batchtopk") else {}
    t0 = time.perf_counter()
    res = api.train_sae(
        Path(tmp) / arch, activations=acts, architecture=arch, d_sae=256, device="cpu", **extra
    )
    wall = time.perf_counter() - t0
    peak = _rss_mb()
    hist = res.history
    tok = sum(r["train"]["n_tokens"] for r in hist)
    train_s = sum(r["seconds"] for r in hist)
    best = hist[res.best_epoch - 1]["val"]
    rec = recovered_fraction(res.sae.W_dec.detach().numpy(), data.atoms)
    run = json.loads((Path(tmp) / arch / "train_state" / "run.json").read_text())
    return {
        "arch": arch,
        "tokens_per_s": tok / train_s,
        "wall_s": wall,
        "epochs": len(hist),
        "recovered": rec,
        "val_fve": best["fve"],
        "val_l0": best["l0"],
        "recovered_per_s": rec / wall,
        "tokens": tok,
        "batch_size": run["train"]["batch_size"],
        "lr": res.sae.cfg.lr,
        "k": extra.get("k"),
        "fixed_rss_mb": fixed,
        "train_rss_mb": peak - fixed,
    }


def _saelens_run(rows: int, arch: str, n_tokens: int, batch: int, lr: float, k: int | None):
    """SAELens's trainer for `n_tokens` tokens of shuffled batches of the planted rows."""
    import sae_lens as sl
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    from hsg.sae.planted import planted_dictionary, recovered_fraction

    data = planted_dictionary(rows, **PLANTED)
    x = data.x
    fixed = _rss_mb()

    classes = {
        "relu": (sl.StandardTrainingSAE, sl.StandardTrainingSAEConfig),
        "topk": (sl.TopKTrainingSAE, sl.TopKTrainingSAEConfig),
        "batchtopk": (sl.BatchTopKTrainingSAE, sl.BatchTopKTrainingSAEConfig),
        "jumprelu": (sl.JumpReLUTrainingSAE, sl.JumpReLUTrainingSAEConfig),
    }
    sae_cls, cfg_cls = classes[arch]
    kw = {"k": k} if k is not None else {}
    torch.manual_seed(0)
    sae = sae_cls(
        cfg_cls(d_in=x.shape[1], d_sae=256, normalize_activations="expected_average_only_in", **kw)
    )
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    gen = torch.Generator().manual_seed(0)

    def batches():
        while True:
            order = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(order) - batch + 1, batch):
                yield xt[order[i : i + batch]]

    total = (n_tokens // batch) * batch
    cfg = SAETrainerConfig(
        total_training_samples=total, train_batch_size_samples=batch, lr=lr,
        lr_end=lr, n_batches_for_norm_estimate=20,
    )  # fmt: skip
    trainer = SAETrainer(cfg, sae, batches())
    t0 = time.perf_counter()
    trained = trainer.fit()
    seconds = time.perf_counter() - t0
    return {
        "tokens_per_s": total / seconds,
        "seconds": seconds,
        "recovered": recovered_fraction(trained.W_dec.detach().numpy(), data.atoms),
        "fixed_rss_mb": fixed,
        "train_rss_mb": _rss_mb() - fixed,
    }


if __name__ == "__main__":
    main()
