"""``hsg models``: make tiny test models, inspect checkpoints, write hidden states.

Every expected failure (unknown model directory, unsupported checkpoint, bad input file,
invalid or over-long sequence) is reported as one line naming the culprit and a non-zero
exit status, never as a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hsg.cli.options import device_option, model_option, reference_option
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
    from hsg.models.tiny import make_tiny

    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise click.ClickException(f"{out_dir} is not empty (use --force to write into it)")
    try:
        path = make_tiny(
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
@click.option(
    "--dtype",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    default=None,
    help="[default: bf16 on GPU, fp32 on CPU]",
)
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
    from tqdm import tqdm

    from hsg.models.output import EmbeddingWriter
    from hsg.regions.readers import read_records

    encoder = _load(model, device, dtype)
    try:
        layer = encoder.model.check_layer(layer)
        if final_norm and layer != encoder.num_layers:
            raise ValueError(f"--final-norm applies to the last layer ({encoder.num_layers}) only")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc

    tokenizer = encoder.tokenizer
    rows = []
    try:
        for record in read_records(input_path, fmt=input_format, reference=reference):
            if window:
                rows.extend(tokenizer.encode_windows(record.sequence, record.id))
            else:
                rows.append(tokenizer.encode(record.sequence, record.id))
    except (InvalidSequenceError, SequenceTooLongError) as exc:
        raise click.ClickException(f"{input_path}: {exc}") from exc
    except ValueError as exc:  # hsg.ingest InputError: already names file and line
        raise click.ClickException(str(exc)) from exc

    width = max(len(r) for r in rows)
    metadata = {
        "model_id": encoder.model_id,
        "version": encoder.version,
        "layer": layer,
        "final_norm": final_norm,
        "checkpoint_hash": encoder.checkpoint_hash,
        "source": str(input_path),
    }
    with EmbeddingWriter(
        out, fmt, len(rows), width, encoder.hidden_size, [r.name for r in rows],
        tokenizer.pad_token_id, metadata,
    ) as writer, tqdm(total=len(rows), unit="seq", file=sys.stderr, desc="embed") as bar:  # fmt: skip
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            writer.write(encoder.embed_tokenized(chunk, layer, final_norm=final_norm))
            bar.update(len(chunk))
    n_tokens = sum(len(r.tokens) for r in rows)
    click.echo(
        f"wrote layer {layer} of {encoder.model_id} for {len(rows)} rows "
        f"({n_tokens} nucleotide tokens, d={encoder.hidden_size}) to {out}",
        err=True,
    )


def _load(model: str, device: str | None, dtype: str | None):
    from hsg.models.encoder import load_encoder

    try:
        return load_encoder(model, device=device, dtype=dtype)
    except MODEL_ERRORS as exc:
        raise click.ClickException(str(exc)) from exc
    except (RuntimeError, ValueError) as exc:  # bad --device / --dtype
        raise click.ClickException(f"cannot load {model!r}: {exc}") from exc
