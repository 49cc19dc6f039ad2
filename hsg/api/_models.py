"""Encoders: hidden states for notebooks and files, and tiny models for trying things."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hsg.api._load import PathLike, iter_regions, load_encoder

if TYPE_CHECKING:
    from hsg.models.encoder import EncodedBatch, Encoder


def make_tiny_model(
    out: PathLike,
    version: str = "v2",
    *,
    layers: int = 2,
    hidden: int = 32,
    heads: int = 4,
    intermediate: int | None = None,
    seed: int = 0,
) -> Path:
    """A tiny randomly initialised Nucleotide Transformer in the Hugging Face layout: the
    real loading code path, without a model hub. Deterministic given ``seed``."""
    from hsg.models.tiny import make_tiny

    return Path(
        make_tiny(
            out,
            version,
            layers=layers,
            hidden=hidden,
            heads=heads,
            intermediate=intermediate,
            seed=seed,
        )
    )


def embed(
    model: PathLike | Encoder,
    sequences: Sequence[str],
    layer: int,
    *,
    ids: Sequence[str] | None = None,
    final_norm: bool = False,
    device: str | None = None,
) -> EncodedBatch:
    """Hidden states of ``layer`` for a list of sequences, in memory.

    ``result.hidden`` is [B, T, d] with ``<cls>`` at position 0 and padding after each
    sequence; ``result.content_mask`` marks the nucleotide tokens (what the SAE reads) and
    ``result.tokens`` lists them. Layer 0 is the embedding output, i the output of block i.
    """
    encoder = load_encoder(model, device=device)
    layer = encoder.model.check_layer(layer)
    if final_norm and layer != encoder.num_layers:
        raise ValueError(f"final_norm applies to the last layer ({encoder.num_layers}) only")
    names = list(ids) if ids is not None else [f"seq{i}" for i in range(len(sequences))]
    return encoder.embed(list(sequences), layer, names=names, final_norm=final_norm)


@dataclass
class EmbedSummary:
    out: Path
    rows: int
    tokens: int
    layer: int
    model_id: str
    hidden_size: int


def embed_to_file(
    model: PathLike | Encoder,
    source: PathLike,
    layer: int,
    out: PathLike,
    *,
    fmt: str = "safetensors",
    input_format: str | None = None,
    reference: PathLike | None = None,
    batch_size: int = 32,
    window: bool = False,
    final_norm: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> EmbedSummary:
    """Write the hidden states of ``layer`` for every sequence of a regions file (the layout
    of `hsg.models.output`; `hsg sae train --activations` reads it)."""
    from hsg.fileio import ensure_writable
    from hsg.models.output import EmbeddingWriter

    ensure_writable(out, directory=fmt == "npy")
    encoder = load_encoder(model, device=device, dtype=dtype)
    layer = encoder.model.check_layer(layer)
    if final_norm and layer != encoder.num_layers:
        raise ValueError(f"--final-norm applies to the last layer ({encoder.num_layers}) only")
    tokenizer = encoder.tokenizer
    rows = []
    for record in iter_regions(source, fmt=input_format, reference=reference):
        if window:
            rows.extend(tokenizer.encode_windows(record.sequence, record.id))
        else:
            rows.append(tokenizer.encode(record.sequence, record.id))
    width = max(len(r) for r in rows)
    metadata = {
        "model_id": encoder.model_id,
        "version": encoder.version,
        "layer": layer,
        "final_norm": final_norm,
        "checkpoint_hash": encoder.checkpoint_hash,
        "source": str(source),
    }
    with EmbeddingWriter(
        out,
        fmt,
        len(rows),
        width,
        encoder.hidden_size,
        [r.name for r in rows],
        tokenizer.pad_token_id,
        metadata,
    ) as writer:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            writer.write(encoder.embed_tokenized(chunk, layer, final_norm=final_norm))
            if progress is not None:
                progress("embed", len(chunk), len(rows))
    return EmbedSummary(
        out=Path(out),
        rows=len(rows),
        tokens=sum(len(r.tokens) for r in rows),
        layer=layer,
        model_id=encoder.model_id,
        hidden_size=encoder.hidden_size,
    )
