"""TopK SAE: exactly k latents selected per token, ReLU on the selected values, MSE loss.

Sparsity is fixed by k, so the loss carries no L1 term (λ is ignored, L1 only reported);
latents that have stopped firing are revived by the AuxK loss (Gao et al. 2024).
Whether latent j is selected depends on every pre-activation of the token, so one feature
is read from the full encoding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from hsg.config import ConfigError
from hsg.sae.architectures import ArchitectureSpec

if TYPE_CHECKING:
    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder


def validate(cfg: SAEConfig) -> None:
    if cfg.k is None or not 1 <= cfg.k <= cfg.d_sae:
        raise ConfigError(f"topk needs 1 <= k <= d_sae={cfg.d_sae}, got k={cfg.k}")


def activate(pre: torch.Tensor, cfg: SAEConfig) -> torch.Tensor:
    assert cfg.k is not None  # validate() guarantees it
    values, indices = pre.topk(cfg.k, dim=-1, sorted=False)
    # ReLU on the selected values: exactly k latents are selected per token; one whose
    # pre-activation is negative contributes nothing rather than a negative atom.
    return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))


def encode_feature(sae: SparseAutoencoder, x: torch.Tensor, j: int) -> torch.Tensor:
    """Exact: the full pre-activations decide whether j is among the k selected."""
    return activate(sae.encode_pre(x), sae.cfg)[..., j]


def init_scale(cfg: SAEConfig) -> float:
    # The reconstruction sums only k atoms, so the tied encoder needs no shrinking.
    return 1.0


SPEC = ArchitectureSpec(
    name="topk",
    validate=validate,
    activate=activate,
    init_scale=init_scale,
    uses_l1=False,
    uses_k=True,
    encode_feature=encode_feature,
    uses_auxk=True,
)
