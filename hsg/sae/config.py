"""Typed, JSON round-tripping configuration of a sparse autoencoder and of its training run.

The SAE config travels with the weights (`cfg.json` beside `sae.safetensors`), so it carries
the provenance a graph node needs to be traced back to: which encoder model, version,
checkpoint and layer produced the activations, and how that layer was read (`hook`). Unknown
keys are rejected rather than ignored, because a silently dropped key is how a config written
by a newer or different tool ends up describing a different model than the one loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hsg.config import ConfigError, JsonConfig
from hsg.sae.architectures import get_architecture

if TYPE_CHECKING:
    from hsg.sae.architectures import ArchitectureSpec

__all__ = ["ConfigError", "SAEConfig", "TrainConfig"]

DTYPES: tuple[str, ...] = ("float32", "float64", "bfloat16", "float16")

# How a layer's activations are read. Layer 0 is the embedding output and layer i the output
# of transformer block i (the study's code was off by one here), and only content tokens are
# kept: the `<cls>` row would make one feature touch every sequence, padding is not sequence.
DEFAULT_HOOK = "hidden_states[layer] (0=embeddings, i=output of block i); content tokens only"

FORMAT_VERSION = 1
# `SAEConfig.id_from`: "checkpoint" (new SAEs) or "model_id" (SAEs saved before it existed)
ID_SOURCES: tuple[str, ...] = ("checkpoint", "model_id")
# `Encoder.checkpoint_hash` of an encoder whose weights were never written to a file
UNSAVED_CHECKPOINT = "unsaved"


@dataclass(frozen=True)
class SAEConfig(JsonConfig):
    """Shape, objective and provenance of one sparse autoencoder.

    `lr` and `seed` live here, not only in the training config, because they are part of what
    made these weights: the seed fixes the initialisation, and both are needed to reproduce
    the dictionary. `architecture` names a module of `hsg.sae.architectures`, which also
    validates the fields it uses (TopK's `k`). `l1_coefficient` is the λ of the ReLU
    objective (see `model.py` for the exact normalisation); architectures without the L1
    term (TopK) ignore it in the loss and only report L1. `l0_coefficient` is the same for
    the L0 penalty of JumpReLU, `auxk_coefficient` the weight of the AuxK loss of the
    architectures that use it (TopK, BatchTopK).

    `input_scale` (s) is how training normalised the activations: the loss is that of the
    SAE applied to `s * x` (s makes the mean squared distance of a token to the data's mean
    equal to d_in, so every λ means the same on every model and layer), while the weights
    stay in the units of `x` — the SAE reads and writes raw activations and its atoms stay
    unit-norm. None (SAEs saved before it existed, `--no-normalize`) means 1.
    The SAE config defaults here are the historical ones; `hsg.api.TRAIN_DEFAULTS` holds
    the defaults `hsg sae train` and `hsg.api.train_sae` use.
    `weights_sha256` is filled in by `SparseAutoencoder.save` and checked by `load`.
    """

    d_in: int
    d_sae: int
    architecture: str = "relu"
    k: int | None = None
    l1_coefficient: float = 1e-3
    l1_warmup_steps: int = 1000
    l0_coefficient: float = 1e-3
    auxk_coefficient: float = 0.03125
    input_scale: float | None = None
    lr: float = 1e-4
    seed: int = 0
    dtype: str = "float32"
    # provenance of the activations the SAE reads
    model_id: str | None = None
    model_version: str | None = None
    layer: int | None = None
    encoder_checkpoint_hash: str | None = None
    hook: str = DEFAULT_HOOK
    # filled by save(); a content hash of sae.safetensors
    weights_sha256: str | None = None
    format_version: int = FORMAT_VERSION
    # what names the encoder in `sae_id`: its checkpoint hash, or (SAEs saved before ids were
    # keyed by the hash, read back with `from_dict`) the model id, so their ids never change
    id_from: str = "checkpoint"

    def __post_init__(self) -> None:
        if self.d_in <= 0 or self.d_sae <= 0:
            raise ConfigError(f"d_in and d_sae must be positive, got {self.d_in}, {self.d_sae}")
        get_architecture(self.architecture).validate(self)
        if self.l1_coefficient < 0:
            raise ConfigError(f"l1_coefficient must be >= 0, got {self.l1_coefficient}")
        if self.l0_coefficient < 0:
            raise ConfigError(f"l0_coefficient must be >= 0, got {self.l0_coefficient}")
        if self.auxk_coefficient < 0:
            raise ConfigError(f"auxk_coefficient must be >= 0, got {self.auxk_coefficient}")
        if self.input_scale is not None and not 0 < self.input_scale < float("inf"):
            raise ConfigError(f"input_scale must be positive and finite, got {self.input_scale}")
        if self.l1_warmup_steps < 0:
            raise ConfigError(f"l1_warmup_steps must be >= 0, got {self.l1_warmup_steps}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.layer is not None and self.layer < 0:
            raise ConfigError(f"layer must be >= 0, got {self.layer}")
        if self.id_from not in ID_SOURCES:
            raise ConfigError(f"id_from must be one of {ID_SOURCES}, got {self.id_from!r}")
        if self.format_version != FORMAT_VERSION:
            raise ConfigError(
                f"SAE config format_version {self.format_version} is not supported "
                f"(this hsg reads version {FORMAT_VERSION})"
            )

    @property
    def scale(self) -> float:
        """The input normalisation factor s (1 when none was recorded)."""
        return 1.0 if self.input_scale is None else float(self.input_scale)

    @property
    def spec(self) -> ArchitectureSpec:
        """The registry's spec of this config's architecture."""
        return get_architecture(self.architecture)

    def replace(self, **changes: Any) -> SAEConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAEConfig:
        """As `JsonConfig.from_dict`; a config without `id_from` was written before SAE ids
        were keyed by the checkpoint hash and keeps its model-id based id (graphs, steering
        files and classifiers already refer to it)."""
        if isinstance(data, dict) and "id_from" not in data:
            data = {**data, "id_from": "model_id"}
        return super().from_dict(data)


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """How the SAE is fitted; not needed to use the SAE, so it is kept out of `cfg.json`.

    The validation split is by sequence (a seeded hash of the sequence id), never by token:
    tokens of one sequence are strongly correlated, and a token-level split would let the
    validation loss see its training neighbours.
    """

    batch_size: int = 1024
    epochs: int = 10
    patience: int = 3
    val_fraction: float = 0.1
    shuffle_buffer_shards: int = 4
    min_delta: float = 0.0
    min_rel_delta: float = 0.0
    normalize: bool = True
    device: str = "cpu"
    # bf16 autocast of the forward pass (weights, gradients and Adam stay float32): the
    # matmuls run on a GPU's tensor cores or a CPU's AMX/AVX512-BF16 units
    amp: bool = False

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}")
        if self.epochs <= 0:
            raise ConfigError(f"epochs must be positive, got {self.epochs}")
        if self.patience <= 0:
            raise ConfigError(f"patience must be positive, got {self.patience}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.min_rel_delta < 0 or self.min_delta < 0:
            raise ConfigError("min_delta and min_rel_delta must be >= 0")
        if self.shuffle_buffer_shards <= 0:
            raise ConfigError(
                f"shuffle_buffer_shards must be positive, got {self.shuffle_buffer_shards}"
            )

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
