"""BatchTopK and JumpReLU (thresholds saved beside the weights), AuxK, input scale, defaults."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from hsg.sae.activations import ArrayStore
from hsg.sae.architectures import get_architecture
from hsg.sae.config import SAEConfig, TrainConfig
from hsg.sae.metrics import MetricsAccumulator
from hsg.sae.model import CFG_FILE, PARAM_NAMES, WEIGHTS_FILE, SparseAutoencoder
from hsg.sae.train import geometric_median, objective, train_sae


def _sae(arch: str, **kw) -> SparseAutoencoder:
    cfg = SAEConfig(d_in=8, d_sae=24, architecture=arch, seed=3, dtype="float64", **kw)
    sae = SparseAutoencoder(cfg)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(cfg.d_sae, generator=gen, dtype=torch.float64) * 0.3)
        sae.b_dec.copy_(torch.randn(cfg.d_in, generator=gen, dtype=torch.float64))
    return sae


# ---------------------------------------------------------------- the file format
def test_relu_and_topk_files_hold_exactly_the_four_tensors_as_before():
    """No extra tensor, no reordering: the bytes are those of the four-tensor format."""
    for arch, kw in (("relu", {}), ("topk", {"k": 3})):
        sae = _sae(arch, **kw)
        plain = st_save({n: getattr(sae, n).detach().contiguous() for n in PARAM_NAMES})
        assert sae.weights_bytes() == plain
        assert sae.tensor_names == PARAM_NAMES and sae.extra_tensors() == {}


@pytest.mark.parametrize("arch, kw, extra", [
    ("batchtopk", {"k": 3}, "threshold"),
    ("jumprelu", {}, "log_threshold"),
])  # fmt: skip
def test_thresholds_save_and_load_bit_for_bit(tmp_path, arch, kw, extra):
    sae = _sae(arch, **kw)
    with torch.no_grad():
        getattr(sae, extra).add_(torch.rand(getattr(sae, extra).shape, dtype=torch.float64))
    sae.save(tmp_path)
    tensors = st_load((tmp_path / WEIGHTS_FILE).read_bytes())
    assert set(tensors) == {*PARAM_NAMES, extra}
    back = SparseAutoencoder.load(tmp_path)
    for name in sae.tensor_names:
        assert torch.equal(getattr(back, name), getattr(sae, name)), name
    x = torch.randn(16, 8, dtype=torch.float64)
    assert torch.equal(back.encode(x), sae.encode(x)) and back.sae_id == sae.sae_id
    # the threshold is part of the identity: changing it changes the hash
    with torch.no_grad():
        getattr(back, extra).mul_(1.5)
    assert back.weights_sha256() != sae.weights_sha256()
    back.save(tmp_path / "again")
    assert SparseAutoencoder.load(tmp_path / "again").weights_sha256() == back.weights_sha256()
    # a file without the threshold is refused by name
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / WEIGHTS_FILE).write_bytes(st_save({n: tensors[n] for n in PARAM_NAMES}))
    cfg = json.loads((tmp_path / CFG_FILE).read_text())
    import hashlib

    cfg["weights_sha256"] = hashlib.sha256(
        (tmp_path / "bad" / WEIGHTS_FILE).read_bytes()
    ).hexdigest()
    (tmp_path / "bad" / CFG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=f"wrong SAE tensors.*{extra}"):
        SparseAutoencoder.load(tmp_path / "bad")


def test_configs_saved_before_the_new_fields_still_load(tmp_path):
    sae = _sae("relu")
    sae.save(tmp_path)
    cfg = json.loads((tmp_path / CFG_FILE).read_text())
    for key in ("l0_coefficient", "auxk_coefficient", "input_scale"):
        del cfg[key]
    (tmp_path / CFG_FILE).write_text(json.dumps(cfg))
    back = SparseAutoencoder.load(tmp_path)
    assert back.cfg.input_scale is None and back.cfg.scale == 1.0
    assert objective(back.cfg, {"mse": 2.0, "l1": 3.0}) == 2.0 + back.cfg.l1_coefficient * 3.0


# ---------------------------------------------------------------- BatchTopK
def test_batchtopk_selects_k_per_token_over_the_batch_and_learns_its_threshold():
    sae = _sae("batchtopk", k=3)
    spec = get_architecture("batchtopk")
    pre = torch.randn(50, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pre = pre + 1.0  # mostly positive: 150 of the 1200 are kept
    z = spec.train_activate(pre, sae.cfg, threshold=sae.threshold)
    assert int((z != 0).sum()) == 150 and (z >= 0).all()
    kept = pre[z != 0]
    assert kept.min() >= pre[z == 0].max()  # the largest over the batch, not per token
    assert (z != 0).sum(-1).max() > 3 > (z != 0).sum(-1).min()  # tokens differ
    assert float(sae.threshold) == float(kept.min())  # the first batch sets θ
    second = spec.train_activate(pre * 2, sae.cfg, threshold=sae.threshold)
    expected = kept.min() + 0.1 * (2 * kept.min() - kept.min())  # moving average
    assert float(sae.threshold) == pytest.approx(float(expected))
    assert int((second != 0).sum()) == 150
    # inference: every pre-activation above θ, latent by latent
    z_inf = sae.encode(torch.randn(6, 8, dtype=torch.float64))
    pre_inf = sae.encode_pre(torch.randn(6, 8, dtype=torch.float64))
    assert torch.equal(spec.activate(pre_inf, sae.cfg, threshold=sae.threshold),
                       pre_inf * (pre_inf > sae.threshold))  # fmt: skip
    assert (z_inf >= 0).all()


def test_batchtopk_inference_l0_is_about_k_after_training():
    x = np.random.default_rng(0).standard_normal((3000, 8)).astype(np.float32)
    cfg = SAEConfig(d_in=8, d_sae=32, architecture="batchtopk", k=4, lr=3e-3)
    res = train_sae(ArrayStore(x, shard_size=1024), cfg, TrainConfig(batch_size=128, epochs=3))
    assert res.history[-1]["train"]["l0"] == pytest.approx(4.0, abs=0.05)
    assert 2.0 < res.history[-1]["val"]["l0"] < 8.0
    assert float(res.sae.threshold) > 0


# ---------------------------------------------------------------- JumpReLU
def test_jumprelu_thresholds_and_straight_through_gradients():
    sae = _sae("jumprelu")
    spec = get_architecture("jumprelu")
    eps = spec.extra_tensors[0]  # the log-threshold starts at log θ₀ for every latent
    assert eps.name == "log_threshold"
    theta0 = math.sqrt(sae.cfg.l0_coefficient) * math.sqrt(8)
    assert torch.allclose(sae.log_threshold.exp(), torch.full((24,), theta0, dtype=torch.float64))
    from hsg.sae.architectures.jumprelu import bandwidth

    bw = bandwidth(sae.cfg)
    log_t = torch.zeros(3, dtype=torch.float64, requires_grad=True)  # θ = 1
    # inside the window: pre in (θ - ε/2, θ + ε/2); outside: no gradient to θ
    pre = torch.tensor([[1.0 + bw / 4, 1.0 - bw / 4, 3.0]], dtype=torch.float64,
                       requires_grad=True)  # fmt: skip
    z = spec.train_activate(pre, sae.cfg, log_threshold=log_t)
    assert torch.equal(z.detach(), torch.tensor([[1.0 + bw / 4, 0.0, 3.0]], dtype=torch.float64))
    z.sum().backward()
    # dz/dθ = -(θ/ε) K, and dθ/dlogθ = θ = 1; dz/dpre = H(pre - θ)
    assert torch.allclose(log_t.grad, torch.tensor([-1 / bw, -1 / bw, 0.0], dtype=torch.float64))
    assert torch.equal(pre.grad, torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64))
    log_t.grad = None
    pre.grad = None
    l0 = spec.l0_penalty(pre, sae.cfg, log_threshold=log_t)
    assert float(l0.detach()) == 2.0
    l0.backward()
    assert torch.allclose(log_t.grad, torch.tensor([-1 / bw, -1 / bw, 0.0], dtype=torch.float64))
    assert pre.grad is None  # the step gives the pre-activations no gradient
    # inference equals the training forward
    x = torch.randn(5, 8, dtype=torch.float64)
    pre_x, z_train = sae.encode_train(x)
    assert torch.equal(sae.encode(x), z_train)


def test_jumprelu_loss_is_mse_plus_l0():
    sae = _sae("jumprelu", input_scale=2.0)
    x = torch.randn(10, 8, dtype=torch.float64)
    parts = sae.loss(x, 0.5, l0_coefficient=0.25)
    l0 = float((sae.encode(x) != 0).sum(-1).double().mean())
    assert float(parts.l0.detach()) == pytest.approx(l0)
    assert float(parts.loss.detach()) == pytest.approx(4 * float(parts.mse.detach()) + 0.25 * l0)
    assert (
        objective(sae.cfg, {"mse": 1.0, "l1": 9.0, "l0": 3.0}) == 4.0 + sae.cfg.l0_coefficient * 3
    )


# ---------------------------------------------------------------- AuxK and the input scale
def test_auxk_trains_only_the_dead_latents():
    sae = _sae("topk", k=2)
    x = torch.randn(32, 8, dtype=torch.float64) * 3
    dead = torch.zeros(24, dtype=torch.bool)
    dead[10:20] = True
    parts = sae.loss(x, 0.0, dead=dead)
    assert parts.aux is not None and float(parts.aux.detach()) > 0
    grads = torch.autograd.grad(parts.aux, [sae.W_dec, sae.W_enc])
    live = ~dead
    assert grads[0][live].abs().max() == 0 and grads[0][dead].abs().max() > 0
    assert grads[1][:, live].abs().max() == 0
    full = sae.loss(x, 0.0, dead=None)
    assert full.aux is None and torch.equal(full.loss, full.mse)
    assert torch.allclose(parts.loss, parts.mse + sae.cfg.auxk_coefficient * parts.aux)


def test_input_scale_makes_the_loss_unit_free():
    """The same data in other units gives the same normalised loss and the same latents/s."""
    x = np.random.default_rng(1).standard_normal((600, 8)) @ np.diag(np.arange(1, 9))
    losses, scales = [], []
    for unit in (1.0, 1000.0):
        store = ArrayStore((x * unit + 5 * unit).astype(np.float64), shard_size=256)
        cfg = SAEConfig(d_in=8, d_sae=16, l1_coefficient=0.01, seed=2, lr=1e-3, dtype="float64")
        res = train_sae(store, cfg, TrainConfig(batch_size=64, epochs=2))
        s = res.sae.cfg.input_scale
        assert s is not None
        msd = ((x * unit - (x * unit).mean(0)) ** 2).sum(1).mean()
        assert s == pytest.approx(math.sqrt(8 / msd), rel=0.05)  # from the training split
        scales.append(s)
        losses.append([r["val_loss"] for r in res.history])
        assert torch.allclose(res.sae.W_dec.norm(dim=1), torch.ones(16, dtype=torch.float64))
    assert scales[0] == pytest.approx(1000 * scales[1], rel=1e-6)
    # equal up to Adam's eps, which is compared with gradients of unit-dependent size
    assert np.allclose(losses[0], losses[1], rtol=1e-4)


def test_geometric_median_resists_outliers():
    x = np.vstack([np.random.default_rng(0).normal(0, 0.1, (99, 3)), [[1000.0, 0, 0]]])
    assert np.abs(geometric_median(x)).max() < 0.1 < np.abs(x.mean(0)).max()


def test_dense_latents_are_counted():
    acc = MetricsAccumulator(2, 3)
    z = torch.zeros(100, 3)
    z[:50, 0] = 1.0  # 50 %: dense
    z[:10, 1] = 1.0  # 10 %: not more than 10 %
    acc.update(torch.randn(100, 2), torch.randn(100, 2), z)
    r = acc.result()
    assert r["dense_latents"] == 1 and r["dense_fraction"] == pytest.approx(1 / 3)
    assert r["dead_latents"] == 1


# ---------------------------------------------------------------- defaults
def test_cli_help_shows_the_api_defaults():
    from hsg.api import TRAIN_DEFAULTS
    from hsg.cli import cli

    out = CliRunner().invoke(cli, ["sae", "train", "--help"], terminal_width=400).output
    assert str(TRAIN_DEFAULTS["lr"]) in out and str(TRAIN_DEFAULTS["l1"]) in out
    assert str(TRAIN_DEFAULTS["l1_warmup"]) in out and "8 x d_in" in out
    assert f"default: {TRAIN_DEFAULTS['epochs']}" in out
    assert TRAIN_DEFAULTS["lr"].value(d_sae=4096) == pytest.approx(1e-3)
    assert TRAIN_DEFAULTS["l1"].value(d_in=64) == pytest.approx(0.01)
