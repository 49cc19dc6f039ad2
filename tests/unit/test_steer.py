"""`hsg steer`: targets validation, the δ×α grid, routes to the classifier, the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hsg.cli.steer import steer
from hsg.models.encoder import load_encoder
from hsg.models.tiny import make_tiny
from hsg.regions.synthetic import make_synthetic_dataset, write_tsv
from hsg.sae.config import SAEConfig
from hsg.sae.model import SparseAutoencoder
from hsg.steer.classifier import (
    ClassifierConfig,
    ConvClassifier,
    TrainConfig,
    save_run,
    split_sha256,
    stratified_split,
    train_classifier,
)
from hsg.steer.features import content_view, encode_features
from hsg.steer.interventions import Intervention
from hsg.steer.run import (
    Steerer,
    SteerError,
    build_conditions,
    read_targets,
)

POSITIVE = "motif_positive"


pytestmark = pytest.mark.usefixtures("one_thread")


def _classifier(world, name, layer, kind="hidden", epochs=30, sae=None):
    """Train (quickly) and save a classifier on the world's data."""
    records = world["records"]
    ids = [r.id for r in records]
    labels = [POSITIVE in r.labels for r in records]
    feats = encode_features(world["encoder"], [r.sequence for r in records], ids, layer, kind, sae)
    split = stratified_split(ids, labels, seed=0)
    cfg = ClassifierConfig(
        d_in=feats.width,
        input_kind=kind,
        layer=layer,
        positive_label=POSITIVE,
        model_id=world["encoder"].model_id,
        model_checkpoint_hash=world["encoder"].checkpoint_hash,
        sae_id=sae.sae_id if sae is not None else None,
        split_sha256=split_sha256(split),
    )
    result = train_classifier(feats, labels, split, cfg, TrainConfig(epochs=epochs))
    return save_run(world["root"] / name, result, split, TrainConfig(epochs=epochs))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("steer")
    model = make_tiny(root / "model", "v2", layers=2, hidden=32, seed=0)
    encoder = load_encoder(model)
    records = make_synthetic_dataset(n=160, length=60, seed=0)
    sae = SparseAutoencoder(
        SAEConfig(
            d_in=32,
            d_sae=64,
            layer=1,
            model_id=encoder.model_id,
            encoder_checkpoint_hash=encoder.checkpoint_hash,
        )
    )
    sae.save(root / "sae")
    w = {"root": root, "model": model, "encoder": encoder, "records": records, "sae": sae}
    w["data"] = write_tsv(records, root / "data.tsv")
    w["clf"] = _classifier(w, "clf", layer=1)
    targets = {
        "sae": {"id": sae.sae_id, "layer": 1, "d_sae": 64, "model_id": encoder.model_id},
        "parameters": {"top": 3},
        "targets": [
            {"feature": f"{sae.sae_id}/{i}", "index": i, "log2_fold_change": lfc}
            for i, lfc in ((3, 2.5), (10, 1.5), (41, -1.0))
        ],
    }
    w["targets"] = root / "targets.json"
    w["targets"].write_text(json.dumps(targets))
    return w


def _args(world, out, *extra):
    return [
        "--targets",
        str(world["targets"]),
        "--classifier",
        str(world["clf"]),
        "--sae",
        str(world["root"] / "sae"),
        "--model",
        str(world["model"]),
        "--data",
        str(world["data"]),
        "--out",
        str(out),
        *extra,
    ]


# ---------------------------------------------------------------------- targets and grid


def test_read_targets_checks_the_sae(world, tmp_path) -> None:
    doc, targets = read_targets(world["targets"], world["sae"])
    assert [t.index for t in targets] == [3, 10, 41] and targets[0].info["log2_fold_change"] == 2.5
    other = SparseAutoencoder(SAEConfig(d_in=32, d_sae=64, layer=1, seed=5))
    with pytest.raises(SteerError, match="computed for SAE"):
        read_targets(world["targets"], other)
    bad = dict(doc, targets=[{"feature": f"{world['sae'].sae_id}/99", "index": 99}])
    (tmp_path / "t.json").write_text(json.dumps(bad))
    with pytest.raises(SteerError, match="outside 0..63"):
        read_targets(tmp_path / "t.json", world["sae"])
    bad = dict(doc, targets=[{"feature": f"{world['sae'].sae_id}/4", "index": 5}])
    (tmp_path / "t.json").write_text(json.dumps(bad))
    with pytest.raises(SteerError, match="does not match"):
        read_targets(tmp_path / "t.json", world["sae"])


