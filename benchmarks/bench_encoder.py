"""Encoder throughput: batched forward passes versus one sequence per pass.

The original study encoded one sequence per forward pass. This measures what batching buys
on the same model and the same real sequences in one run, end to end through
`Encoder.embed` (tokenizing, padding, the forward pass, copying hidden states back to the
CPU as float32), and prints tokens/s for both and their ratio, plus peak memory.

Models are random (throughput does not depend on the weights): ``--size tiny`` is the
2-layer/32-wide test model, ``50m``/``100m``/``500m`` are NT v2 shapes (``--version v1``
with ``500m`` is the NT v1 500M shape); ``--model DIR`` benchmarks a real checkpoint.
``--n-original N`` also times the original study's way: one sequence per pass, padded to
the model's maximum length (``padding="max_length"``), all real tokens counted.

``--peak`` also measures, in the same run and interleaved round by round with the
encoder, the machine's best fp32 GEMM rate: torch's matmul (MKL) and oneDNN's linear with a
pre-packed weight (`torch.ops.mkldnn`), on every linear shape of the model at the batch's
row count and on a 2048³ product, best of ``--rounds``; and prints the encoder's forward
pass (FLOPs counted from the config) and its end-to-end ``embed`` as a fraction of that
best rate. ``--compare-plain`` times torch's plain layers on the same batch too
(``kernels=plain``), and ``--agreement`` compares the hidden states and the top-k latents
of a random SAE against the fp32 plain path (for ``--dtype bf16``).

    python benchmarks/bench_encoder.py --size tiny
    python benchmarks/bench_encoder.py --size 50m --n 256 --n-single 64 --n-original 4
    python benchmarks/bench_encoder.py --size 50m --n 256 --n-single 64 --peak --compare-plain
    python benchmarks/bench_encoder.py --size 50m --dtype bf16 --peak --agreement
    python benchmarks/bench_encoder.py --device cuda --size 500m --dtype bf16 --n 4096
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hsg.models.checkpoint import backbone_state  # noqa: E402
from hsg.models.config import PRESETS  # noqa: E402
from hsg.models.encoder import Encoder, build_model, load_encoder  # noqa: E402
from hsg.models.nucleotide_transformer import NucleotideTransformer  # noqa: E402
from hsg.models.tiny import random_state_dict, tiny_config  # noqa: E402
from hsg.models.tokenizer import NucleotideTokenizer  # noqa: E402
from hsg.regions.readers import read_records  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "cisplatin" / "loci.tsv"


def random_encoder(
    version: str, size: str, device: str | None, dtype: str | None, kernels: str = "auto"
) -> Encoder:
    config = tiny_config(version) if size == "tiny" else PRESETS[f"{version}-{size}"]
    with torch.device("meta"):
        expected = {k: v.shape for k, v in NucleotideTransformer(config).state_dict().items()}
    state = backbone_state(random_state_dict(config, seed=0), expected, config, "random")
    tokenizer = NucleotideTokenizer(config.version, max_tokens=config.max_tokens)
    return Encoder(
        build_model(config, state),
        tokenizer,
        f"random-{version}-{size}",
        (),
        device,
        dtype,
        kernels,
    )


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 if platform.system() == "Darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def sync(encoder: Encoder) -> None:
    if encoder.device.type == "cuda":
        torch.cuda.synchronize(encoder.device)


def run_batched(
    encoder: Encoder, seqs: list[str], layer: int, batch_size: int
) -> tuple[int, float]:
    tokens = 0
    sync(encoder)
    start = time.perf_counter()
    for i in range(0, len(seqs), batch_size):
        out = encoder.embed(seqs[i : i + batch_size], layer)
        tokens += int(out.attention_mask.sum())
    sync(encoder)
    return tokens, time.perf_counter() - start


def run_single(encoder: Encoder, seqs: list[str], layer: int) -> tuple[int, float]:
    tokens = 0
    sync(encoder)
    start = time.perf_counter()
    for seq in seqs:
        out = encoder.embed([seq], layer)
        tokens += int(out.attention_mask.sum())
    sync(encoder)
    return tokens, time.perf_counter() - start


def run_original(encoder: Encoder, seqs: list[str], layer: int) -> tuple[int, float]:
    """One sequence per pass, right-padded to the model's maximum length, as the original
    study's extraction script did (``padding="max_length"``); counts real tokens only."""
    tok = encoder.tokenizer
    tokens = 0
    sync(encoder)
    start = time.perf_counter()
    for seq in seqs:
        ids = tok.encode(seq).ids
        n = len(ids)
        input_ids = torch.full((1, encoder.max_tokens), tok.pad_token_id, dtype=torch.long)
        input_ids[0, :n] = torch.tensor(ids)
        mask = input_ids != tok.pad_token_id
        with torch.inference_mode():
            hidden = encoder.model(input_ids.to(encoder.device), mask.to(encoder.device), layer)
            hidden.float().cpu()
        tokens += n
    sync(encoder)
    return tokens, time.perf_counter() - start


