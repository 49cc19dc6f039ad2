"""Reconstruction and sparsity metrics accumulated over batches, in float64.

Training and `hsg sae eval` report the same numbers from this one accumulator, so a value in
`metrics.jsonl` and one printed by `eval` mean the same thing:

- `mse`: element-wise mean squared error, sum of (x_hat - x)^2 over tokens and d / (N * d_in)
  (the MSE term of the loss, see `model.py`);
- `fve`: fraction of variance explained, 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2, with
  mean(x) the per-dimension mean over the same tokens;
- `l0`: mean number of non-zero latents per token; `l1`: mean over tokens of sum |z|;
- `dead_latents`: latents that were never non-zero on any token seen (over the epoch in
  training); `dead_fraction` the same as a fraction of d_sae;
- `dense_latents`: latents non-zero on more than 10 % of the tokens seen (`DENSE_RATE`),
  `dense_fraction` the same as a fraction of d_sae — a latent that fires on every tenth
  token is rarely one interpretable feature, and many of them mean the sparsity is too weak;
- `loss`: token-weighted mean of the per-batch objective, when one was given.

The sums stay on the batches' device and are read once in `result`, so accumulating costs
no host synchronisation per training step on a GPU.
"""

from __future__ import annotations

import math
from typing import Any

import torch

DENSE_RATE = 0.1  # a latent firing on more than this fraction of tokens counts as dense


class MetricsAccumulator:
    """Streaming sums; memory is O(d_in + d_sae) whatever the number of tokens."""

    def __init__(self, d_in: int, d_sae: int) -> None:
        self.d_in, self.d_sae = d_in, d_sae
        self.n = 0
        self._sums: dict[str, torch.Tensor] | None = None
        self._has_loss = False

    def _init(self, device: torch.device) -> dict[str, torch.Tensor]:
        f64 = {"dtype": torch.float64, "device": device}
        return {
            "sse": torch.zeros((), **f64),
            "sum_x": torch.zeros(self.d_in, **f64),
            "sum_x2": torch.zeros((), **f64),
            "l0": torch.zeros((), **f64),
            "l1": torch.zeros((), **f64),
            "loss": torch.zeros((), **f64),
            "fired": torch.zeros(self.d_sae, dtype=torch.int64, device=device),
        }

    @torch.no_grad()
    def update(
        self,
        x: torch.Tensor,
        x_hat: torch.Tensor,
        z: torch.Tensor,
        loss: torch.Tensor | float | None = None,
    ) -> None:
        """Add one batch; `loss` is the batch's mean objective, weighted here by its size."""
        n = x.shape[0]
        if n == 0:
            return
        if self._sums is None:
            self._sums = self._init(x.device)
        s = self._sums
        x64 = x.detach().to(torch.float64)
        active = z.detach() != 0
        self.n += n
        s["sse"] += (x_hat.detach().to(torch.float64) - x64).pow(2).sum()
        s["sum_x"] += x64.sum(dim=0)
        s["sum_x2"] += x64.pow(2).sum()
        s["l0"] += active.sum()
        s["l1"] += z.detach().abs().sum(dtype=torch.float64)
        s["fired"] += active.sum(dim=0)
        if loss is not None:
            s["loss"] += torch.as_tensor(loss, dtype=torch.float64).detach() * n
            self._has_loss = True

    def result(self) -> dict[str, Any]:
        if self._sums is None or self.n == 0:
            return {"n_tokens": 0}
        s = {k: v.to("cpu") for k, v in self._sums.items()}
        sse = float(s["sse"])
        total_var = float(s["sum_x2"]) - float(s["sum_x"].pow(2).sum()) / self.n
        dead = int((s["fired"] == 0).sum())
        dense = int((s["fired"] > DENSE_RATE * self.n).sum())
        out: dict[str, Any] = {
            "n_tokens": self.n,
            "mse": sse / (self.n * self.d_in),
            "fve": 1.0 - sse / total_var if total_var > 0 else math.nan,
            "l0": float(s["l0"]) / self.n,
            "l1": float(s["l1"]) / self.n,
            "dead_latents": dead,
            "dead_fraction": dead / self.d_sae,
            "dense_latents": dense,
            "dense_fraction": dense / self.d_sae,
        }
        if self._has_loss:
            out["loss"] = float(s["loss"]) / self.n
        return out
