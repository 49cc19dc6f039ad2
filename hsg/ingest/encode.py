"""One batch of records → per-sequence activation rows: the encoding step every engine shares.

`run_ingest` (one process, writing to Neo4j) and the Ray engine's actors (many workers,
writing activation shards) both call `encode_batch`, so the two paths cannot drift apart in
how tokens, top-k and the activation threshold turn into ACTIVATES rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hsg.regions.records import SequenceRecord


def top_features(
    latents: torch.Tensor, k: int, min_activation: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token, the k largest latents and their indices; entries ≤ min_activation are
    marked with index -1. k=1 is the study's argmax, but a zero latent never counts as an
    activation (the original code linked every token to feature 0 when all were zero)."""
    k = min(k, latents.shape[-1])
    values, indices = torch.topk(latents, k, dim=-1)
    indices = torch.where(values > min_activation, indices, torch.full_like(indices, -1))
    return values, indices


def activation_rows(tokens: list[str], values: torch.Tensor, indices: torch.Tensor) -> list[list]:
    """Rows [feature, position, token, activation, rank] for one sequence.

    Every token position is kept, repeated k-mers included (the original code kept only the
    last occurrence of each k-mer)."""
    rows = []
    vals = values.tolist()
    idx = indices.tolist()
    for position, token in enumerate(tokens):
        for rank, (feature, value) in enumerate(zip(idx[position], vals[position], strict=True)):
            if feature >= 0:
                rows.append([feature, position, token, float(value), rank])
    return rows


def encode_batch(
    encoder,
    sae,
    records: Sequence[SequenceRecord],
    layer: int,
    top_k: int,
    min_activation: float,
) -> list[list[list]]:
    """The activation rows of each record, in the order given (one list per record)."""
    if not records:
        return []
    out = encoder.embed([r.sequence for r in records], layer, names=[r.id for r in records])
    param = next(sae.parameters())
    hidden = out.hidden[out.content_mask].to(param.device)
    with torch.inference_mode():
        latents = sae.encode(hidden.to(param.dtype)).float().cpu()
    values, indices = top_features(latents, top_k, min_activation)
    result = []
    offset = 0
    for tokens in out.tokens:
        n = len(tokens)
        result.append(
            activation_rows(tokens, values[offset : offset + n], indices[offset : offset + n])
        )
        offset += n
    return result


def model_properties(encoder) -> dict:
    """The (:Model) node's properties, keyed by checkpoint hash (same-named directories
    stay apart); what `run_ingest` registers and what a shard manifest records."""
    return {
        "id": encoder.checkpoint_hash,
        "name": encoder.model_id,
        "version": encoder.version,
        "checkpoint_hash": encoder.checkpoint_hash,
        "num_layers": encoder.num_layers,
        "hidden_size": encoder.hidden_size,
    }


def sae_properties(sae, layer: int) -> dict:
    """The (:SAE) node's properties; see `model_properties`."""
    import json

    return {
        "id": sae.sae_id,
        "layer": layer,
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.d_sae,
        "architecture": sae.cfg.architecture,
        "config": json.dumps(sae.cfg.to_dict(), sort_keys=True, default=str),
    }