def forward_flops(config, rows: int, length: int) -> float:
    """Multiply-adds × 2 of one forward pass through every block: the linear layers plus the
    two attention products (LayerNorm, softmax, activations are < 1 % and not counted)."""
    d, inter = config.hidden_size, config.intermediate_size
    w1 = inter * (2 if config.ffn == "swiglu" else 1)
    linear = d * 3 * d + d * d + d * w1 + inter * d
    attention = 2 * length * d
    return 2.0 * rows * length * (linear + attention) * config.num_hidden_layers


def linear_shapes(config) -> list[tuple[int, int]]:
    """(in, out) of the model's GEMMs as the oneDNN path runs them (q/k/v fused)."""
    d, inter = config.hidden_size, config.intermediate_size
    w1 = inter * (2 if config.ffn == "swiglu" else 1)
    return [(d, 3 * d), (d, d), (d, w1), (inter, d)]


# The clock of --peak: wall time, or with --cpu-time the CPU time this process used, which a
# loaded machine does not inflate (time slices lost to other processes are not counted);
# with --threads 1 that is the rate of one core while this process runs on it.
CLOCK = {"now": time.perf_counter}


def now() -> float:
    return CLOCK["now"]()


class GemmPeak:
    """Best fp32 GEMM rate of this machine, per backend and shape, accumulated over rounds."""

    def __init__(self, shapes: list[tuple[int, int]], rows: int):
        gen = torch.Generator().manual_seed(0)
        self.cases = []
        for m, k, n in [(rows, k, n) for k, n in shapes] + [(2048, 2048, 2048)]:
            x = torch.randn(m, k, generator=gen)
            w = torch.randn(n, k, generator=gen)
            b = torch.randn(n, generator=gen)
            wt = w.t().contiguous()
            packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
            runs = {
                "torch_matmul": lambda x=x, wt=wt: torch.mm(x, wt),
                "torch_linear": lambda x=x, w=w, b=b: torch.nn.functional.linear(x, w, b),
                "onednn_linear": lambda x=x, p=packed, b=b: torch.ops.mkldnn._linear_pointwise(
                    x, p, b, "none", [], ""
                ),
            }
            self.cases.append(((m, k, n), runs))
        self.best: dict[tuple[str, tuple[int, int, int]], float] = {}

    def round(self, reps: int = 3) -> None:
        with torch.inference_mode():
            for shape, runs in self.cases:
                flops = 2.0 * shape[0] * shape[1] * shape[2]
                for name, fn in runs.items():
                    fn()
                    for _ in range(reps):
                        start = now()
                        fn()
                        rate = flops / max(now() - start, 1e-9) / 1e9
                        key = (name, shape)
                        self.best[key] = max(self.best.get(key, 0.0), rate)

    def by_backend(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (name, _), rate in self.best.items():
            out[name] = max(out.get(name, 0.0), rate)
        return out


def best_time(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        start = now()
        fn()
        best = min(best, max(now() - start, 1e-9))
    return best


def measure_peak(
    encoder: Encoder, plain: Encoder | None, seqs: list[str], layer: int, rounds: int
) -> dict:
    """Encoder forward and end-to-end embed against the best GEMM rate, interleaved."""
    rows = encoder.tokenizer.encode_batch(seqs)
    ids, mask = encoder.tokenizer.pad(rows)
    input_ids = torch.tensor(ids, dtype=torch.long).to(encoder.device)
    attention = torch.tensor(mask, dtype=torch.bool).to(encoder.device)
    length = input_ids.shape[1]
    flops = forward_flops(encoder.config, len(seqs), length)
    peak = GemmPeak(linear_shapes(encoder.config), len(seqs) * length)

    def forward(enc: Encoder):
        with torch.inference_mode():
            enc.model(input_ids, attention, layer)

    best = {"forward": float("inf"), "embed": float("inf"), "plain_forward": float("inf")}
    for _ in range(rounds):
        peak.round()
        best["forward"] = min(best["forward"], best_time(lambda: forward(encoder), 2))
        best["embed"] = min(best["embed"], best_time(lambda: encoder.embed(seqs, layer), 2))
        if plain is not None:
            best["plain_forward"] = min(best["plain_forward"], best_time(lambda: forward(plain), 2))
    backends = peak.by_backend()
    top = max(backends.values())
    out = {
        "peak_rows": len(seqs) * length,
        "gemm_peak_gflops": round(top, 1),
        **{f"gemm_{k}_gflops": round(v, 1) for k, v in backends.items()},
        "forward_gflops": round(flops / best["forward"] / 1e9, 1),
        "forward_fraction_of_peak": round(flops / best["forward"] / 1e9 / top, 3),
        "embed_gflops": round(flops / best["embed"] / 1e9, 1),
        "embed_fraction_of_peak": round(flops / best["embed"] / 1e9 / top, 3),
    }
    if plain is not None:
        out["plain_forward_gflops"] = round(flops / best["plain_forward"] / 1e9, 1)
        out["plain_forward_fraction_of_peak"] = round(flops / best["plain_forward"] / 1e9 / top, 3)
        out["kernels_speedup"] = round(best["plain_forward"] / best["forward"], 2)
    return out


def agreement(encoder: Encoder, reference: Encoder, seqs: list[str], layer: int, k: int) -> dict:
    """Hidden states and top-k latents of a random SAE (8× wide) against `reference`."""
    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder

    a = reference.embed(seqs, layer)
    b = encoder.embed(seqs, layer)
    ha, hb = a.hidden[a.content_mask], b.hidden[b.content_mask]
    rel = ((hb - ha).norm(dim=-1) / ha.norm(dim=-1).clamp_min(1e-12)).median().item()
    sae = SparseAutoencoder(SAEConfig(d_in=ha.shape[1], d_sae=8 * ha.shape[1], seed=0))
    with torch.inference_mode():
        la, lb = sae.encode(ha), sae.encode(hb)
    ta, tb = la.topk(k, dim=-1).indices, lb.topk(k, dim=-1).indices
    overlap = (ta.unsqueeze(-1) == tb.unsqueeze(-2)).any(-1).float().mean().item()
    return {
        "agreement_tokens": int(ha.shape[0]),
        "hidden_median_rel_error": float(f"{rel:.3g}"),
        "top1_agreement": round((ta[:, 0] == tb[:, 0]).float().mean().item(), 4),
        f"top{k}_overlap": round(overlap, 4),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "50m", "100m", "500m"], default="tiny")
    ap.add_argument("--version", choices=["v1", "v2"], default="v2")
    ap.add_argument("--model", type=Path, help="benchmark this checkpoint instead of a random one")
    ap.add_argument("--device", default=None, help="cpu or cuda [default: cuda if present]")
    ap.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="TSV/FASTA of sequences")
    ap.add_argument("--n", type=int, default=1024, help="sequences for the batched run")
    ap.add_argument("--n-single", type=int, default=256, help="sequences for the 1-per-pass run")
    ap.add_argument(
        "--n-original",
        type=int,
        default=0,
        help="also time this many sequences one per pass padded to the model's max length, "
        "as the original study did (slow: every pass is max_tokens long)",
    )
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--layer", type=int, default=-1, help="hidden state to return [last]")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--kernels", choices=["auto", "plain", "onednn"], default="auto", help="encoder kernels"
    )
    ap.add_argument("--peak", action="store_true", help="fraction of the best fp32 GEMM rate")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds for --peak")
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="--peak on the process's CPU time instead of wall time (for loaded machines; "
        "use with --threads 1)",
    )
    ap.add_argument(
        "--compare-plain", action="store_true", help="with --peak: torch's plain layers too"
    )
    ap.add_argument(
        "--agreement", action="store_true", help="hidden states and SAE top-k vs fp32 plain"
    )
    ap.add_argument("--agree-k", type=int, default=8, help="k of the top-k overlap")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)

    def make(dtype: str | None, kernels: str) -> Encoder:
        if args.model:
            return load_encoder(args.model, args.device, dtype, kernels)
        return random_encoder(args.version, args.size, args.device, dtype, kernels)

    if not args.model and args.size != "tiny" and f"{args.version}-{args.size}" not in PRESETS:
        ap.error(f"no NT {args.version} preset of size {args.size} (have {sorted(PRESETS)})")
    encoder = make(args.dtype, args.kernels)
    seqs = []
    for record in read_records(args.data):
        seqs.append(record.sequence)
        if len(seqs) >= max(args.n, args.n_single):
            break
    layer = encoder.model.check_layer(args.layer)

    # warm-up: allocator, kernels, thread pools
    run_batched(encoder, seqs[: args.batch_size], layer, args.batch_size)
    run_single(encoder, seqs[:4], layer)
    if encoder.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(encoder.device)

    b_tokens, b_time = run_batched(encoder, seqs[: args.n], layer, args.batch_size)
    s_tokens, s_time = run_single(encoder, seqs[: args.n_single], layer)
    batched, single = b_tokens / b_time, s_tokens / s_time
    original = None
    if args.n_original:
        o_tokens, o_time = run_original(encoder, seqs[: args.n_original], layer)
        original = o_tokens / o_time
    result = {
        "model": encoder.model_id,
        "layers": encoder.num_layers,
        "hidden": encoder.hidden_size,
        "params_m": round(sum(p.numel() for p in encoder.model.parameters()) / 1e6, 1),
        "device": str(encoder.device),
        "dtype": str(encoder.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "layer": layer,
        "batch_size": args.batch_size,
        "n_batched": min(args.n, len(seqs)),
        "n_single": min(args.n_single, len(seqs)),
        "tokens_per_seq": round(b_tokens / min(args.n, len(seqs)), 1),
        "batched_tok_s": round(batched),
        "single_tok_s": round(single),
        "speedup": round(batched / single, 1),
        "batched_seq_s": round(min(args.n, len(seqs)) / b_time, 1),
        "max_tokens": encoder.max_tokens,
        "peak_rss_mib": round(peak_rss_mib()),
    }
    if original is not None:
        result["n_original"] = min(args.n_original, len(seqs))
        result["original_tok_s"] = round(original, 1)
        result["speedup_vs_original"] = round(batched / original, 1)
    if encoder.device.type == "cuda":
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(encoder.device) / 2**20)
    result["kernels"] = encoder.kernels
    result["load_before"] = round(os.getloadavg()[0], 2)
    if args.peak or args.agreement:
        plain = make("fp32", "plain") if (args.compare_plain or args.agreement) else None
        if args.peak:
            if args.cpu_time:
                CLOCK["now"] = time.process_time
                result["peak_clock"] = "process CPU time"
            if encoder.device.type != "cpu":
                ap.error("--peak measures the CPU's GEMM rate; run it with --device cpu")
            batch = seqs[: args.batch_size]
            result.update(
                measure_peak(
                    encoder, plain if args.compare_plain else None, batch, layer, args.rounds
                )
            )
        if args.agreement:
            result.update(agreement(encoder, plain, seqs[: args.batch_size], layer, args.agree_k))
    result["load_after"] = round(os.getloadavg()[0], 2)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(f"batched / one-per-pass throughput: {result['speedup']}x")
    if original is not None:
        print(
            f"batched / one-per-pass padded to {encoder.max_tokens} tokens (original study): "
            f"{result['speedup_vs_original']}x"
        )
    if "gemm_peak_gflops" in result:
        print(
            f"forward pass {result['forward_gflops']} GFLOP/s = "
            f"{result['forward_fraction_of_peak']:.0%} of the best fp32 GEMM rate measured in this "
            f"run ({result['gemm_peak_gflops']} GFLOP/s); end to end (embed) "
            f"{result['embed_fraction_of_peak']:.0%}"
        )
    if "kernels_speedup" in result:
        print(
            f"{encoder.kernels} kernels / plain torch layers (forward): "
            f"{result['kernels_speedup']}x"
        )
    if "top1_agreement" in result:
        print(
            f"vs fp32 plain: median relative error {result['hidden_median_rel_error']}, top-1 "
            f"agreement {result['top1_agreement']:.1%}, top-{args.agree_k} overlap "
            f"{result[f'top{args.agree_k}_overlap']:.1%}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
