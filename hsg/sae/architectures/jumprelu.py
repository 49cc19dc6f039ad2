"""JumpReLU SAE (Rajamanoharan et al. 2024): per-latent thresholds, L0 penalty.

`z_j = pre_j · H(pre_j - θ_j)` with a learned threshold θ_j > 0 per latent, kept as
`log_threshold` (the extra tensor, [d_sae], saved with the weights). The loss is
s²·MSE + λ₀·L0 (`SAEConfig.l0_coefficient`, warmed up like λ), L0 = the mean number of
active latents. H has no useful gradient, so both z and L0 get straight-through estimators
for θ (the pseudo-derivatives of the paper): with a rectangle kernel K of bandwidth ε,

    ∂z_j/∂θ_j  = -(θ_j / ε) · K((pre_j - θ_j) / ε),
    ∂H_j/∂θ_j  = -(1 / ε)   · K((pre_j - θ_j) / ε),

and no gradient from H to the pre-activations (z's gradient to pre_j is H itself).

Units: in the normalised inputs of the loss a token's distance to the mean is about
sqrt(d_in), and the constants below are stated relative to it: ε = `BANDWIDTH`·sqrt(d_in)
and θ starts at sqrt(λ₀·d_in), the activation at which one latent's squared contribution
(on its own) pays for its L0 cost (at least `MIN_INIT`·sqrt(d_in)). In raw units both are
divided by the input scale s.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from hsg.sae.architectures import ArchitectureSpec, ExtraTensor

if TYPE_CHECKING:
    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder

BANDWIDTH = 0.01
MIN_INIT = 1e-3


def bandwidth(cfg: SAEConfig) -> float:
    """ε in raw units."""
    return BANDWIDTH * math.sqrt(cfg.d_in) / cfg.scale


def initial_threshold(cfg: SAEConfig) -> float:
    """θ at initialisation, in raw units."""
    rel = max(math.sqrt(cfg.l0_coefficient), MIN_INIT)
    return rel * math.sqrt(cfg.d_in) / cfg.scale


def _kernel(pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
    return ((pre - theta).abs() < eps / 2).to(pre.dtype)


def _sum_to(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return grad.reshape(-1, like.shape[-1]).sum(dim=0)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):  # type: ignore[override]
        pre, theta = ctx.saved_tensors
        grad_pre = grad * (pre > theta)
        grad_theta = _sum_to(-(theta / ctx.eps) * _kernel(pre, theta, ctx.eps) * grad, theta)
        return grad_pre, grad_theta, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):  # type: ignore[override]
        pre, theta = ctx.saved_tensors
        grad_theta = _sum_to(-(1.0 / ctx.eps) * _kernel(pre, theta, ctx.eps) * grad, theta)
        return None, grad_theta, None


def validate(cfg: SAEConfig) -> None:
    """Every shape is valid; `k` is not used."""


def activate(pre: torch.Tensor, cfg: SAEConfig, *, log_threshold: torch.Tensor) -> torch.Tensor:
    return pre * (pre > log_threshold.exp())


def train_activate(
    pre: torch.Tensor, cfg: SAEConfig, *, log_threshold: torch.Tensor
) -> torch.Tensor:
    """The same latents as `activate`, with the straight-through gradient to θ."""
    return _JumpReLU.apply(pre, log_threshold.exp(), bandwidth(cfg))


def l0_penalty(pre: torch.Tensor, cfg: SAEConfig, *, log_threshold: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of the number of active latents, differentiable in θ."""
    step = _Step.apply(pre, log_threshold.exp(), bandwidth(cfg))
    return step.sum(dim=-1).mean()


def encode_feature(sae: SparseAutoencoder, x: torch.Tensor, j: int) -> torch.Tensor:
    """z_j from column j of W_enc and θ_j alone."""
    pre = (x - sae.b_dec) @ sae.W_enc[:, j] + sae.b_enc[j]
    return pre * (pre > sae.log_threshold[j].exp())


def init_scale(cfg: SAEConfig) -> float:
    # As ReLU: many latents may pass their threshold at first, so the tied encoder is
    # shrunk to keep the first reconstructions about the right size.
    return min(1.0, 2.0 * cfg.d_in / cfg.d_sae)


SPEC = ArchitectureSpec(
    name="jumprelu",
    validate=validate,
    activate=activate,
    init_scale=init_scale,
    uses_l1=False,
    encode_feature=encode_feature,
    train_activate=train_activate,
    extra_tensors=(
        ExtraTensor(
            "log_threshold",
            lambda cfg: (cfg.d_sae,),
            lambda cfg: math.log(initial_threshold(cfg)),
            trainable=True,
        ),
    ),
    l0_penalty=l0_penalty,
)
