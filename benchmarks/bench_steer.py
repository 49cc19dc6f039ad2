"""Steering and dependency-map throughput: batched versus one forward pass at a time.

1. Dependency map of one sequence: all 3·n single-base mutants in batches of
   ``--depmap-batch`` rows versus one forward pass per mutant (what the study's per-sequence
   loop amounts to). Target: batched >= 10x faster.
2. Steering grid: (sequence, condition) rows per second through `Steerer` (SAE edit at
   layer 1, classifier at layer 1 = "hidden-same" route, and at the last layer =
   "hidden-forward", which re-runs the blocks after the SAE), batched (``--max-rows``)
   versus one (sequence, condition) per pass.

Models and heads are random: throughput does not depend on the weights. The encoder is the
tiny test model unless ``--layers/--hidden`` say otherwise.

    .venv/bin/python benchmarks/bench_steer.py
    .venv/bin/python benchmarks/bench_steer.py --layers 6 --hidden 128 --length 600 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hsg.models.encoder import load_encoder  # noqa: E402
from hsg.models.tiny import make_tiny  # noqa: E402
from hsg.regions.synthetic import make_synthetic_dataset  # noqa: E402
from hsg.sae.config import SAEConfig  # noqa: E402
from hsg.sae.model import SparseAutoencoder  # noqa: E402
from hsg.steer.classifier import ClassifierConfig, ConvClassifier  # noqa: E402
from hsg.steer.depmap import dependency_map  # noqa: E402
from hsg.steer.interventions import Intervention  # noqa: E402
from hsg.steer.run import Steerer  # noqa: E402


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_depmap(encoder, sae, seq: str, batch: int, repeat: int) -> dict:
    feature = 3
    dependency_map(encoder, sae, feature, seq, batch_size=batch)  # warm-up
    t_batched = best_of(
        repeat, lambda: dependency_map(encoder, sae, feature, seq, batch_size=batch)
    )
    t_single = best_of(1, lambda: dependency_map(encoder, sae, feature, seq, batch_size=1))
    a = dependency_map(encoder, sae, feature, seq, batch_size=batch).delta
    b = dependency_map(encoder, sae, feature, seq, batch_size=1).delta
    mutants = 3 * len(seq)
    return {
        "length_bp": len(seq),
        "mutants": mutants,
        "batch_rows": batch,
        "batched_s": round(t_batched, 4),
        "one_per_pass_s": round(t_single, 4),
        "speedup": round(t_single / t_batched, 1),
        "batched_mutants_per_s": round(mutants / t_batched, 1),
        "max_abs_diff": float(np.nanmax(np.abs(a - b))),
    }


def bench_steer(encoder, sae, classifier, seqs, n_conditions, max_rows, repeat, n_single) -> dict:
    ids = [f"s{i}" for i in range(len(seqs))]
    ivs = [Intervention(3 + k % 7, float(k % 3), 0.5 * (1 + k % 4)) for k in range(n_conditions)]
    steerer = Steerer(encoder, sae, classifier, "all", True, max_rows)

    def batched() -> None:
        for s in range(0, len(seqs), 32):
            batch = steerer.embed(seqs[s : s + 32], ids[s : s + 32])
            z = steerer.latents(batch)
            steerer.baseline(batch, z)
            steerer.conditions(batch, z, ivs)

    def one_at_a_time() -> None:
        for s in range(n_single):
            batch = steerer.embed(seqs[s : s + 1], ids[s : s + 1])
            z = steerer.latents(batch)
            steerer.baseline(batch, z)
            for iv in ivs:
                steerer.conditions(batch, z, [iv])

    batched()  # warm-up
    t_batched = best_of(repeat, batched)
    t_single = best_of(1, one_at_a_time)
    rows = len(seqs) * (n_conditions + 1)
    rows_single = n_single * (n_conditions + 1)
    return {
        "route": steerer.route,
        "sequences": len(seqs),
        "conditions": n_conditions,
        "max_rows": max_rows,
        "batched_rows_per_s": round(rows / t_batched, 1),
        "one_per_pass_rows_per_s": round(rows_single / t_single, 1),
        "speedup": round((rows / t_batched) / (rows_single / t_single), 1),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--d-sae", type=int, default=256)
    ap.add_argument(
        "--length", type=int, nargs="+", default=[100, 300], help="bp of the depmap sequence(s)"
    )
    ap.add_argument("--depmap-batch", type=int, default=256)
    ap.add_argument("--n", type=int, default=128, help="sequences (100 bp) for steering")
    ap.add_argument("--n-single", type=int, default=16, help="sequences for the 1-per-pass run")
    ap.add_argument("--conditions", type=int, default=20)
    ap.add_argument("--max-rows", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny(Path(tmp) / "model", "v2", layers=args.layers, hidden=args.hidden)
        encoder = load_encoder(model, device=args.device)
    last = encoder.num_layers
    sae1 = SparseAutoencoder(SAEConfig(d_in=args.hidden, d_sae=args.d_sae, layer=1), args.device)
    sae_last = SparseAutoencoder(
        SAEConfig(d_in=args.hidden, d_sae=args.d_sae, layer=last), args.device
    )
    rng = np.random.default_rng(0)
    records = make_synthetic_dataset(n=args.n, length=100, seed=0)
    seqs = [r.sequence for r in records]
    results: dict = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "device": args.device,
        "model": f"tiny v2, {args.layers} layers, hidden {args.hidden}; SAE d_sae {args.d_sae}",
    }
    results["depmap"] = [
        bench_depmap(
            encoder,
            sae_last,
            "".join(rng.choice(list("ACGT"), size=n)),
            args.depmap_batch,
            args.repeat,
        )
        for n in args.length
    ]
    results["steer"] = []
    for clf_layer in sorted({1, last}):
        cfg = ClassifierConfig(
            d_in=args.hidden, input_kind="hidden", layer=clf_layer, positive_label="p"
        )
        clf = ConvClassifier(cfg).to(args.device).eval()
        results["steer"].append(
            bench_steer(
                encoder, sae1, clf, seqs, args.conditions, args.max_rows, args.repeat, args.n_single
            )
        )
    print(json.dumps(results, indent=2))
    print()
    for d in results["depmap"]:
        print(
            f"depmap {d['length_bp']} bp, {d['mutants']} mutants: batched {d['batched_s']} s, "
            f"one per pass {d['one_per_pass_s']} s -> {d['speedup']}x"
        )
    for s in results["steer"]:
        print(
            f"steer {s['route']}: {s['batched_rows_per_s']} (sequence x condition)/s batched, "
            f"{s['one_per_pass_rows_per_s']} one per pass -> {s['speedup']}x"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