def test_build_conditions(world) -> None:
    _, targets = read_targets(world["targets"], world["sae"])
    conds = build_conditions(targets[:2], [0.0, 2.0], [0.0, 1.0, 4.0])
    assert len(conds) == 2 * (1 + 2 * 3)
    assert conds[0].intervention.kind == "ablate" and conds[1].label == "δ=0 α=0"
    with pytest.raises(SteerError, match="min-act"):
        build_conditions(targets, [-1.0], [1.0])
    with pytest.raises(SteerError, match="alpha"):
        build_conditions(targets, [0.0], [-0.5])


# ---------------------------------------------------------------------- pipeline


def _test_batch(world, n=12):
    test_ids = json.loads((world["clf"] / "split.json").read_text())["test"]
    recs = [r for r in world["records"] if r.id in set(test_ids)][:n]
    return [r.sequence for r in recs], [r.id for r in recs]


def test_grid_batching_does_not_change_results(world) -> None:
    clf = ConvClassifier.load(world["clf"])
    seqs, ids = _test_batch(world)
    ivs = [Intervention(3, kind="ablate"), Intervention(3, 2.0, 2.0), Intervention(10, 0.0, 0.5)]
    results = []
    for max_rows in (1000, 12):  # all conditions in one pass, or one condition per pass
        steerer = Steerer(world["encoder"], world["sae"], clf, "all", True, max_rows)
        batch = steerer.embed(seqs, ids)
        results.append(steerer.conditions(batch, steerer.latents(batch), ivs))
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=1e-6)


def test_forward_route_matches_embedding_the_later_layer(world) -> None:
    clf_dir = _classifier(world, "clf_l2", layer=2, epochs=2)
    clf = ConvClassifier.load(clf_dir)
    steerer = Steerer(world["encoder"], world["sae"], clf)
    assert steerer.route == "hidden-forward"
    seqs, ids = _test_batch(world)
    batch = steerer.embed(seqs, ids)
    z = steerer.latents(batch)
    direct = world["encoder"].embed(seqs, 2, ids)
    expected = clf.predict_proba(*content_view(direct.hidden, direct.content_mask))
    torch.testing.assert_close(steerer.baseline(batch, z), expected, rtol=0, atol=1e-5)
    noop = steerer.conditions(batch, z, [Intervention(3, 0.0, 1.0)])[0]
    torch.testing.assert_close(noop, expected, rtol=0, atol=1e-5)


def test_latents_route(world) -> None:
    clf_dir = _classifier(world, "clf_lat", layer=1, kind="latents", epochs=2, sae=world["sae"])
    clf = ConvClassifier.load(clf_dir)
    steerer = Steerer(world["encoder"], world["sae"], clf)
    assert steerer.route == "latents"
    seqs, ids = _test_batch(world)
    batch = steerer.embed(seqs, ids)
    z = steerer.latents(batch)
    base = steerer.baseline(batch, z)
    out = steerer.conditions(batch, z, [Intervention(3, 0.0, 1.0), Intervention(3, 50.0, 1.0)])
    assert torch.equal(out[0], base)
    assert not torch.equal(out[1], base)


# ---------------------------------------------------------------------- CLI


