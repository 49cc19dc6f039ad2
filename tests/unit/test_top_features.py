"""`top_features`: per token the k largest SAE latents, and a zero latent is never an activation.

The original study linked every token whose latents were all zero to feature 0 (argmax of a
zero row). Here an entry becomes an activation only when it is strictly greater than
`min_activation`; everything else is marked with index -1 and written nowhere.
"""

from __future__ import annotations

import pytest
import torch

from hsg.ingest.pipeline import activation_rows, top_features


def latents(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


@pytest.mark.parametrize("k", [1, 3])
def test_all_zero_row_has_no_activation(k: int) -> None:
    values, indices = top_features(latents([0.0, 0.0, 0.0, 0.0]), k=k, min_activation=0.0)
    assert indices.tolist() == [[-1] * k]
    assert values.tolist() == [[0.0] * k]


def test_zero_row_next_to_an_active_row() -> None:
    z = latents([0.0, 0.0, 0.0], [0.0, 2.0, 0.0])
    _, indices = top_features(z, k=1, min_activation=0.0)
    assert indices.tolist() == [[-1], [1]]


def test_min_activation_zero_is_strict_and_keeps_small_positives() -> None:
    z = latents([0.0, 0.25, 0.0, 1e-6])
    values, indices = top_features(z, k=3, min_activation=0.0)
    assert indices.tolist() == [[1, 3, -1]]  # the third largest is a zero: not an activation
    assert values[0, :2].tolist() == pytest.approx([0.25, 1e-6])


def test_value_equal_to_min_activation_is_not_an_activation() -> None:
    z = latents([0.5, 0.75, 0.4])
    values, indices = top_features(z, k=3, min_activation=0.5)
    assert indices.tolist() == [[1, -1, -1]]  # 0.5 is not > 0.5
    assert values.tolist() == [[0.75, 0.5, pytest.approx(0.4)]]


def test_negative_latents_are_never_activations() -> None:
    _, indices = top_features(latents([-1.0, -0.5, -2.0]), k=2, min_activation=0.0)
    assert indices.tolist() == [[-1, -1]]


def test_ties_keep_every_tied_feature_once() -> None:
    values, indices = top_features(latents([1.0, 0.1, 1.0, 0.0]), k=2, min_activation=0.0)
    assert sorted(indices[0].tolist()) == [0, 2]
    assert values.tolist() == [[1.0, 1.0]]
    # a tie at the cut: k=1 takes one of the two, never neither nor a lower one
    _, top1 = top_features(latents([1.0, 0.1, 1.0, 0.0]), k=1, min_activation=0.0)
    assert top1[0].tolist() in ([0], [2])


def test_ties_at_zero_all_stay_inactive() -> None:
    _, indices = top_features(latents([0.0, 3.0, 0.0, 0.0]), k=4, min_activation=0.0)
    assert indices.tolist() == [[1, -1, -1, -1]]


def test_k_larger_than_width_is_clamped() -> None:
    z = latents([0.2, 0.0, 0.9], [0.0, 0.0, 0.0])
    values, indices = top_features(z, k=10, min_activation=0.0)
    assert values.shape == indices.shape == (2, 3)
    assert indices.tolist() == [[2, 0, -1], [-1, -1, -1]]
    assert values[0].tolist() == pytest.approx([0.9, 0.2, 0.0])


def test_leading_dimensions_are_kept() -> None:
    z = torch.zeros(2, 5, 8)
    z[1, 3, 6] = 4.0
    values, indices = top_features(z, k=2, min_activation=0.0)
    assert values.shape == indices.shape == (2, 5, 2)
    assert (indices == -1).sum().item() == 2 * 5 * 2 - 1
    assert indices[1, 3].tolist() == [6, -1]


def test_an_all_zero_token_writes_no_activation_rows() -> None:
    z = latents([0.0, 0.0, 0.0], [0.0, 0.7, 0.3])
    values, indices = top_features(z, k=2, min_activation=0.0)
    rows = activation_rows(["AAAAAA", "CCCCCC"], values, indices)
    assert rows == [
        [1, 1, "CCCCCC", pytest.approx(0.7), 0],
        [2, 1, "CCCCCC", pytest.approx(0.3), 1],
    ]
