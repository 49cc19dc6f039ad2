"""Tiny, randomly initialised NT models laid out exactly like the hub checkpoints.

Tests, demos and CI need an encoder without downloading gigabytes. A tiny model directory
has the same files (``config.json`` with the official keys, ``model.safetensors`` with
``EsmForMaskedLM`` parameter names including the MLM head, ``vocab.txt`` and the tokenizer
JSON files), so every code path that reads a real checkpoint is exercised.

The initialisation is deliberately *not* HF's (normal, std 0.02): with such small weights
every hidden state is nearly the same tiny vector and a numerical comparison passes whatever
the maths. Weights are scaled by 1/sqrt(fan_in), embeddings are unit normal and LayerNorms
are perturbed, so activations are O(1) and layers differ. Same seed, same bytes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hsg.models.checkpoint import BACKBONE_PREFIX, SAFETENSORS
from hsg.models.config import NTConfig, v1_config, v2_config
from hsg.models.nucleotide_transformer import NucleotideTransformer
from hsg.models.tokenizer import NucleotideTokenizer

DEFAULT_LAYERS = 2
DEFAULT_HIDDEN = 32
DEFAULT_HEADS = 4


def tiny_config(
    version: str = "v2",
    layers: int = DEFAULT_LAYERS,
    hidden: int = DEFAULT_HIDDEN,
    heads: int = DEFAULT_HEADS,
    intermediate: int | None = None,
) -> NTConfig:
    """A small config of one generation; ``intermediate`` defaults to 4 × hidden (NT's ratio)."""
    shape = dict(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=intermediate if intermediate is not None else 4 * hidden,
    )
    if version == "v1":
        return v1_config(**shape)
    if version == "v2":
        return v2_config(**shape)
    raise ValueError(f"unknown NT version {version!r} (expected 'v1' or 'v2')")


def _param_shapes(config: NTConfig) -> dict[str, tuple[int, ...]]:
    """Checkpoint key -> shape, in a fixed order, as an ``EsmForMaskedLM`` would save them."""
    with torch.device("meta"):
        backbone = NucleotideTransformer(config).state_dict()
    shapes = {BACKBONE_PREFIX + k: tuple(v.shape) for k, v in backbone.items()}
    d, v = config.hidden_size, config.vocab_size
    if config.position_embedding_type == "rotary":
        # NT v2 checkpoints carry a (never read) position table; keep the layout identical.
        shapes[BACKBONE_PREFIX + "embeddings.position_embeddings.weight"] = (
            config.max_position_embeddings,
            d,
        )
    shapes.update(
        {
            "lm_head.dense.weight": (d, d),
            "lm_head.dense.bias": (d,),
            "lm_head.layer_norm.weight": (d,),
            "lm_head.layer_norm.bias": (d,),
            "lm_head.decoder.weight": (v, d),
            "lm_head.bias": (v,),
        }
    )
    return shapes


def random_state_dict(config: NTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic random weights under the official checkpoint key names (float32)."""
    gen = torch.Generator().manual_seed(seed)

    def normal(shape: tuple[int, ...], std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, generator=gen) * std + mean

    state: dict[str, torch.Tensor] = {}
    for key, shape in _param_shapes(config).items():
        if "norm" in key.lower():
            t = normal(shape, 0.1, 1.0 if key.endswith("weight") else 0.0)
        elif key.endswith("embeddings.weight"):
            t = normal(shape, 1.0)
            if "word_embeddings" in key or "position_embeddings" in key:
                t[config.pad_token_id] = (
                    0.0  # padding_idx rows are zero, as nn.Embedding keeps them
                )
        elif key.endswith("weight"):
            t = normal(shape, shape[-1] ** -0.5)
        else:  # biases
            t = normal(shape, 0.1)
        state[key] = t.contiguous()
    return state


def save_model_dir(out_dir: str | Path, config: NTConfig, state: dict[str, torch.Tensor]) -> Path:
    """Write config.json, model.safetensors and the tokenizer files of ``config.version``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config.save_hf(out)
    save_file(state, str(out / SAFETENSORS), metadata={"format": "pt"})
    NucleotideTokenizer(config.version, max_tokens=config.max_tokens).save_pretrained(out)
    return out


def make_tiny(
    out_dir: str | Path,
    version: str = "v2",
    *,
    layers: int = DEFAULT_LAYERS,
    hidden: int = DEFAULT_HIDDEN,
    heads: int = DEFAULT_HEADS,
    intermediate: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny random NT model directory that `load_encoder` (and HF) can read."""
    config = tiny_config(version, layers, hidden, heads, intermediate)
    return save_model_dir(out_dir, config, random_state_dict(config, seed))
