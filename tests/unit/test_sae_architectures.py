"""The registry of SAE architectures: lookup, per-feature reads, TopK's ReLU, and extension."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from hsg.sae.activations import ArrayStore
from hsg.sae.architectures import (
    ArchitectureSpec,
    architecture_names,
    get_architecture,
    register_architecture,
    unregister_architecture,
)
from hsg.sae.config import ConfigError, SAEConfig, TrainConfig
from hsg.sae.model import SparseAutoencoder
from hsg.sae.train import objective, train_sae

ARCHS = {"relu": {}, "topk": {"k": 5}, "batchtopk": {"k": 5}, "jumprelu": {}}


def _sae(arch: str, dtype: str = "float32", **kw) -> SparseAutoencoder:
    """An SAE with non-trivial biases, so pre-activations have both signs."""
    cfg = SAEConfig(d_in=8, d_sae=24, architecture=arch, seed=3, dtype=dtype, **kw)
    sae = SparseAutoencoder(cfg)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(cfg.d_sae, generator=gen, dtype=torch.float64) * 0.3)
        sae.b_dec.copy_(torch.randn(cfg.d_in, generator=gen, dtype=torch.float64))
        for extra in sae.extra_tensors().values():  # thresholds that leave some latents on
            extra.copy_(torch.full(extra.shape, 0.2 if extra.ndim == 0 else math.log(0.2)))
    return sae


def _constant_pre(sae: SparseAutoencoder, pre: list[float]) -> None:
    """Make every token's pre-activations equal `pre` (W_enc = 0, b_enc = pre)."""
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.copy_(torch.tensor(pre))


# ---------------------------------------------------------------- lookup
def test_registry_lists_relu_and_topk():
    names = architecture_names()
    assert {"relu", "topk"} <= set(names) and list(names) == sorted(names)
    for name in names:
        spec = get_architecture(name)
        assert isinstance(spec, ArchitectureSpec) and spec.name == name
    assert get_architecture("relu").uses_l1 and not get_architecture("topk").uses_l1


def test_unknown_architecture_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"'gated'.*relu, topk"):
        get_architecture("gated")
    with pytest.raises(ConfigError, match=r"'gated'.*relu, topk"):
        SAEConfig(d_in=4, d_sae=8, architecture="gated")


def test_listing_names_imports_neither_torch_nor_the_modules():
    """The CLI builds its --arch choices from the names, and `hsg --help` must stay fast."""
    code = (
        "import sys\n"
        "from hsg.sae.architectures import architecture_names\n"
        "assert {'relu', 'topk'} <= set(architecture_names())\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'hsg.sae.architectures.relu' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_per_architecture_validation():
    with pytest.raises(ConfigError, match="topk needs 1 <= k <= d_sae=8"):
        SAEConfig(d_in=4, d_sae=8, architecture="topk", k=9)
    with pytest.raises(ConfigError, match="k=None"):
        SAEConfig(d_in=4, d_sae=8, architecture="topk")
    assert SAEConfig(d_in=4, d_sae=8, architecture="topk", k=8).k == 8
    assert SAEConfig(d_in=4, d_sae=8, architecture="relu").k is None  # relu needs no k


# ---------------------------------------------------------------- one feature
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_encode_feature_equals_the_column_of_encode(arch):
    sae = _sae(arch, dtype="float64", **ARCHS[arch])
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z = sae.encode(x)
    assert (z > 0).any() and (z == 0).any()
    for j in range(sae.cfg.d_sae):
        zj = sae.encode_feature(x, j)
        assert zj.shape == (3, 5)
        torch.testing.assert_close(zj, z[..., j], rtol=1e-12, atol=1e-12)
    # float32 input to a float64 SAE is converted, as encode does
    torch.testing.assert_close(sae.encode_feature(x.float(), 2), sae.encode(x.float())[..., 2])
    with pytest.raises(IndexError, match="feature 24"):
        sae.encode_feature(x, 24)
    with pytest.raises(ValueError, match="d_in=8"):
        sae.encode_feature(torch.zeros(2, 7), 0)


def test_relu_encode_feature_reads_only_its_column(monkeypatch):
    sae = _sae("relu")
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(2))
    want = sae.encode(x)[:, 5]

    def no_full_encode(*args, **kwargs):
        raise AssertionError("relu encode_feature must not compute every pre-activation")

    monkeypatch.setattr(sae, "encode_pre", no_full_encode)
    torch.testing.assert_close(sae.encode_feature(x, 5), want)


def test_topk_encode_feature_is_exact_for_a_positive_unselected_latent():
    """Latent 2 has a positive pre-activation but is not among the k = 2 largest: z_2 = 0."""
    sae = _sae("topk", k=2)
    _constant_pre(sae, [3.0, 2.0, 1.0] + [-1.0] * 21)
    x = torch.randn(6, 8)
    assert torch.equal(sae.encode_feature(x, 2), torch.zeros(6))
    assert torch.equal(sae.encode_feature(x, 1), torch.full((6,), 2.0))


