"""`hsg atlas --steering` against the real server: the graph holds two SAEs; results of a
real `api.steer` run go on the cards of the SAE they were measured on (with the graph's
strongest activations), and are refused with a usage error, nothing written, for the other."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hsg import api
from hsg.graph.writer import GraphWriter, SequenceWrite
from hsg.regions.synthetic import make_synthetic_dataset, write_tsv
from hsg.sae.config import SAEConfig
from hsg.sae.model import SparseAutoencoder

pytestmark = pytest.mark.db

STEERED = 3


def _sae(encoder, seed: int) -> SparseAutoencoder:
    cfg = SAEConfig(d_in=encoder.hidden_size, d_sae=16, layer=1, model_id=encoder.model_id,
                    encoder_checkpoint_hash=encoder.checkpoint_hash, seed=seed)  # fmt: skip
    return SparseAutoencoder(cfg)


@pytest.fixture(scope="module")
def world(tmp_path_factory, driver, settings):
    from hsg.db.schema import apply_schema
    from hsg.graph.maintenance import wipe

    root = tmp_path_factory.mktemp("atlas_steer_db")
    model = api.make_tiny_model(root / "model", "v2")
    encoder = api.load_encoder(model, device="cpu")
    sae, other = _sae(encoder, 0), _sae(encoder, 1)
    data = write_tsv(make_synthetic_dataset(n=60, length=40, seed=0), root / "data.tsv")
    api.train_classifier(data, encoder, positive="motif_positive", out=root / "clf", layer=1,
                         epochs=2)  # fmt: skip
    targets = root / "targets.json"
    targets.write_text(json.dumps({"sae": {"id": sae.sae_id},
                                   "targets": [{"index": STEERED}]}))  # fmt: skip
    api.steer(targets, root / "clf", sae, encoder, data, out=root / "steer", min_acts=(0.0,),
              alphas=(2.0,), plots=False, device="cpu")  # fmt: skip

    wipe(driver, settings.database)
    apply_schema(driver, settings.database)
    model_node = {"id": encoder.checkpoint_hash, "name": encoder.model_id, "version": "v2",
                  "checkpoint_hash": encoder.checkpoint_hash}  # fmt: skip
    for s in (sae, other):
        writer = GraphWriter(driver, settings.database, s.sae_id, f"run-{s.sae_id}")
        node = {"id": s.sae_id, "layer": 1, "d_in": encoder.hidden_size, "d_sae": 16,
                "architecture": s.cfg.architecture, "config": "{}"}  # fmt: skip
        writer.register(model=model_node, sae=node, d_sae=16, run={"id": f"run-{s.sae_id}"})
        props = {"sequence": "AAAAAACCCCCCGG", "length": 14}
        writer.write_batch(
            [SequenceWrite("s1", props, ["binding"], [[STEERED, 1, "CCCCCC", 2.5, 0]])]
        )
    yield {"root": root, "sae": sae, "other": other, "settings": settings}
    wipe(driver, settings.database)


def test_cli_atlas_with_steering(world, tmp_path):
    from hsg.cli import cli

    s = world["settings"]
    env = {"NEO4J_URI": s.uri, "NEO4J_PASSWORD": s.password}
    steer_out = str(world["root"] / "steer")
    runner = CliRunner()
    out = tmp_path / "a"
    args = ["atlas", "--sae-id", world["sae"].sae_id, "--steering", steer_out, "--out", str(out)]
    res = runner.invoke(cli, args, env=env)
    assert res.exit_code == 0, res.output
    card = (out / "features" / f"{STEERED}.html").read_text()
    doc = json.loads((world["root"] / "steer" / "metrics.json").read_text())
    assert "<h2>Steering</h2>" in card and "AAAAAA<mark>CCCCCC</mark>GG" in card
    assert "steer/metrics.json" in card and str(world["root"]) not in card  # no local path
    for c in doc["conditions"]:
        assert f"data-v='{c['delta_mean_prob']!r}'" in card
    assert "steering: largest |Δ mean P|" in (out / "index.html").read_text()

    wrong = tmp_path / "b"
    args = [
        "atlas",
        "--sae-id",
        world["other"].sae_id,
        "--steering",
        steer_out,
        "--out",
        str(wrong),
    ]
    res = runner.invoke(cli, args, env=env)
    assert res.exit_code == 2, res.output
    assert world["sae"].sae_id in res.output and "mean nothing in another" in res.output
    assert not wrong.exists()
