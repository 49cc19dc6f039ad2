"""Dependency maps: how one SAE feature at every token responds to every point mutation.

In-silico mutagenesis of one sequence: each base is replaced by each of the three other
bases (3·n mutants), and feature j is read at every token of every mutant. All mutants have
the reference's tokenization — a substitution inside a run of A/C/G/T changes the k-mer it
sits in and nothing else — so mutants are built by swapping one token id in the reference's
ids (no re-tokenizing) and run as large batches of equal-length rows, never one forward
pass per mutant.

Outputs, with Δ[p, a, t] = z_j(mutant p→a)[t] − z_j(reference)[t]:

- the base-level map ``M[p, q] = mean over a of |Δ[p, a, token(q)]|``: mutated base p
  (rows) against base q (columns), where token(q) is the token covering q (token offsets),
  so 6-mer tokens show as 6-base-wide stripes;
- per-base ``effect[p] = mean over a of Σ_t |Δ[p, a, t]|``: how much mutating p moves the
  feature anywhere;
- per-base ``spectral[p]``: the leading eigenvector of the symmetrised map
  ``A = (M + Mᵀ) / 2`` (non-negative, so by Perron–Frobenius its leading eigenvector can be
  taken non-negative), scaled to max 1. A base scores high when it is strongly coupled to
  other high-scoring bases, in either direction (mutating it moves them, or mutating them
  moves it): it is eigenvector centrality on the dependency graph, and it picks out the
  coupled block of the sequence that dominates the feature, where ``effect`` only ranks
  bases one by one. Computed by power iteration from ``effect`` (deterministic, O(n²) per
  step, no n³ eigendecomposition for long sequences).

Bases that are ``N`` are not mutated (their rows are NaN): turning an ``N`` into a base would
change the tokenization and misalign every token after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from hsg.models.encoder import Encoder
    from hsg.models.tokenizer import TokenizedSequence
    from hsg.sae.model import SparseAutoencoder

BASES = "ACGT"


@dataclass
class DependencyMap:
    """Feature activity of a reference and all its single-base mutants, and derived maps."""

    name: str
    sequence: str
    feature: int
    layer: int
    tokens: list[str]
    offsets: list[tuple[int, int]]
    reference: np.ndarray  # [T] feature activity per content token
    delta: np.ndarray  # [n, 3, T]; NaN rows for unmutated (N) positions
    alternatives: list[str]  # [n] the three alternative bases at p, in delta's order

    @property
    def token_of_base(self) -> np.ndarray:
        """[n] index of the content token that covers each base."""
        out = np.full(len(self.sequence), -1, dtype=np.int64)
        for t, (s, e) in enumerate(self.offsets):
            out[s:e] = t
        return out

    def base_matrix(self) -> np.ndarray:
        """``M [n, n]``: mean |Δ| over the alternatives, columns expanded to bases."""
        mean_abs = np.abs(self.delta).mean(axis=1)  # [n, T]
        return mean_abs[:, self.token_of_base]

    def effect(self) -> np.ndarray:
        return np.abs(self.delta).sum(axis=2).mean(axis=1)

    def own_token_delta(self) -> np.ndarray:
        """[n, 3] Δ at the token that contains the mutated base."""
        idx = self.token_of_base
        return self.delta[np.arange(len(idx)), :, idx]

    def spectral(self) -> np.ndarray:
        m = np.nan_to_num(self.base_matrix())
        return leading_eigenvector((m + m.T) / 2.0, start=np.nan_to_num(self.effect()))


def leading_eigenvector(
    a: np.ndarray, start: np.ndarray | None = None, iterations: int = 1000, tol: float = 1e-10
) -> np.ndarray:
    """Non-negative leading eigenvector of a symmetric non-negative matrix, max-scaled to 1.

    Power iteration on ``A + c·I`` (``c`` = the mean row sum) so that a bipartite structure,
    whose extreme eigenvalues have equal magnitude, cannot make the iteration oscillate; the
    shift does not change the eigenvectors. All zeros for an all-zero matrix.
    """
    n = a.shape[0]
    if n == 0 or not np.any(a):
        return np.zeros(n)
    v = np.ones(n) if start is None or not np.any(start) else np.abs(start).astype(np.float64)
    v /= np.linalg.norm(v)
    shifted = a + np.eye(n) * float(a.sum(axis=1).mean())
    for _ in range(iterations):
        w = shifted @ v
        w /= np.linalg.norm(w)
        if np.abs(w - v).max() < tol:
            v = w
            break
        v = w
    v = np.abs(v)
    return v / v.max()


def mutant_rows(
    encoder: Encoder, sequence: str, name: str = "sequence"
) -> tuple[TokenizedSequence, list[TokenizedSequence], list[tuple[int, str]]]:
    """The reference and its 3·n single-base mutants as tokenized rows, plus (position, alt)."""
    from hsg.models.tokenizer import TokenizedSequence

    seq = sequence.upper()
    ref = encoder.tokenizer.encode(seq, name)
    token_of = np.full(len(seq), -1, dtype=np.int64)
    for t, (s, e) in enumerate(ref.offsets):
        token_of[s:e] = t
    rows: list[TokenizedSequence] = []
    which: list[tuple[int, str]] = []
    for p, base in enumerate(seq):
        if base not in BASES:
            continue
        t = int(token_of[p])
        start = ref.offsets[t][0]
        for alt in BASES:
            if alt == base:
                continue
            tok = ref.tokens[t]
            new_tok = tok[: p - start] + alt + tok[p - start + 1 :]
            ids = list(ref.ids)
            ids[t + 1] = encoder.tokenizer.token_to_id(new_tok)
            tokens = list(ref.tokens)
            tokens[t] = new_tok
            rows.append(TokenizedSequence(f"{name}:{p}{base}>{alt}", ids, tokens, ref.offsets))
            which.append((p, alt))
    return ref, rows, which


def feature_activity(sae: SparseAutoencoder, hidden: torch.Tensor, feature: int) -> torch.Tensor:
    """z_j of every row and token, ``[B, T]``; ReLU SAEs compute only column j."""
    with torch.inference_mode():
        return sae.encode_feature(hidden, feature).float().cpu()


def dependency_map(
    encoder: Encoder,
    sae: SparseAutoencoder,
    feature: int,
    sequence: str,
    name: str = "sequence",
    layer: int | None = None,
    batch_size: int = 256,
) -> DependencyMap:
    """Mutagenesis of ``sequence`` read through feature ``feature`` of ``sae`` at its layer.

    ``batch_size`` rows per forward pass (1 reproduces the one-pass-per-mutant baseline of
    the benchmark).
    """
    sae_layer = sae.cfg.layer
    if layer is None:
        if sae_layer is None:
            raise ValueError(f"SAE {sae.sae_id} does not record its layer; pass layer=")
        layer = sae_layer
    elif sae_layer is not None and layer != sae_layer:
        raise ValueError(f"SAE {sae.sae_id} reads layer {sae_layer}, not layer {layer}")
    sae.check_input(encoder.hidden_size)
    if not 0 <= feature < sae.cfg.d_sae:
        raise ValueError(f"feature {feature} is outside 0..{sae.cfg.d_sae - 1}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ref, rows, which = mutant_rows(encoder, sequence, name)
    all_rows = [ref, *rows]
    acts = []
    for s in range(0, len(all_rows), batch_size):
        out = encoder.embed_tokenized(all_rows[s : s + batch_size], layer)
        acts.append(feature_activity(sae, out.hidden[:, 1:], feature))  # drop <cls>
    act = torch.cat(acts).numpy().astype(np.float64)  # [1 + 3n, T]
    reference, mutants = act[0], act[1:]
    n, t = len(sequence), len(ref.tokens)
    delta = np.full((n, 3, t), np.nan)
    alternatives = [""] * n
    slot = np.zeros(n, dtype=np.int64)
    for (p, alt), row in zip(which, mutants, strict=True):
        delta[p, slot[p]] = row - reference
        alternatives[p] += alt
        slot[p] += 1
    return DependencyMap(
        name=name,
        sequence=sequence.upper(),
        feature=feature,
        layer=layer,
        tokens=list(ref.tokens),
        offsets=list(ref.offsets),
        reference=reference,
        delta=delta,
        alternatives=alternatives,
    )


def summary(dm: DependencyMap) -> dict[str, Any]:
    eff = dm.effect()
    spec = dm.spectral()
    top = np.argsort(-np.nan_to_num(spec), kind="stable")[:10]
    return {
        "name": dm.name,
        "length": len(dm.sequence),
        "n_tokens": len(dm.tokens),
        "feature": dm.feature,
        "layer": dm.layer,
        "n_mutants": int(np.isfinite(dm.delta[:, :, 0]).sum()),
        "reference_activity": {
            "max": float(dm.reference.max()) if dm.reference.size else 0.0,
            "mean": float(dm.reference.mean()) if dm.reference.size else 0.0,
            "active_tokens": int((dm.reference > 0).sum()),
        },
        "max_abs_delta": float(np.nanmax(np.abs(dm.delta))) if np.isfinite(dm.delta).any() else 0.0,
        "top_spectral_positions": [int(i) for i in top],
        "top_effect_positions": [
            int(i) for i in np.argsort(-np.nan_to_num(eff), kind="stable")[:10]
        ],
    }
