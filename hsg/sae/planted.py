"""Planted-dictionary activations: data whose true sparse code is known, to check training.

`planted_dictionary` draws `n_atoms` random unit atoms in `d_in` dimensions and builds every
row as a non-negative combination of a few of them (between `active[0]` and `active[1]`
atoms, coefficients uniform in `coef`) on top of a common offset, plus Gaussian noise. An
SAE has found the dictionary when every atom has a decoder row (a unit atom of the SAE)
nearly parallel to it: `recovered_fraction` is the fraction of planted atoms whose best
cosine with a decoder row is at least `threshold` (0.9 by default).

The offset (a random vector of norm `offset`) and the overall `scale` make the data look
unlike unit-variance noise, as real hidden states do: training must find the centre and
must not depend on the units (the loss is normalised, see `hsg.sae.model`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PlantedData", "planted_dictionary", "recovered_fraction"]


@dataclass(frozen=True)
class PlantedData:
    x: np.ndarray  # [n, d_in] float32 activations
    atoms: np.ndarray  # [n_atoms, d_in] the unit atoms the rows were built from
    codes: np.ndarray  # [n, n_atoms] the true non-negative coefficients


def planted_dictionary(
    n: int,
    d_in: int = 64,
    n_atoms: int = 256,
    active: tuple[int, int] = (3, 5),
    coef: tuple[float, float] = (0.5, 1.5),
    noise: float = 0.01,
    offset: float = 2.0,
    scale: float = 1.0,
    seed: int = 0,
) -> PlantedData:
    """n rows of `scale * (offset_vector + sum of active atoms * coefficients + noise)`."""
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((n_atoms, d_in))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    centre = rng.standard_normal(d_in)
    centre *= offset / np.linalg.norm(centre)
    lo, hi = active
    n_active = rng.integers(lo, hi + 1, size=n)
    # each row's atoms: the first n_active of a random permutation (no repeats)
    order = np.argsort(rng.random((n, n_atoms)), axis=1)[:, :hi]
    values = rng.uniform(coef[0], coef[1], (n, hi)) * (np.arange(hi) < n_active[:, None])
    codes = np.zeros((n, n_atoms))
    np.put_along_axis(codes, order, values, axis=1)
    x = codes @ atoms + centre + noise * rng.standard_normal((n, d_in))
    return PlantedData(x=(scale * x).astype(np.float32), atoms=atoms, codes=codes)


def recovered_fraction(w_dec: np.ndarray, atoms: np.ndarray, threshold: float = 0.9) -> float:
    """Fraction of `atoms` with a row of `w_dec` at cosine >= threshold."""
    w = w_dec / np.maximum(np.linalg.norm(w_dec, axis=1, keepdims=True), 1e-12)
    a = atoms / np.linalg.norm(atoms, axis=1, keepdims=True)
    return float(((a @ w.T).max(axis=1) >= threshold).mean())
