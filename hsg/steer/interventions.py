"""The steering operator on SAE latents and its decoding back into hidden states.

The operator (the study's S4) for target feature j, floor δ and gain α, applied to the
latents ``z`` of every selected token position::

    z'_j = α · max(z_j, δ)          clamp the target to at least δ, then scale it by α
    z'_k = z_k / α      (k ≠ j)     scale every other feature by 1/α

so α > 1 makes the target dominate and α < 1 makes it recede. ``α = 0`` cannot mean the
formula (1/0): it is defined as *isolation* — every other feature is set to 0 and the target
keeps its clamped value ``max(z_j, δ)`` (multiplying it by 0 as well would erase everything
and decode to the bias, which says nothing about feature j). ``δ = -inf`` disables the
clamp. A separate ``ablate`` operation sets ``z'_j = 0`` and leaves the others alone: the S4
family cannot remove a feature without inflating all others.

Decoding always includes the decoder bias (the study dropped it). With ``add_error`` the
reconstruction error is added back: ``x' = x̂(z') + (x − x̂(z))``, computed as the
algebraically identical ``x + (z' − z) · W_dec`` so that an intervention that changes
nothing returns ``x`` bit for bit (``z' − z`` is exactly zero, and so is its product).
Without it ``x' = x̂(z')``. Positions outside the mask are never touched in either case.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from hsg.sae.model import SparseAutoencoder

KINDS = ("steer", "ablate")
POSITION_MODES = ("all", "active")


@dataclass(frozen=True)
class Intervention:
    """One edit of one feature: S4 steering with (δ = ``min_act``, α = ``alpha``) or ablation."""

    feature: int
    min_act: float = -math.inf
    alpha: float = 1.0
    kind: str = "steer"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"intervention kind must be one of {KINDS}, got {self.kind!r}")
        if self.feature < 0:
            raise ValueError(f"feature index must be >= 0, got {self.feature}")
        if math.isnan(self.alpha) or self.alpha < 0 or math.isinf(self.alpha):
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha}")
        if math.isnan(self.min_act):
            raise ValueError("min_act (δ) must be a number, not NaN")

    @property
    def label(self) -> str:
        if self.kind == "ablate":
            return "ablate"
        return f"δ={self.min_act:g} α={self.alpha:g}"


def steer_latents(z: torch.Tensor, feature: int, min_act: float, alpha: float) -> torch.Tensor:
    """The S4 operator on every row of ``z [..., d_sae]``, written as the formula.

    This is the definition the batched `apply_interventions` is tested against.
    """
    out = z * (1.0 / alpha) if alpha > 0 else torch.zeros_like(z)
    clamped = torch.clamp_min(z[..., feature], min_act)
    out[..., feature] = alpha * clamped if alpha > 0 else clamped
    return out


def apply_interventions(
    z: torch.Tensor,
    interventions: Sequence[Intervention],
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Row r of ``z [R, T, d_sae]`` edited by ``interventions[r]`` at ``positions[r]``.

    One call edits many (sequence, condition) rows with different features, floors and
    gains, which is what lets the steering grid run as a few large batches.
    ``positions [R, T]`` (bool) selects token positions; None means all of them.
    """
    if z.dim() != 3:
        raise ValueError(f"latents must be [rows, tokens, d_sae], got {tuple(z.shape)}")
    rows, length, width = z.shape
    if len(interventions) != rows:
        raise ValueError(f"{len(interventions)} interventions for {rows} rows")
    for iv in interventions:
        if iv.feature >= width:
            raise ValueError(f"feature {iv.feature} is out of range for an SAE of {width}")
    opts = {"device": z.device, "dtype": z.dtype}
    feature = torch.tensor([iv.feature for iv in interventions], device=z.device)
    min_act = torch.tensor([iv.min_act for iv in interventions], **opts)
    alpha = torch.tensor([iv.alpha for iv in interventions], **opts)
    ablate = torch.tensor([iv.kind == "ablate" for iv in interventions], device=z.device)
    positive = alpha > 0
    inv = torch.where(positive, 1.0 / torch.where(positive, alpha, 1.0), 0.0)
    inv = torch.where(ablate, 1.0, inv)
    edited = z * inv.view(rows, 1, 1)
    index = feature.view(rows, 1, 1).expand(rows, length, 1)
    clamped = torch.maximum(z.gather(-1, index).squeeze(-1), min_act.view(rows, 1))
    target = torch.where(positive.view(rows, 1), alpha.view(rows, 1) * clamped, clamped)
    target = torch.where(ablate.view(rows, 1), torch.zeros_like(target), target)
    edited.scatter_(-1, index, target.unsqueeze(-1))
    if positions is None:
        return edited
    if positions.shape != (rows, length):
        raise ValueError(
            f"positions {tuple(positions.shape)} do not match latents {(rows, length)}"
        )
    return torch.where(positions.to(z.device).bool().unsqueeze(-1), edited, z)


def decode_edit(
    sae: SparseAutoencoder,
    x: torch.Tensor,
    z: torch.Tensor,
    z_edited: torch.Tensor,
    positions: torch.Tensor | None = None,
    add_error: bool = True,
) -> torch.Tensor:
    """Hidden states ``x'`` from the edited latents (see the module docstring for the maths).

    ``x [R, T, d]`` are the hidden states ``z`` was encoded from; the result has x's device
    and dtype, and equals ``x`` exactly outside ``positions``.
    """
    if add_error:
        delta = (z_edited - z).to(device=sae.device, dtype=sae.dtype) @ sae.W_dec
        edited = x + delta.to(device=x.device, dtype=x.dtype)
    else:
        edited = sae.decode(z_edited).to(device=x.device, dtype=x.dtype)
    if positions is None:
        return edited
    return torch.where(positions.to(x.device).bool().unsqueeze(-1), edited, x)


@torch.no_grad()
def edit_hidden(
    sae: SparseAutoencoder,
    x: torch.Tensor,
    interventions: Sequence[Intervention],
    positions: torch.Tensor | None = None,
    add_error: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode ``x [R, T, d]``, edit row r by ``interventions[r]``, decode: ``(x', z')``."""
    z = sae.encode(x)
    z_edited = apply_interventions(z, interventions, positions)
    return decode_edit(sae, x, z, z_edited, positions, add_error), z_edited


def position_mask(
    content_mask: torch.Tensor,
    mode: str | int,
    z: torch.Tensor | None = None,
    feature: int | None = None,
) -> torch.Tensor:
    """Which token positions of ``[B, T]`` rows to edit.

    ``all``: every content token (never ``<cls>`` or padding). ``active``: content tokens
    where the target feature is already active (``z_j > 0``), i.e. amplify or suppress it
    where the model uses it. An integer ``i``: content token i only (0-based; rows shorter
    than that are left alone).
    """
    content = content_mask.bool()
    if isinstance(mode, int) or (isinstance(mode, str) and mode.lstrip("-").isdigit()):
        i = int(mode)
        if i < 0:
            raise ValueError(f"token position must be >= 0, got {i}")
        order = content.long().cumsum(1) - 1  # content-token index of every column
        return content & (order == i)
    if mode == "all":
        return content
    if mode == "active":
        if z is None or feature is None:
            raise ValueError("positions='active' needs the latents and the target feature")
        return content & (z[..., feature] > 0).to(content.device)
    raise ValueError(f"positions must be one of {POSITION_MODES} or a token index, got {mode!r}")
