"""The one encoder/SAE compatibility check, and the commands that must call it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from hsg import api
from hsg.cli import cli
from hsg.models.tiny import make_tiny
from hsg.sae.config import SAEConfig
from hsg.sae.model import SparseAutoencoder

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"


@pytest.fixture(scope="module")
def pair(tmp_path_factory, one_thread):
    """Two tiny models of one shape (other weights) and an SAE of layer 1 of the first."""
    root = tmp_path_factory.mktemp("compat")
    a = make_tiny(root / "a" / "model", "v2", seed=0)
    b = make_tiny(root / "b" / "model", "v2", seed=1)  # same directory name, other weights
    enc_a = api.load_encoder(a, device="cpu")
    enc_b = api.load_encoder(b, device="cpu")
    cfg = SAEConfig(
        d_in=enc_a.hidden_size,
        d_sae=16,
        layer=1,
        model_id=enc_a.model_id,
        encoder_checkpoint_hash=enc_a.checkpoint_hash,
    )
    sae_dir = SparseAutoencoder(cfg).save(root / "sae")
    return {"a": a, "b": b, "enc_a": enc_a, "enc_b": enc_b, "sae_dir": sae_dir, "root": root}


def test_same_checkpoint_and_layer_pass(pair):
    sae = api.load_sae(pair["sae_dir"], device="cpu")
    result = api.check_compatible(pair["enc_a"], sae)
    assert result.layer == 1 and result.checkpoint_verified and not result.warnings
    assert api.check_compatible(pair["enc_a"], sae, 1).layer == 1


def test_other_checkpoint_is_refused_naming_both(pair):
    assert pair["enc_a"].checkpoint_hash != pair["enc_b"].checkpoint_hash
    sae = api.load_sae(pair["sae_dir"], device="cpu")
    with pytest.raises(api.IncompatibleError) as err:
        api.check_compatible(pair["enc_b"], sae)
    message = str(err.value)
    assert pair["enc_a"].checkpoint_hash[:12] in message
    assert pair["enc_b"].checkpoint_hash[:12] in message
    assert "--allow-model-mismatch" in message


def test_allow_model_mismatch_warns_instead(pair):
    sae = api.load_sae(pair["sae_dir"], device="cpu")
    result = api.check_compatible(pair["enc_b"], sae, allow_model_mismatch=True)
    assert not result.checkpoint_verified and len(result.warnings) == 1


def test_layer_other_than_the_saes_is_refused(pair):
    sae = api.load_sae(pair["sae_dir"], device="cpu")
    with pytest.raises(api.IncompatibleError, match="trained on layer 1, not layer 2"):
        api.check_compatible(pair["enc_a"], sae, 2)
    # the override is for the checkpoint only, never for the layer
    with pytest.raises(api.IncompatibleError, match="not layer 0"):
        api.check_compatible(pair["enc_a"], sae, 0, allow_model_mismatch=True)


def test_layer_out_of_range_and_width_are_refused(pair, tmp_path):
    enc = pair["enc_a"]
    deep = SparseAutoencoder(SAEConfig(d_in=enc.hidden_size, d_sae=8, layer=enc.num_layers + 1))
    with pytest.raises(api.IncompatibleError, match="does not exist"):
        api.check_compatible(enc, deep)
    wide = SparseAutoencoder(SAEConfig(d_in=enc.hidden_size + 4, d_sae=8, layer=1))
    with pytest.raises(api.IncompatibleError, match=f"expects d_in={enc.hidden_size + 4}"):
        api.check_compatible(enc, wide)
    no_layer = SparseAutoencoder(SAEConfig(d_in=enc.hidden_size, d_sae=8))
    with pytest.raises(api.IncompatibleError, match="records no layer"):
        api.check_compatible(enc, no_layer)
    assert api.check_compatible(enc, no_layer, 1).layer == 1


def test_unrecorded_hash_is_not_verified_but_allowed(pair):
    enc = pair["enc_a"]
    sae = SparseAutoencoder(SAEConfig(d_in=enc.hidden_size, d_sae=8, layer=1))
    result = api.check_compatible(enc, sae)
    assert result.layer == 1 and not result.checkpoint_verified


def _ingest(pair, *extra: str):
    args = ["ingest", str(FIXTURES / "loci_small.tsv"), "--sae", str(pair["sae_dir"])]
    return CliRunner().invoke(cli, [*args, "--dry-run", "--device", "cpu", "--no-g4", *extra])


def test_ingest_refuses_an_sae_of_another_model(pair):
    res = _ingest(pair, "--model", str(pair["b"]))
    assert res.exit_code == 1, res.output
    assert "trained on encoder" in res.output and "--allow-model-mismatch" in res.output
    assert "Traceback" not in res.output


def test_ingest_allow_model_mismatch(pair):
    res = _ingest(pair, "--model", str(pair["b"]), "--allow-model-mismatch", "--json")
    assert res.exit_code == 0, res.output
    assert '"sequences_encoded"' in res.output


def test_ingest_refuses_another_layer(pair):
    res = _ingest(pair, "--model", str(pair["a"]), "--layer", "2")
    assert res.exit_code == 1 and "trained on layer 1, not layer 2" in res.output
    ok = _ingest(pair, "--model", str(pair["a"]), "--layer", "1", "--json")
    assert ok.exit_code == 0, ok.output


def test_every_pairing_command_offers_the_override():
    runner = CliRunner()
    for command in (["ingest"], ["sae", "eval"], ["classifier", "train"], ["steer"],
                    ["depmap"], ["correlate"]):  # fmt: skip
        res = runner.invoke(cli, [*command, "--help"])
        assert res.exit_code == 0 and "--allow-model-mismatch" in res.output, command
