"""Classifier inputs: per-sequence matrices of layer-L hidden states or SAE latents.

A classifier input is one ``[n_tokens, C]`` matrix per sequence, content tokens only: the
``<cls>`` row is dropped (a row that is the same kind of thing in every sequence teaches the
classifier nothing about the sequence, and the study's code kept it), and padding is never
stored — batches are padded at collation time together with a boolean mask, so the
classifier can ignore padded positions exactly.

Latents of a wide SAE are stored sparse per sequence (a few dozen active features per token
out of thousands), which is what makes training on latents of a genome-scale set fit in
memory; they are made dense one mini-batch at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from hsg.sae.compat import check_compatible

if TYPE_CHECKING:
    from hsg.models.encoder import Encoder
    from hsg.sae.model import SparseAutoencoder

InputKind = Literal["hidden", "latents"]
INPUT_KINDS: tuple[str, ...] = ("hidden", "latents")
# Latent matrices wider than this are kept sparse between encoding and collation.
SPARSE_MIN_WIDTH = 1024


def content_view(
    hidden: torch.Tensor, content_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [B, T-1, d], mask [B, T-1])``: the rows after ``<cls>``, left-aligned as stored.

    The tokenizer puts ``<cls>`` at column 0 and content tokens right after it, so dropping
    column 0 keeps every sequence left-aligned and ``mask`` marks its content tokens.
    """
    if hidden.shape[:2] != content_mask.shape:
        raise ValueError(
            f"hidden {tuple(hidden.shape)} and content mask {tuple(content_mask.shape)} disagree"
        )
    return hidden[:, 1:], content_mask[:, 1:].bool()


def latents_of(sae: SparseAutoencoder, hidden: torch.Tensor) -> torch.Tensor:
    """SAE latents of every row, as float32 on the CPU (no gradients)."""
    with torch.inference_mode():
        return sae.encode(hidden).float().cpu()


def collate(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad per-sequence ``[n_i, C]`` matrices (dense or sparse) to ``(x [B,T,C], mask [B,T])``."""
    if not rows:
        raise ValueError("nothing to collate: no sequences")
    width = rows[0].shape[1]
    length = max(r.shape[0] for r in rows)
    x = torch.zeros(len(rows), length, width, dtype=torch.float32)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, r in enumerate(rows):
        n = r.shape[0]
        x[i, :n] = r.to_dense() if r.is_sparse else r
        mask[i, :n] = True
    return x, mask


@dataclass
class FeatureSet:
    """Classifier inputs of a list of sequences, one matrix each, in input order."""

    ids: list[str]
    rows: list[torch.Tensor]
    kind: str
    layer: int
    width: int

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, index: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return collate([self.rows[i] for i in index])


def encode_features(
    encoder: Encoder,
    sequences: Sequence[str],
    ids: Sequence[str],
    layer: int,
    kind: str = "hidden",
    sae: SparseAutoencoder | None = None,
    batch_size: int = 32,
) -> FeatureSet:
    """Encode every sequence once and keep its content rows of ``kind`` at ``layer``.

    For ``latents`` the SAE must read ``layer`` of this encoder's width (checked).
    """
    if kind not in INPUT_KINDS:
        raise ValueError(f"input kind must be one of {INPUT_KINDS}, got {kind!r}")
    if kind == "latents":
        if sae is None:
            raise ValueError("latents need an SAE")
        # the callers ran the strict check (with its --allow-model-mismatch); here only the
        # layer and width must hold
        check_compatible(encoder, sae, layer, allow_model_mismatch=True)
    if not sequences:
        raise ValueError("no sequences to encode")
    rows: list[torch.Tensor] = []
    width = encoder.hidden_size if kind == "hidden" else sae.cfg.d_sae  # type: ignore[union-attr]
    sparse = kind == "latents" and width >= SPARSE_MIN_WIDTH
    for batch in encoder.iter_embed(sequences, layer, ids, batch_size=batch_size):
        x, mask = content_view(batch.hidden, batch.content_mask)
        if kind == "latents":
            x = latents_of(sae, x)  # type: ignore[arg-type]
        for i in range(x.shape[0]):
            r = x[i, : int(mask[i].sum())].clone()
            rows.append(r.to_sparse() if sparse else r)
    return FeatureSet(ids=list(ids), rows=rows, kind=kind, layer=layer, width=width)
