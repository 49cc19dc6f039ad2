"""Finding, hashing and strictly matching HF checkpoint weights to the hsg backbone.

Hub checkpoints are ``EsmForMaskedLM`` state dicts: the backbone under ``esm.``, the MLM
head under ``lm_head.``. Only the backbone is used. Strictness is what makes a silent
mis-load impossible: every backbone parameter must be present with the right shape, and any
backbone key we do not know is an error. The exceptions are spelled out in
`KNOWN_UNUSED` — buffers older ``transformers`` versions saved, and the position table NT v2
checkpoints carry although rotary models never read it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch

from hsg.models.config import NTConfig
from hsg.models.errors import CheckpointError, ModelNotFoundError

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"
BACKBONE_PREFIX = "esm."

# Backbone keys that may be present and are ignored (regexes over prefix-free names).
KNOWN_UNUSED = (
    r"embeddings\.position_ids",  # buffer saved by transformers < 4.31
    r"encoder\.layer\.\d+\.attention\.self\.rotary_embeddings\.inv_freq",  # NT v2 custom code
    r"rotary_embeddings\.inv_freq",  # transformers >= 5 keeps one shared copy
    r"contact_head\..*",  # ESM contact predictor, unused by NT
    r"pooler\..*",  # EsmModel pooler, never trained for NT
)
_ROTARY_ONLY_UNUSED = r"embeddings\.position_embeddings\.weight"
# LayerNorm parameters under their TF-era names; transformers >= 5 writes these on save.
_LEGACY_NORM = re.compile(r"(.*(?:LayerNorm|layer_norm[\w]*))\.(gamma|beta)")


def weight_files(model_dir: Path) -> list[Path]:
    """The weight file(s) of a model directory: safetensors first, then PyTorch pickles.

    Sharded checkpoints are read through their ``*.index.json``.
    """
    for single, index in ((SAFETENSORS, SAFETENSORS_INDEX), (TORCH_BIN, TORCH_BIN_INDEX)):
        if (model_dir / single).is_file():
            return [model_dir / single]
        if (model_dir / index).is_file():
            try:
                weight_map = json.loads((model_dir / index).read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{model_dir / index}: not a weight index ({exc})") from exc
            shards = sorted({model_dir / name for name in weight_map.values()})
            absent = [str(s) for s in shards if not s.is_file()]
            if absent:
                raise CheckpointError(f"{model_dir / index}: missing shard files {absent}")
            return shards
    raise ModelNotFoundError(
        f"{model_dir}: no weights ({SAFETENSORS}, {TORCH_BIN} or a sharded index of either)"
    )


def read_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    """All tensors of the files on CPU; pickles are opened with ``weights_only=True``."""
    state: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            if path.name.endswith(".safetensors"):
                from safetensors.torch import load_file

                part = load_file(str(path), device="cpu")
            else:
                part = _torch_load(path)
        except Exception as exc:  # corrupt/truncated files raise a zoo of types
            raise CheckpointError(f"{path}: cannot read weights ({exc})") from exc
        state.update(part)
    return state


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    try:  # memory-mapped: a 10 GB shard is not read twice into RAM
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (pre-zip) pickles cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def sha256_of(files: list[Path], chunk: int = 1 << 20) -> str:
    """SHA-256 of the weight bytes (shards concatenated in name order).

    For a single file this equals ``sha256sum model.safetensors``, so a hash recorded in the
    graph can be checked with standard tools.
    """
    digest = hashlib.sha256()
    for path in sorted(files):
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def backbone_state(
    raw: dict[str, torch.Tensor],
    expected: dict[str, torch.Size],
    config: NTConfig,
    source: str,
) -> dict[str, torch.Tensor]:
    """Strip the ``esm.`` prefix, drop the head and known-unused keys, check the rest.

    ``expected`` maps the backbone's parameter names to shapes. A state dict saved from a
    bare ``EsmModel`` (no prefix) is accepted too, and so are LayerNorm ``gamma``/``beta``
    names (what ``transformers`` 5 writes) for ``weight``/``bias``.
    """
    has_prefix = any(k.startswith(BACKBONE_PREFIX) for k in raw)
    unused = list(KNOWN_UNUSED)
    if config.position_embedding_type == "rotary":
        unused.append(_ROTARY_ONLY_UNUSED)
    ignore = re.compile("|".join(f"(?:{p})" for p in unused))

    state: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, tensor in raw.items():
        if has_prefix:
            if not key.startswith(BACKBONE_PREFIX):
                continue  # lm_head.*, classifier.*: heads are not part of the encoder
            key = key[len(BACKBONE_PREFIX) :]
        legacy = _LEGACY_NORM.fullmatch(key)
        if legacy:
            key = f"{legacy[1]}.{'weight' if legacy[2] == 'gamma' else 'bias'}"
        if key in expected:
            state[key] = tensor
        elif not ignore.fullmatch(key):
            unexpected.append(key)

    missing = sorted(set(expected) - set(state))
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs config {tuple(expected[k])}"
        for k in sorted(state)
        if state[k].shape != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} parameters, e.g. {missing[:5]}")
    if unexpected:
        problems.append(f"unknown backbone keys {sorted(unexpected)[:5]}")
    if wrong:
        problems.append(f"shape mismatches: {wrong[:3]}")
    if problems:
        raise CheckpointError(
            f"{source}: weights do not match the NT {config.version} architecture in "
            f"config.json: " + "; ".join(problems)
        )
    return state
