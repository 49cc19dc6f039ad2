"""The steering operator: its formula, exact no-ops, positions, and its effect on a classifier."""

from __future__ import annotations

import math

import pytest
import torch

from hsg.sae.config import SAEConfig
from hsg.sae.model import SparseAutoencoder
from hsg.steer.classifier import (
    ClassifierConfig,
    TrainConfig,
    stratified_split,
    train_classifier,
)
from hsg.steer.features import FeatureSet, collate
from hsg.steer.interventions import (
    Intervention,
    apply_interventions,
    decode_edit,
    edit_hidden,
    position_mask,
    steer_latents,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def random_sae(d_in: int = 12, d_sae: int = 20, seed: int = 0) -> SparseAutoencoder:
    sae = SparseAutoencoder(SAEConfig(d_in=d_in, d_sae=d_sae, layer=1, seed=seed))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(d_in, generator=gen))
        sae.b_enc.copy_(torch.randn(d_sae, generator=gen) * 0.3)
    return sae


def latents(rows: int = 3, tokens: int = 5, width: int = 8, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    z = torch.relu(torch.randn(rows, tokens, width, generator=gen))
    z[:, :, 2] = 0.0  # feature 2 is inactive everywhere
    return z


def by_hand(z_row: torch.Tensor, j: int, delta: float, alpha: float) -> torch.Tensor:
    """The operator element by element, straight from its definition."""
    out = z_row.clone()
    for t in range(z_row.shape[0]):
        for k in range(z_row.shape[1]):
            v = float(z_row[t, k])
            if k == j:
                clamped = max(v, delta)
                out[t, k] = alpha * clamped if alpha > 0 else clamped
            else:
                out[t, k] = v / alpha if alpha > 0 else 0.0
    return out


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 3.0])
@pytest.mark.parametrize("delta", [-math.inf, 0.0, 0.7, 4.0])
def test_operator_matches_formula(delta: float, alpha: float) -> None:
    z = latents()
    for row in range(z.shape[0]):
        expected = by_hand(z[row], 1, delta, alpha)
        torch.testing.assert_close(steer_latents(z[row], 1, delta, alpha), expected)
    batched = apply_interventions(z, [Intervention(1, delta, alpha)] * z.shape[0])
    torch.testing.assert_close(batched, steer_latents(z, 1, delta, alpha))


def test_mixed_rows_and_ablation() -> None:
    z = latents(rows=3)
    ivs = [Intervention(0, 1.5, 2.0), Intervention(4, kind="ablate"), Intervention(2, 0.0, 0.0)]
    out = apply_interventions(z, ivs)
    torch.testing.assert_close(out[0], steer_latents(z[0], 0, 1.5, 2.0))
    ablated = z[1].clone()
    ablated[:, 4] = 0.0
    assert torch.equal(out[1], ablated)
    # α = 0 isolates the target: others 0, target kept at max(z_j, δ) = 0 here
    assert torch.equal(out[2], torch.zeros_like(z[2]))


def test_positions_limit_the_edit() -> None:
    z = latents(rows=2, tokens=4)
    pos = torch.tensor([[False, True, False, False], [True, True, True, True]])
    out = apply_interventions(z, [Intervention(3, 5.0, 2.0)] * 2, pos)
    assert torch.equal(out[0, [0, 2, 3]], z[0, [0, 2, 3]])
    torch.testing.assert_close(out[0, 1], steer_latents(z[0, 1], 3, 5.0, 2.0))
    torch.testing.assert_close(out[1], steer_latents(z[1], 3, 5.0, 2.0))


def test_position_modes() -> None:
    content = torch.tensor([[False, True, True, True, False], [False, True, True, False, False]])
    assert torch.equal(position_mask(content, "all"), content)
    one = position_mask(content, 1)
    assert one.tolist() == [[False, False, True, False, False], [False, False, True, False, False]]
    assert not position_mask(content, 2)[1].any()  # the second row has no token 2
    z = torch.zeros(2, 5, 3)
    z[0, 1, 2] = 1.0
    z[1, 0, 2] = 1.0  # <cls> position is never selected
    assert position_mask(content, "active", z, 2).tolist() == [
        [False, True, False, False, False],
        [False] * 5,
    ]


def test_no_intervention_reproduces_hidden_states_exactly() -> None:
    sae = random_sae()
    x = torch.randn(4, 6, 12, generator=torch.Generator().manual_seed(3)) * 3
    z = sae.encode(x).detach()
    # with the error term, an unchanged z gives back x bit for bit ...
    assert torch.equal(decode_edit(sae, x, z, z.clone(), add_error=True), x)
    # ... although the reconstruction alone is far from x
    assert not torch.allclose(sae.decode(z).detach(), x, atol=1e-3)


