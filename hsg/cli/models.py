"""``hsg models``: make tiny test models, inspect checkpoints, write hidden states.

Every expected failure (unknown model directory, unsupported checkpoint, bad input file,
invalid or over-long sequence) is reported as one line naming the culprit and a non-zero
exit status, never as a traceback.
"""

from __future__ import annotations

from pathlib import Path

import click

from hsg.cli.options import device_option, dtype_option, model_option, reference_option
from hsg.models.errors import (
    CheckpointError,
    InvalidSequenceError,
    ModelNotFoundError,
    SequenceTooLongError,
    UnsupportedModelError,
)

MODEL_ERRORS = (ModelNotFoundError, UnsupportedModelError, CheckpointError)


@click.group()
def models() -> None:
    """Nucleotide Transformer encoders: make tiny test models, inspect them, embed sequences."""


@models.command("make-tiny")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--version",
    "version",
    type=click.Choice(["v1", "v2"]),
    default="v2",
    show_default=True,
    help="NT generation to imitate.",
)
@click.option("--layers", type=click.IntRange(0), default=2, show_default=True)
@click.option("--hidden", type=click.IntRange(2), default=32, show_default=True)
@click.option("--heads", type=click.IntRange(1), default=4, show_default=True)
@click.option(
    "--intermediate",
    type=click.IntRange(1),
    default=None,
    help="Feed-forward width [default: 4 × hidden].",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Write into a non-empty OUT_DIR.")
def make_tiny_cmd(
    out_dir: Path,
    version: str,
    layers: int,
    hidden: int,
    heads: int,
    intermediate: int | None,
    seed: int,
    force: bool,
) -> None:
    """Write a tiny random NT model in the Hugging Face layout to OUT_DIR.

    Deterministic given --seed; loads with `hsg models embed --model OUT_DIR`.
    """
    from hsg import api

    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise click.ClickException(f"{out_dir} is not empty (use --force to write into it)")
    try:
        path = api.make_tiny_model(
            out_dir, version, layers=layers, hidden=hidden, heads=heads,
            intermediate=intermediate, seed=seed,
        )  # fmt: skip
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"wrote tiny NT {version} ({layers} layers, hidden {hidden}, {heads} heads) to {path}"
    )


@models.command("info")
@click.argument("model")
def info_cmd(model: str) -> None:
    """Print what MODEL (a directory or cached hub id) is, and the hash of its weights."""
    encoder = _load(model, "cpu", None)
    cfg = encoder.config
    click.echo(f"model_id        {encoder.model_id}")
    click.echo(f"version         NT {encoder.version}")
    click.echo(f"layers          {encoder.num_layers}")
    click.echo(f"hidden_size     {encoder.hidden_size}")
    click.echo(f"heads           {cfg.num_attention_heads}")
    click.echo(f"intermediate    {cfg.intermediate_size}")
    click.echo(f"max_tokens      {encoder.max_tokens}")
    click.echo(f"checkpoint      {', '.join(str(p) for p in encoder.weight_paths)}")
    click.echo(f"sha256          {encoder.checkpoint_hash}")


@models.command("embed")
@model_option()
@click.option(
    "--layer",
    type=int,
    required=True,
    help="0 = embeddings output, i = output of block i; negative counts from the end.",
)
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Output file (safetensors) or directory (npy).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["safetensors", "npy"]),
    default="safetensors",
    show_default=True,
)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option(
    "--input-format",
    type=click.Choice(["tsv", "fasta", "bed"]),
    default=None,
    help="Input format [default: from the extension].",
)
@reference_option
@click.option(
    "--window",
    is_flag=True,
    help="Cut sequences longer than the model's limit into windows (one row each).",
)
@click.option(
    "--final-norm",
    is_flag=True,
    help="Apply the final LayerNorm (HF last_hidden_state); last layer only.",
)
@device_option
@dtype_option
def embed_cmd(
    model: str,
    layer: int,
    input_path: Path,
    out: Path,
    fmt: str,
    batch_size: int,
    input_format: str | None,
    reference: Path | None,
    window: bool,
    final_norm: bool,
    device: str | None,
    dtype: str | None,
) -> None:
    """Write the hidden states of one layer for every sequence of INPUT (FASTA, TSV or BED).

    The output holds, per sequence (row): hidden states [T, d] with <cls> at position 0, the
    token ids, the attention and content masks, the base span of every token, and the
    sequence ids (metadata). See hsg.models.output for the layout and a reader.
    """
    from hsg import api
    from hsg.cli.errors import Bars

    try:
        with Bars() as bars:
            summary = api.embed_to_file(
                model,
                input_path,
                layer,
                out,
                fmt=fmt,
                input_format=input_format,
                reference=reference,
                batch_size=batch_size,
                window=window,
                final_norm=final_norm,
                device=device,
                dtype=dtype,
                progress=bars,
            )
    except MODEL_ERRORS as exc:
        raise click.ClickException(str(exc)) from exc
    except (InvalidSequenceError, SequenceTooLongError) as exc:
        raise click.ClickException(f"{input_path}: {exc}") from exc
    except (RuntimeError, ValueError) as exc:  # InputError names file and line; bad --dtype
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:  # hsg.fileio.OutputError, or the disk filling up while writing
        raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}") from exc
    click.echo(
        f"wrote layer {summary.layer} of {summary.model_id} for {summary.rows} rows "
        f"({summary.tokens} nucleotide tokens, d={summary.hidden_size}) to {out}",
        err=True,
    )


def _load(model: str, device: str | None, dtype: str | None):
    from hsg import api

    try:
        return api.load_encoder(model, device=device, dtype=dtype)
    except MODEL_ERRORS as exc:
        raise click.ClickException(str(exc)) from exc
    except (RuntimeError, ValueError) as exc:  # bad --device / --dtype
        raise click.ClickException(f"cannot load {model!r}: {exc}") from exc