# ---------------------------------------------------------------- TopK's ReLU
def test_topk_applies_relu_to_the_selected_values():
    """Selected latents with negative pre-activations give zeros, never negative latents."""
    spec = get_architecture("topk")
    cfg = SAEConfig(d_in=2, d_sae=4, architecture="topk", k=3)
    pre = torch.tensor([[2.0, -1.0, -3.0, -4.0], [-1.0, -2.0, -3.0, -4.0]])
    z = spec.activate(pre, cfg)
    assert torch.equal(z, torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))

    # the same through the model: every token's three selected pre-activations are negative
    sae = _sae("topk", k=3)
    _constant_pre(sae, [-1.0, -2.0, -3.0] + [-5.0] * 21)
    x = torch.randn(5, 8)
    z = sae.encode(x)
    assert (z >= 0).all() and torch.equal(z, torch.zeros(5, 24))
    assert all(torch.equal(sae.encode_feature(x, j), torch.zeros(5)) for j in range(3))
    assert torch.equal(sae.decode(z), sae.b_dec.detach().expand(5, 8))


# ---------------------------------------------------------------- extension
def _toy_validate(cfg: SAEConfig) -> None:
    if cfg.k is not None:
        raise ConfigError(f"toy takes no k, got k={cfg.k}")


def _toy_activate(pre: torch.Tensor, cfg: SAEConfig) -> torch.Tensor:
    return pre * (pre > 0.5)  # a fixed-threshold JumpReLU


TOY = ArchitectureSpec(
    name="toy",
    validate=_toy_validate,
    activate=_toy_activate,
    init_scale=lambda cfg: 0.5,
    uses_l1=False,
)


@pytest.fixture
def toy():
    register_architecture(TOY)
    try:
        yield TOY
    finally:
        unregister_architecture("toy")


def test_a_registered_architecture_works_end_to_end(toy, tmp_path):
    assert "toy" in architecture_names()
    with pytest.raises(ConfigError, match="toy takes no k"):
        SAEConfig(d_in=8, d_sae=16, architecture="toy", k=3)
    cfg = SAEConfig(d_in=8, d_sae=16, architecture="toy", seed=4, model_id="m", layer=1)
    assert SAEConfig.from_json(cfg.to_json()) == cfg and cfg.spec is toy

    sae = SparseAutoencoder(cfg)
    # same atoms as any architecture with this seed; the encoder carries the toy's scale
    relu = SparseAutoencoder(cfg.replace(architecture="relu"))  # relu's scale is 1 here
    assert torch.equal(sae.W_dec, relu.W_dec) and torch.equal(sae.W_enc, 0.5 * relu.W_enc)

    x = torch.randn(4, 3, 8, generator=torch.Generator().manual_seed(5)) * 3
    pre = sae.encode_pre(x)
    z = sae.encode(x)
    assert torch.equal(z, pre * (pre > 0.5)) and (z > 0).any()
    for j in range(cfg.d_sae):  # the generic per-feature read
        assert torch.equal(sae.encode_feature(x, j), z[..., j])
    parts = sae.loss(x, l1_coefficient=10.0)
    assert torch.equal(parts.loss, parts.mse) and parts.l1 > 0  # uses_l1=False
    assert objective(cfg, {"mse": 1.5, "l1": 7.0}) == 1.5

    sae.save(tmp_path / "toy")
    back = SparseAutoencoder.load(tmp_path / "toy")
    assert back.cfg == sae.cfg and back.spec is toy
    assert back.sae_id == sae.sae_id and "/toy-16-" in back.sae_id
    assert all(torch.equal(getattr(back, n), getattr(sae, n)) for n in ("W_enc", "W_dec"))
    assert torch.equal(back.encode(x), z)


def test_a_registered_architecture_trains(toy):
    x = np.random.default_rng(0).standard_normal((256, 8)).astype(np.float32)
    cfg = SAEConfig(d_in=8, d_sae=16, architecture="toy", lr=1e-2, l1_warmup_steps=10**6)
    res = train_sae(ArrayStore(x, shard_size=64), cfg, TrainConfig(batch_size=32, epochs=2))
    first = res.history[0]
    assert res.sae.cfg.architecture == "toy"
    # no L1 term: the objective is the (normalised) MSE alone, whatever λ's warm-up leaves
    s = res.sae.cfg.scale
    assert s != 1.0 and first["val_loss"] == pytest.approx(s * s * first["val"]["mse"])


def test_registration_refuses_clashes_and_forgets_cleanly(toy):
    with pytest.raises(ValueError, match="already registered"):
        register_architecture(TOY)
    with pytest.raises(ValueError, match="already registered"):
        register_architecture(
            ArchitectureSpec("relu", _toy_validate, _toy_activate, lambda cfg: 1.0, True)
        )
    with pytest.raises(ValueError, match="module"):
        unregister_architecture("topk")
    unregister_architecture("toy")
    assert "toy" not in architecture_names()
    with pytest.raises(ConfigError, match="'toy'"):
        SAEConfig(d_in=8, d_sae=16, architecture="toy")
    register_architecture(TOY)  # for the fixture's teardown