def test_steer_cli_writes_the_report(world) -> None:
    out = world["root"] / "run"
    extra = [
        "--min-act",
        "0",
        "--min-act",
        "3",
        "--alpha",
        "1",
        "--alpha",
        "2",
        "--max-targets",
        "2",
        "--max-rows",
        "64",
    ]
    res = CliRunner().invoke(steer, _args(world, out, *extra))
    assert res.exit_code == 0, res.output
    for name in (
        "report.md",
        "metrics.json",
        "probabilities.npz",
        "summary.png",
        "baseline_roc.png",
        "target01_f3_probs.png",
        "target01_f3_roc.png",
        "target01_f3_confusion.png",
        "target02_f10_grid.png",
    ):
        assert (out / name).is_file(), name
    doc = json.loads((out / "metrics.json").read_text())
    split = json.loads((world["clf"] / "split.json").read_text())
    arrays = np.load(out / "probabilities.npz")
    # the same held-out sequences before and after; none was used to train the classifier
    assert sorted(arrays["ids"].tolist()) == sorted(split["test"])
    assert not set(arrays["ids"].tolist()) & set(split["train"] + split["val"])
    assert doc["n_sequences"] == len(split["test"]) == 32
    assert doc["route"] == "hidden-same" and doc["provenance"]["sae_id"] == world["sae"].sae_id
    assert len(doc["conditions"]) == 2 * (1 + 4) and arrays["probs"].shape == (10, 32)
    noop = next(c for c in doc["conditions"] if c["index"] == 3 and c["label"] == "δ=0 α=1")
    assert noop["delta_mean_prob"] == 0.0 and noop["flipped"] == 0.0
    for k, c in enumerate(doc["conditions"]):
        assert c["mean_prob"] == pytest.approx(float(arrays["probs"][k].mean()), abs=1e-6)
        flipped = (arrays["probs"][k] >= 0.5) != (arrays["baseline"] >= 0.5)
        assert c["flipped"] == pytest.approx(flipped.mean())
    assert [t["index"] for t in doc["targets"]] == [3, 10]
    report = (out / "report.md").read_text()
    assert "## Summary across targets" in report and "target01_f3_roc.png" in report


def test_steer_cli_bad_input(world, tmp_path) -> None:
    runner = CliRunner()
    # targets computed for another SAE
    other = SparseAutoencoder(SAEConfig(d_in=32, d_sae=64, layer=1, seed=9))
    other.save(tmp_path / "other_sae")
    args = _args(world, tmp_path / "o")
    args[args.index("--sae") + 1] = str(tmp_path / "other_sae")
    res = runner.invoke(steer, args)
    assert res.exit_code == 1 and "computed for SAE" in res.output
    # a classifier of the wrong input width
    cfg = ClassifierConfig(d_in=16, input_kind="hidden", layer=1, positive_label=POSITIVE)
    ConvClassifier(cfg).save(tmp_path / "narrow")
    (tmp_path / "narrow" / "split.json").write_text((world["clf"] / "split.json").read_text())
    args = _args(world, tmp_path / "o")
    args[args.index("--classifier") + 1] = str(tmp_path / "narrow")
    res = runner.invoke(steer, args)
    assert res.exit_code == 1 and "expects inputs of width 16" in res.output
    # negative δ or α
    res = runner.invoke(steer, _args(world, tmp_path / "o", "--min-act", "-1"))
    assert res.exit_code == 1 and "min-act" in res.output
    res = runner.invoke(steer, _args(world, tmp_path / "o", "--alpha", "-2"))
    assert res.exit_code == 1 and "alpha" in res.output
    # empty data
    empty = tmp_path / "empty.tsv"
    empty.write_text("id\tchrom\tstart\tend\tstrand\tsequence\tlabel\n")
    args = _args(world, tmp_path / "o")
    args[args.index("--data") + 1] = str(empty)
    res = runner.invoke(steer, args)
    assert res.exit_code == 1 and "no sequences" in res.output
    # a classifier that reads a layer before the SAE's
    args = _args(world, tmp_path / "o")
    args[args.index("--classifier") + 1] = str(_classifier(world, "clf_l0", layer=0, epochs=1))
    res = runner.invoke(steer, args)
    assert res.exit_code == 1 and "before the SAE's layer" in res.output
    assert not (tmp_path / "o" / "report.md").exists()
