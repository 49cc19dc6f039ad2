"""Quality: an SAE trained on a planted sparse dictionary finds the planted atoms.

Data: 64 unit-norm atoms in d=32; every sample is a non-negative combination of 3 of them
(coefficients in [0.5, 1.5]) plus Gaussian noise of std 0.01. An atom counts as recovered
when some decoder row has cosine >= 0.9 with it. Both architectures must recover >= 90 %
(they reach 100 % with these seeds). Fixed seeds, a few seconds on CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsg.sae.activations import ArrayStore
from hsg.sae.config import SAEConfig, TrainConfig
from hsg.sae.train import train_sae

D_IN, N_ATOMS, ACTIVE = 32, 64, 3


def planted_dictionary(n: int = 20000, noise: float = 0.01, seed: int = 0):
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((N_ATOMS, D_IN))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    idx = np.argsort(rng.random((n, N_ATOMS)), axis=1)[:, :ACTIVE]
    coef = rng.uniform(0.5, 1.5, (n, ACTIVE))
    x = np.einsum("nk,nkd->nd", coef, atoms[idx]) + noise * rng.standard_normal((n, D_IN))
    return x.astype(np.float32), atoms


def recovered_fraction(w_dec: np.ndarray, atoms: np.ndarray, threshold: float = 0.9) -> float:
    w = w_dec / np.linalg.norm(w_dec, axis=1, keepdims=True)
    best = (atoms @ w.T).max(axis=1)
    return float((best >= threshold).mean())


@pytest.mark.parametrize(
    "arch, extra",
    [
        ("relu", {"l1_coefficient": 0.02, "l1_warmup_steps": 300}),
        ("topk", {"k": ACTIVE}),
    ],
)
def test_sae_recovers_planted_atoms(arch, extra):
    x, atoms = planted_dictionary()
    store = ArrayStore(x, shard_size=4096)
    cfg = SAEConfig(d_in=D_IN, d_sae=2 * N_ATOMS, architecture=arch, lr=3e-3, seed=0, **extra)
    tcfg = TrainConfig(batch_size=128, epochs=6, patience=6, val_fraction=0.1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same numbers on every machine, and no fight for 2 cores
    try:
        result = train_sae(store, cfg, tcfg)
    finally:
        torch.set_num_threads(threads)
    frac = recovered_fraction(result.sae.W_dec.detach().numpy(), atoms)
    print(f"{arch}: recovered {frac:.3f} of planted atoms (cos >= 0.9)")
    assert frac >= 0.9
    assert result.history[-1]["val"]["fve"] > 0.75


def test_mixed_precision_training_recovers_the_atoms_too():
    """--amp runs the forward pass in bf16 autocast (here on the CPU, as on a GPU): the
    weights stay float32, and the planted atoms are still found."""
    x, atoms = planted_dictionary(n=8000)
    store = ArrayStore(x, shard_size=4096)
    cfg = SAEConfig(d_in=D_IN, d_sae=2 * N_ATOMS, architecture="topk", k=ACTIVE, lr=3e-3, seed=0)
    tcfg = TrainConfig(batch_size=128, epochs=6, patience=6, val_fraction=0.1, amp=True)
    assert TrainConfig.from_json(tcfg.to_json()).amp  # recorded with the run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_sae(store, cfg, tcfg)
    finally:
        torch.set_num_threads(threads)
    assert result.sae.W_dec.dtype == torch.float32
    assert recovered_fraction(result.sae.W_dec.detach().numpy(), atoms) >= 0.9
    assert result.history[-1]["val"]["fve"] > 0.75
