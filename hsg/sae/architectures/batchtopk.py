"""BatchTopK SAE (Bussmann et al. 2024): k latents per token on average, chosen per batch.

Training keeps the k × (tokens in the batch) largest pre-activations of the whole batch
(ReLU on them), so a token may use more latents than another when it needs them; the loss
is the MSE (+ AuxK for dead latents, as TopK). Selecting over a batch is not possible at
inference, where a token is encoded alone: there a global threshold θ decides,
`z = pre · [pre > θ]`. θ is a running estimate (an exponential moving average over training
batches, `THRESHOLD_MOMENTUM`) of the smallest positive activation the batch selection
kept; it is the extra tensor `threshold` (a scalar, saved with the weights). Latent j then
depends only on pre-activation j, so one feature is read from column j of the encoder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from hsg.config import ConfigError
from hsg.sae.architectures import ArchitectureSpec, ExtraTensor

if TYPE_CHECKING:
    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder

# Weight of the past in θ's moving average: about the last 10 batches count, so θ follows
# the pre-activations as they grow or shrink in training rather than lagging behind them.
THRESHOLD_MOMENTUM = 0.9


def validate(cfg: SAEConfig) -> None:
    if cfg.k is None or not 1 <= cfg.k <= cfg.d_sae:
        raise ConfigError(f"batchtopk needs 1 <= k <= d_sae={cfg.d_sae}, got k={cfg.k}")


def activate(pre: torch.Tensor, cfg: SAEConfig, *, threshold: torch.Tensor) -> torch.Tensor:
    """Inference: every pre-activation above the learned global threshold (θ >= 0)."""
    return pre * (pre > threshold)


def train_activate(pre: torch.Tensor, cfg: SAEConfig, *, threshold: torch.Tensor) -> torch.Tensor:
    """Training: the k × n largest of the n tokens' pre-activations; updates θ in place."""
    assert cfg.k is not None  # validate() guarantees it
    flat = pre.reshape(-1)
    n_tokens = flat.numel() // cfg.d_sae
    values, indices = flat.topk(min(cfg.k * n_tokens, flat.numel()), sorted=False)
    z = torch.zeros_like(flat).scatter(0, indices, torch.relu(values)).reshape(pre.shape)
    with torch.no_grad():
        positive = values[values > 0]
        if positive.numel():
            smallest = positive.min().to(threshold.dtype)
            if float(threshold) == 0.0:  # the first batch sets it: no bias towards 0
                threshold.copy_(smallest)
            else:
                threshold.lerp_(smallest, 1.0 - THRESHOLD_MOMENTUM)
    return z


def encode_feature(sae: SparseAutoencoder, x: torch.Tensor, j: int) -> torch.Tensor:
    """z_j from column j of W_enc and the global threshold."""
    pre = (x - sae.b_dec) @ sae.W_enc[:, j] + sae.b_enc[j]
    return pre * (pre > sae.threshold)


def init_scale(cfg: SAEConfig) -> float:
    # As TopK: about k atoms per token are summed, so the tied encoder needs no shrinking.
    return 1.0


SPEC = ArchitectureSpec(
    name="batchtopk",
    validate=validate,
    activate=activate,
    init_scale=init_scale,
    uses_l1=False,
    uses_k=True,
    encode_feature=encode_feature,
    train_activate=train_activate,
    # θ = 0 until the first training batch (an untrained SAE behaves as ReLU).
    extra_tensors=(ExtraTensor("threshold", lambda cfg: (), lambda cfg: 0.0, trainable=False),),
    uses_auxk=True,
)
