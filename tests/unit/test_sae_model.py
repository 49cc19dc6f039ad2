"""SAE config round trip, forward conventions, decoder constraint, and verified save/load."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from hsg.sae.config import ConfigError, SAEConfig, TrainConfig
from hsg.sae.model import CFG_FILE, WEIGHTS_FILE, SAELoadError, SparseAutoencoder


def _cfg(**kw) -> SAEConfig:
    base = dict(d_in=8, d_sae=24, model_id="tiny-nt", layer=2, seed=3)
    base.update(kw)
    return SAEConfig(**base)


def _trained_like(cfg: SAEConfig) -> SparseAutoencoder:
    """An SAE with non-trivial biases, so save/load is tested on every tensor."""
    sae = SparseAutoencoder(cfg)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(cfg.d_sae, generator=gen) * 0.1)
        sae.b_dec.copy_(torch.randn(cfg.d_in, generator=gen))
    return sae


# ---------------------------------------------------------------- config
def test_config_round_trips_through_json():
    cfg = _cfg(architecture="topk", k=4, l1_coefficient=0.5, encoder_checkpoint_hash="ab" * 32)
    assert SAEConfig.from_json(cfg.to_json()) == cfg
    assert SAEConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    tcfg = TrainConfig(batch_size=7, val_fraction=0.25)
    assert TrainConfig.from_json(tcfg.to_json()) == tcfg


def test_config_rejects_unknown_and_missing_keys_and_bad_values():
    data = _cfg().to_dict()
    with pytest.raises(ConfigError, match="unknown key.*expansion_factor"):
        SAEConfig.from_dict({**data, "expansion_factor": 8})
    del data["d_sae"]
    with pytest.raises(ConfigError, match="missing key.*d_sae"):
        SAEConfig.from_dict(data)
    with pytest.raises(ConfigError, match="k"):
        _cfg(architecture="topk", k=None)
    with pytest.raises(ConfigError, match="architecture"):
        SAEConfig.from_dict({**_cfg().to_dict(), "architecture": "gated"})
    with pytest.raises(ConfigError, match="integer"):
        SAEConfig.from_dict({**_cfg().to_dict(), "d_in": 8.5})
    with pytest.raises(ConfigError, match="not valid JSON"):
        SAEConfig.from_json("{")


# ---------------------------------------------------------------- forward
def test_shapes_and_decode_adds_bias():
    sae = _trained_like(_cfg())
    x = torch.randn(2, 5, 8)
    z = sae.encode(x)
    assert z.shape == (2, 5, 24) and (z >= 0).all()
    x_hat, z2 = sae(x)
    assert torch.equal(z, z2) and x_hat.shape == x.shape
    assert torch.equal(sae.decode(torch.zeros(3, 24)), sae.b_dec.detach().expand(3, 8))
    # the pre-encoder bias is b_dec: encoding b_dec itself gives relu(b_enc)
    assert torch.allclose(sae.encode(sae.b_dec.detach()), torch.relu(sae.b_enc.detach()))


def test_topk_selects_exactly_k_with_relu():
    sae = _trained_like(_cfg(architecture="topk", k=3))
    x = torch.randn(64, 8)
    z = sae.encode(x)
    assert ((z != 0).sum(-1) <= 3).all() and (z >= 0).all()
    pre = sae.encode_pre(x)
    top = pre.topk(3, dim=-1).indices
    expected = torch.zeros_like(pre).scatter(-1, top, torch.relu(pre.gather(-1, top)))
    assert torch.equal(z, expected)
    # where the 3 best pre-activations are positive, exactly 3 latents are active
    full = pre.topk(3, dim=-1).values.min(-1).values > 0
    assert full.any() and ((z[full] != 0).sum(-1) == 3).all()


def test_loss_normalisation_is_as_documented():
    sae = _trained_like(_cfg())
    x = torch.randn(10, 8)
    parts = sae.loss(x, l1_coefficient=0.25)
    x_hat, z = sae(x)
    mse = ((x_hat - x) ** 2).sum(-1).div(8).mean()
    l1 = z.abs().sum(-1).mean()
    assert torch.allclose(parts.mse, mse) and torch.allclose(parts.l1, l1)
    assert torch.allclose(parts.loss, mse + 0.25 * l1)
    topk = _trained_like(_cfg(architecture="topk", k=2))
    p2 = topk.loss(x, l1_coefficient=10.0)
    assert torch.equal(p2.loss, p2.mse)  # TopK trains on MSE alone


def test_decoder_constraint():
    sae = SparseAutoencoder(_cfg())
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(24, dtype=sae.dtype))
    sae.loss(torch.randn(16, 8) * 3, 0.1).loss.backward()
    sae.remove_parallel_grad_()
    along = (sae.W_dec.grad * sae.W_dec).sum(dim=1)
    assert along.abs().max() < 1e-6
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, 24)[:, None])
    sae.normalize_decoder_()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(24), atol=1e-6)


def test_same_seed_same_init():
    a, b = SparseAutoencoder(_cfg()), SparseAutoencoder(_cfg())
    assert all(torch.equal(getattr(a, n), getattr(b, n)) for n in ("W_enc", "W_dec"))
    c = SparseAutoencoder(_cfg(seed=4))
    assert not torch.equal(a.W_dec, c.W_dec)


def test_check_input_names_the_sae(tmp_path):
    sae = _trained_like(_cfg())
    sae.check_input(8)
    sae.save(tmp_path)
    loaded = SparseAutoencoder.load(tmp_path)
    with pytest.raises(ValueError, match=r"expects d_in=8.*width 16") as err:
        loaded.check_input(16, "layer 2 of tiny-nt")
    assert str(tmp_path / WEIGHTS_FILE) in str(err.value)
    with pytest.raises(ValueError, match="expects d_in=8"):
        loaded.encode(torch.randn(3, 16))


# ---------------------------------------------------------------- save / load
def test_save_load_bit_for_bit(tmp_path):
    sae = _trained_like(_cfg(architecture="topk", k=5))
    sae.save(tmp_path)
    assert (tmp_path / CFG_FILE).is_file() and (tmp_path / WEIGHTS_FILE).is_file()
    cfg = json.loads((tmp_path / CFG_FILE).read_text())
    digest = hashlib.sha256((tmp_path / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert cfg["weights_sha256"] == digest
    loaded = SparseAutoencoder.load(tmp_path)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(sae, name), getattr(loaded, name)), name
    x = torch.randn(32, 8)
    assert torch.equal(sae(x)[0], loaded(x)[0])
    assert loaded.cfg == sae.cfg
    assert loaded.sae_id == sae.sae_id
    assert loaded.sae_id == f"tiny-nt/L2/topk-24-{digest[:8]}"
    assert SparseAutoencoder.load(tmp_path / WEIGHTS_FILE, device="cpu").sae_id == sae.sae_id
    # re-saving identical weights gives identical bytes
    before = (tmp_path / WEIGHTS_FILE).read_bytes()
    loaded.save(tmp_path / "again")
    assert (tmp_path / "again" / WEIGHTS_FILE).read_bytes() == before


def test_sae_id_follows_the_weights():
    sae = SparseAutoencoder(_cfg())
    first = sae.sae_id
    assert sae.sae_id == first
    with torch.no_grad():
        sae.b_dec.add_(1.0)
    assert sae.sae_id != first


def test_load_errors_name_the_file(tmp_path):
    sae = _trained_like(_cfg())
    sae.save(tmp_path)
    weights = tmp_path / WEIGHTS_FILE
    cfg_path = tmp_path / CFG_FILE

    # hash mismatch: another SAE's weights behind this config
    good = weights.read_bytes()
    other = _trained_like(_cfg(seed=11))
    other.save(tmp_path / "other")
    weights.write_bytes((tmp_path / "other" / WEIGHTS_FILE).read_bytes())
    with pytest.raises(SAELoadError, match="hash mismatch") as err:
        SparseAutoencoder.load(tmp_path)
    assert str(weights) in str(err.value)
    weights.write_bytes(good)

    # shapes that disagree with the config (hash still right)
    text = cfg_path.read_text()
    cfg_path.write_text(text.replace('"d_sae": 24', '"d_sae": 12'))
    with pytest.raises(SAELoadError, match="wrong SAE shape") as err:
        SparseAutoencoder.load(tmp_path)
    assert str(weights) in str(err.value)

    # unknown keys
    cfg_path.write_text(json.dumps({**json.loads(text), "bogus": 1}))
    with pytest.raises(SAELoadError, match=f"{CFG_FILE}.*unknown key.*bogus"):
        SparseAutoencoder.load(tmp_path)
    cfg_path.write_text(text)

    # missing files
    weights.unlink()
    with pytest.raises(SAELoadError, match=f"missing SAE file: .*{WEIGHTS_FILE}"):
        SparseAutoencoder.load(tmp_path)
    with pytest.raises(SAELoadError, match="not found"):
        SparseAutoencoder.load(tmp_path / "nope")
