"""Ids that survive a rename (issue #17, part 6).

The encoder is named by the hash of its weight files wherever hsg keys something on it:
the activation cache and SAE ids. A model directory's name is only a readable label, so
renaming or moving it re-encodes nothing and changes no id; SAEs saved before this keep the
ids graphs already hold.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hsg import api
from hsg.models.encoder import load_encoder
from hsg.sae.config import SAEConfig
from hsg.sae.model import CFG_FILE, SparseAutoencoder, encoder_key

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "ingest" / "loci_small.tsv"


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return api.make_tiny_model(tmp_path / "model", "v2", seed=3)


def _cache(model: Path, cache: Path) -> list[str]:
    logs: list[str] = []
    api.cache_activations(DATA, str(model), 1, cache, log=logs.append)
    return logs


def test_renamed_model_directory_reuses_the_activation_cache(model_dir, tmp_path, one_thread):
    cache = tmp_path / "cache"
    first = _cache(model_dir, cache)
    assert any(line.startswith("caching") for line in first), first
    manifest = (cache / "manifest.json").read_bytes()
    renamed = model_dir.rename(tmp_path / "nt-v2-tiny-renamed")
    again = _cache(renamed, cache)
    assert any(line.startswith("reusing") for line in again), again
    assert (cache / "manifest.json").read_bytes() == manifest  # nothing re-encoded


def test_other_weights_under_the_old_name_are_encoded_again(model_dir, tmp_path, one_thread):
    cache = tmp_path / "cache"
    _cache(model_dir, cache)
    shutil.rmtree(model_dir)
    api.make_tiny_model(model_dir, "v2", seed=4)  # same name, other checkpoint
    assert any(line.startswith("caching") for line in _cache(model_dir, cache))


def _sae_for(model: Path, d_in: int = 32) -> SparseAutoencoder:
    encoder = load_encoder(model, device="cpu")
    cfg = SAEConfig(
        d_in=d_in,
        d_sae=16,
        model_id=encoder.model_id,
        model_version=encoder.version,
        layer=1,
        encoder_checkpoint_hash=encoder.checkpoint_hash,
    )
    return SparseAutoencoder(cfg)


def test_sae_id_is_keyed_by_the_checkpoint_not_the_directory(model_dir, tmp_path):
    sae = _sae_for(model_dir)
    digest = load_encoder(model_dir, device="cpu").checkpoint_hash
    assert sae.cfg.model_id == "model"  # the label stays
    assert sae.sae_id.startswith(f"ckpt-{digest[:12]}/L1/relu-16-")
    assert not sae.sae_id.startswith("model/")
    renamed = model_dir.rename(tmp_path / "renamed")
    other = _sae_for(renamed)
    other.load_weights_(sae.state_tensors())
    assert other.cfg.model_id == "renamed" and other.sae_id == sae.sae_id
    # saved and loaded, the id is the same
    sae.save(tmp_path / "sae")
    loaded = SparseAutoencoder.load(tmp_path / "sae")
    assert loaded.sae_id == sae.sae_id and loaded.cfg.id_from == "checkpoint"


def test_without_a_checkpoint_hash_the_model_id_names_the_encoder():
    cfg = SAEConfig(d_in=8, d_sae=16, model_id="tiny-nt", layer=2)
    assert encoder_key(cfg) == "tiny-nt"
    assert encoder_key(cfg.replace(encoder_checkpoint_hash="unsaved")) == "tiny-nt"
    assert encoder_key(SAEConfig(d_in=8, d_sae=16)) == "unknown-model"
    assert encoder_key(cfg.replace(encoder_checkpoint_hash="ab" * 32)) == "ckpt-" + "ab" * 6


def test_an_sae_saved_before_keeps_its_id(model_dir, tmp_path):
    """Compatibility: a cfg.json without `id_from` was written when ids were
    `<model_id>/L<layer>/…`; graphs, steering files and classifiers hold that id, so it stays,
    through load and re-save."""
    sae = _sae_for(model_dir)
    sae.save(tmp_path / "old")
    cfg_path = tmp_path / "old" / CFG_FILE
    data = json.loads(cfg_path.read_text())
    del data["id_from"]  # as an SAE saved by an earlier hsg
    cfg_path.write_text(json.dumps(data))
    old = SparseAutoencoder.load(tmp_path / "old")
    assert old.cfg.id_from == "model_id"
    assert old.sae_id == f"model/L1/relu-16-{data['weights_sha256'][:8]}"
    old.save(tmp_path / "resaved")
    assert SparseAutoencoder.load(tmp_path / "resaved").sae_id == old.sae_id
    # and it is still compatible with its encoder, renamed or not
    from hsg.sae.compat import check_compatible

    renamed = model_dir.rename(tmp_path / "renamed")
    check_compatible(load_encoder(renamed, device="cpu"), old, 1)


def test_id_from_is_checked():
    from hsg.config import ConfigError

    with pytest.raises(ConfigError, match="id_from"):
        SAEConfig(d_in=8, d_sae=16, id_from="directory")
