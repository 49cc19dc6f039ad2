"""Options shared by every command that encodes sequences, so they read and behave alike.

`hsg ingest`, `sae`, `classifier`, `steer`, `depmap`, `correlate` and `models embed` all take
an encoder, a torch device and (for BED input) a reference FASTA. Declared once here, the
help texts cannot drift apart, and ``--device`` is checked and resolved once, before any
model is loaded: a typo or a missing GPU fails in the first second with the option named,
and every part of one command (encoder, SAE, classifier) lands on the same device.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

DEVICE_HELP = "torch device: cpu, cuda, cuda:1 … [default: cuda when available, else cpu]."


def resolve_device_name(value: str | None) -> str:
    """``None``/``auto`` → the encoder's default device; others checked, kept."""
    from hsg.models.encoder import check_device

    return check_device(value)


def _device_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    try:
        return resolve_device_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc


def device_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--device", callback=_device_callback, help=DEVICE_HELP)(func)


DTYPE_HELP = (
    "Encoder precision: fp32, bf16 or fp16 [default: bf16 on GPU, fp32 on CPU]. bf16 also "
    "runs on CPUs with AVX512-BF16/AMX (about 2-3x faster than fp32 there, hidden states "
    "within ~1% and top features mostly unchanged: benchmarks/bench_encoder.py --agreement)."
)


def dtype_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--dtype``, beside ``--device``: the encoder's compute precision."""
    return click.option(
        "--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default=None, help=DTYPE_HELP
    )(func)


def reference_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--reference",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Reference FASTA for BED input (indexed with pyfaidx on first use).",
    )(func)


def model_option(
    dest: str = "model", help: str | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--model``, required; ``help`` replaces the standard text where the model must match."""
    return click.option(
        "--model",
        dest,
        required=True,
        help=help or "Nucleotide Transformer: a local Hugging Face directory (or a cached hub id).",
    )


def allow_mismatch_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--allow-model-mismatch``: the one way past `hsg.sae.compat.check_compatible`'s hash check."""
    return click.option(
        "--allow-model-mismatch",
        is_flag=True,
        help="Use an SAE trained on another checkpoint of the encoder anyway (a warning, not an "
        "error). Layer and width must still match.",
    )(func)
