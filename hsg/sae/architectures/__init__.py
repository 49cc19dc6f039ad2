"""The registry of SAE architectures: one module per architecture, one spec per module.

An architecture is everything that differs between sparse autoencoders that share the
`SparseAutoencoder` parameters (`W_enc`, `b_enc`, `W_dec`, `b_dec`) and its file format: how
the latents follow from the pre-activations (at inference and, if different, in training),
how one latent is read on its own, how the tied encoder is scaled at initialisation, which
penalty the loss carries (L1, L0 or none) and whether dead latents get the AuxK loss, which
extra tensors it keeps beside the four (thresholds; saved in the same safetensors file, so
an SAE without extras is written byte for byte as before), and which configs are valid.
Each public module of this package (`relu.py`, `topk.py`, `batchtopk.py`, `jumprelu.py`)
defines one `SPEC: ArchitectureSpec` whose `name` is the module's name; nothing else in
hsg names an architecture, so adding one is adding a module (and its test).

Modules are found by name without being imported, and imported on first use: listing the
names (the CLI's `--arch` choices) costs neither torch nor the modules themselves. Modules
whose name starts with an underscore are helpers, not architectures. Architectures defined
elsewhere (a test, a plugin) can be added at run time with `register_architecture`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hsg.config import ConfigError

if TYPE_CHECKING:
    import torch

    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder

__all__ = [
    "ArchitectureSpec",
    "ExtraTensor",
    "architecture_names",
    "get_architecture",
    "register_architecture",
    "unregister_architecture",
]


@dataclass(frozen=True)
class ExtraTensor:
    """A tensor an architecture keeps beside `W_enc`, `b_enc`, `W_dec` and `b_dec`.

    - `name`: its key in `sae.safetensors` and its attribute on the `SparseAutoencoder`;
    - `shape(cfg)`: its shape (`()` for a scalar);
    - `init(cfg)`: the value every element starts at, in the units of the raw activations
      (`cfg.input_scale` converts from the normalised units the defaults are stated in);
    - `trainable`: a parameter the optimizer updates (JumpReLU's log-thresholds), or else a
      buffer the architecture updates itself during training (BatchTopK's threshold).

    Extra tensors are saved, hashed, loaded and checkpointed with the weights, bit for bit,
    and are passed by name as keyword arguments to the spec's functions that take `**extra`.
    """

    name: str
    shape: Callable[[SAEConfig], tuple[int, ...]]
    init: Callable[[SAEConfig], float]
    trainable: bool


@dataclass(frozen=True)
class ArchitectureSpec:
    """What one SAE architecture decides; the `SparseAutoencoder` does the rest.

    - `name`: the value of `SAEConfig.architecture` (and of `hsg sae train --arch`).
    - `validate(cfg)`: raise `ConfigError` for a config this architecture cannot use (TopK
      needs 1 <= k <= d_sae). Called after the shape checks, so d_in and d_sae are positive.
    - `activate(pre, cfg, **extra)`: the latents z, [..., d_sae], from the pre-activations
      `(x - b_dec) @ W_enc + b_enc` (at inference; `extra` holds the extra tensors by name,
      none for an architecture without them, so `activate(pre, cfg)` is enough there).
    - `init_scale(cfg)`: the factor on the tied encoder at initialisation,
      `W_enc = scale * W_dec^T` (the random unit atoms are drawn the same way for all).
    - `uses_l1`: whether the loss is MSE + λ·L1 with λ warmed up over `l1_warmup_steps` (and
      early-stopping patience waits for the warm-up); if False the loss is MSE alone, λ is
      ignored and L1 is only reported.
    - `uses_k`: whether `SAEConfig.k` (active latents per token, `--k`) means anything here;
      training passes k only to architectures that use it, so other configs record none.
    - `encode_feature(sae, x, j)`: z_j alone, [...], for x already on the SAE's device and
      dtype; it must equal `encode(x)[..., j]`. Optional: None reads column j of the full
      `activate`, which is exact for any architecture; an architecture whose latent j depends
      only on pre-activation j (ReLU) gives a cheaper one.
    - `train_activate(pre, cfg, **extra)`: the latents during training, when they differ
      from inference (BatchTopK selects over the whole batch and updates its threshold
      buffer in place; JumpReLU lets the threshold gradient through a straight-through
      estimator). None: `activate`.
    - `extra_tensors`: the `ExtraTensor`s this architecture keeps (none by default).
    - `l0_penalty(pre, cfg, **extra)`: a differentiable stand-in for the mean L0, given when
      the loss is MSE + λ₀·L0 (`SAEConfig.l0_coefficient`, warmed up like λ); the objective
      for model selection then uses the measured L0.
    - `uses_auxk`: whether dead latents are trained on the AuxK loss (Gao et al. 2024: the
      top `d_in // 2` dead latents reconstruct the residual, weight `auxk_coefficient`).
    """

    name: str
    validate: Callable[[SAEConfig], None]
    activate: Callable[..., torch.Tensor]
    init_scale: Callable[[SAEConfig], float]
    uses_l1: bool
    uses_k: bool = False
    encode_feature: Callable[[SparseAutoencoder, torch.Tensor, int], torch.Tensor] | None = None
    train_activate: Callable[..., torch.Tensor] | None = None
    extra_tensors: tuple[ExtraTensor, ...] = ()
    l0_penalty: Callable[..., torch.Tensor] | None = None
    uses_auxk: bool = False

    @property
    def penalty(self) -> str:
        """Which sparsity term the loss carries: "l1", "l0" or "none"."""
        if self.uses_l1:
            return "l1"
        return "l0" if self.l0_penalty is not None else "none"


# Loaded and registered specs by name; module architectures enter on first use.
_specs: dict[str, ArchitectureSpec] = {}


def _module_names() -> list[str]:
    return [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]


def architecture_names() -> tuple[str, ...]:
    """Every known architecture's name, sorted; imports no architecture module."""
    return tuple(sorted(set(_module_names()) | set(_specs)))


def _load_module_spec(name: str) -> ArchitectureSpec:
    module = importlib.import_module(f"{__name__}.{name}")
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, ArchitectureSpec):
        raise TypeError(f"{module.__name__} defines no SPEC of type ArchitectureSpec")
    if spec.name != name:
        raise TypeError(f"{module.__name__}.SPEC is named {spec.name!r}; it must be {name!r}")
    return spec


def get_architecture(name: str) -> ArchitectureSpec:
    """The spec of architecture `name`; a `ConfigError` naming the known ones if none."""
    spec = _specs.get(name)
    if spec is not None:
        return spec
    if isinstance(name, str) and name in _module_names():
        spec = _specs[name] = _load_module_spec(name)
        return spec
    raise ConfigError(
        f"unknown SAE architecture {name!r} (known architectures: "
        f"{', '.join(architecture_names())})"
    )


def register_architecture(spec: ArchitectureSpec) -> ArchitectureSpec:
    """Add an architecture defined outside this package; its name must be new."""
    if spec.name in _specs or spec.name in _module_names():
        raise ValueError(f"SAE architecture {spec.name!r} is already registered")
    _specs[spec.name] = spec
    return spec


def unregister_architecture(name: str) -> None:
    """Remove an architecture added with `register_architecture` (modules cannot be)."""
    if name in _module_names():
        raise ValueError(f"SAE architecture {name!r} is a module of {__name__}; delete the file")
    if _specs.pop(name, None) is None:
        raise KeyError(f"SAE architecture {name!r} is not registered")
