"""The study's SAE: ReLU latents, loss = MSE + λ·L1 with λ warmed up linearly.

`z = ReLU(pre)` with `pre = (x - b_dec) @ W_enc + b_enc`. Latent j depends only on column j
of the encoder, so one feature is read without computing the other d_sae - 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from hsg.sae.architectures import ArchitectureSpec

if TYPE_CHECKING:
    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder


def validate(cfg: SAEConfig) -> None:
    """Every shape is valid; `k` is not used (and not required)."""


def activate(pre: torch.Tensor, cfg: SAEConfig) -> torch.Tensor:
    return torch.relu(pre)


def encode_feature(sae: SparseAutoencoder, x: torch.Tensor, j: int) -> torch.Tensor:
    """z_j from column j of W_enc alone: [..., d_in] @ [d_in] -> [...]."""
    return torch.relu((x - sae.b_dec) @ sae.W_enc[:, j] + sae.b_enc[j])


def init_scale(cfg: SAEConfig) -> float:
    # With random unit atoms, W_dec^T relu(W_dec v) ≈ (d_sae / 2 d_in) v, so an unscaled tied
    # ReLU SAE starts by overshooting every input several-fold; this scale makes the first
    # reconstructions about the right size.
    return min(1.0, 2.0 * cfg.d_in / cfg.d_sae)


SPEC = ArchitectureSpec(
    name="relu",
    validate=validate,
    activate=activate,
    init_scale=init_scale,
    uses_l1=True,
    encode_feature=encode_feature,
)
