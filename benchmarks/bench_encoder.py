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

    python benchmarks/bench_encoder.py --size tiny
    python benchmarks/bench_encoder.py --size 50m --n 256 --n-single 64 --n-original 4
    python benchmarks/bench_encoder.py --device cuda --size 500m --dtype bf16 --n 4096
"""

from __future__ import annotations

import argparse
import json
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


def random_encoder(version: str, size: str, device: str | None, dtype: str | None) -> Encoder:
    config = tiny_config(version) if size == "tiny" else PRESETS[f"{version}-{size}"]
    with torch.device("meta"):
        expected = {k: v.shape for k, v in NucleotideTransformer(config).state_dict().items()}
    state = backbone_state(random_state_dict(config, seed=0), expected, config, "random")
    tokenizer = NucleotideTokenizer(config.version, max_tokens=config.max_tokens)
    return Encoder(
        build_model(config, state), tokenizer, f"random-{version}-{size}", (), device, dtype
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
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        encoder = load_encoder(args.model, args.device, args.dtype)
    elif args.size == "tiny" or f"{args.version}-{args.size}" in PRESETS:
        encoder = random_encoder(args.version, args.size, args.device, args.dtype)
    else:
        ap.error(f"no NT {args.version} preset of size {args.size} (have {sorted(PRESETS)})")
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
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(f"batched / one-per-pass throughput: {result['speedup']}x")
    if original is not None:
        print(
            f"batched / one-per-pass padded to {encoder.max_tokens} tokens (original study): "
            f"{result['speedup_vs_original']}x"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