@pytest.mark.parametrize("delta", [-math.inf, 0.0])
def test_alpha_one_on_an_inactive_feature_is_exact(delta: float) -> None:
    sae = random_sae()
    with torch.no_grad():
        sae.b_enc[5] = -100.0  # feature 5 is never active
    x = torch.randn(3, 7, 12, generator=torch.Generator().manual_seed(4))
    edited, z_edit = edit_hidden(sae, x, [Intervention(5, delta, 1.0)] * 3)
    assert torch.equal(edited, x)
    assert torch.equal(z_edit, sae.encode(x))


def test_decoding_includes_bias_and_error_term() -> None:
    sae = random_sae()
    x = torch.randn(2, 3, 12, generator=torch.Generator().manual_seed(5))
    iv = [Intervention(7, 2.0, 1.5)] * 2
    z = sae.encode(x).detach()
    z_edit = apply_interventions(z, iv)
    with_error, _ = edit_hidden(sae, x, iv, add_error=True)
    without, _ = edit_hidden(sae, x, iv, add_error=False)
    x_hat_edit = z_edit @ sae.W_dec.detach() + sae.b_dec.detach()
    torch.testing.assert_close(without, x_hat_edit)
    torch.testing.assert_close(with_error, x_hat_edit + (x - sae.decode(z).detach()))
    # positions outside the mask stay exactly as they were, with or without the error term
    pos = torch.zeros(2, 3, dtype=torch.bool)
    pos[:, 1] = True
    partial, _ = edit_hidden(sae, x, iv, pos, add_error=False)
    assert torch.equal(partial[:, [0, 2]], x[:, [0, 2]])


def test_bad_interventions_are_rejected() -> None:
    with pytest.raises(ValueError, match="alpha"):
        Intervention(0, 0.0, -1.0)
    with pytest.raises(ValueError, match="kind"):
        Intervention(0, kind="boost")
    with pytest.raises(ValueError, match="out of range"):
        apply_interventions(latents(width=4), [Intervention(9)] * 3)


# ---------------------------------------------------------------------- planted feature


def planted_setup(seed: int = 0):
    """Hidden states built from an exact SAE where feature J alone marks the positives."""
    d_in, d_sae, j = 24, 12, 4
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d_in, d_in, generator=gen, dtype=torch.float64))
    atoms = q[:d_sae].float()  # orthonormal rows: encode(decode(z)) == z for z >= 0
    sae = SparseAutoencoder(SAEConfig(d_in=d_in, d_sae=d_sae, layer=1))
    with torch.no_grad():
        sae.W_dec.copy_(atoms)
        sae.W_enc.copy_(atoms.t())
        sae.b_enc.zero_()
        sae.b_dec.copy_(torch.randn(d_in, generator=gen))
    rows, labels, ids = [], [], []
    for i in range(160):
        n = int(torch.randint(6, 14, (1,), generator=gen))
        z = torch.zeros(n, d_sae)
        for t in range(n):  # two background features per token, never J
            others = [k for k in torch.randperm(d_sae, generator=gen).tolist() if k != j][:2]
            z[t, others] = 0.5 + torch.rand(2, generator=gen) * 1.5
        positive = i % 2 == 0
        if positive:
            z[torch.randperm(n, generator=gen)[:2], j] = 3.0
        rows.append(z @ atoms + sae.b_dec.detach())
        labels.append(positive)
        ids.append(f"s{i}")
    return sae, j, FeatureSet(ids, rows, "hidden", 1, d_in), labels


def test_ablating_the_planted_feature_collapses_and_amplifying_raises() -> None:
    sae, j, feats, labels = planted_setup()
    split = stratified_split(feats.ids, labels, seed=0)
    cfg = ClassifierConfig(d_in=feats.width, input_kind="hidden", layer=1, positive_label="p")
    result = train_classifier(feats, labels, split, cfg, TrainConfig(epochs=25, lr=3e-3))
    assert result.metrics["test"]["auroc"] > 0.95
    clf = result.model
    pos_idx = [i for i, y in enumerate(labels) if y]
    neg_idx = [i for i, y in enumerate(labels) if not y]

    def probs(index, ivs=None):
        x, mask = collate([feats.rows[i] for i in index])
        if ivs is not None:
            x, _ = edit_hidden(sae, x, [ivs] * len(index), mask)
        return clf.predict_proba(x, mask)

    base_pos, base_neg = probs(pos_idx), probs(neg_idx)
    assert base_pos.mean() > 0.8 and base_neg.mean() < 0.2
    ablated = probs(pos_idx, Intervention(j, kind="ablate"))
    assert ablated.mean() < 0.2  # positives now look like negatives
    raised = probs(neg_idx, Intervention(j, 3.0, 1.0))
    assert raised.mean() > 0.8  # negatives with the feature switched on look positive
    assert probs(neg_idx, Intervention(j, 1.0, 2.0)).mean() > base_neg.mean()
