"""Classifier head: metrics, split, length-blindness, early stopping, a motif task, the CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hsg.cli.steer import classifier
from hsg.models.encoder import load_encoder
from hsg.models.tiny import make_tiny
from hsg.regions.synthetic import make_synthetic_dataset, write_tsv
from hsg.sae.config import SAEConfig
from hsg.sae.model import SparseAutoencoder
from hsg.steer.classifier import (
    ClassifierConfig,
    ClassifierError,
    ConvClassifier,
    TrainConfig,
    _loss,
    default_channels,
    default_kernel_size,
    split_sha256,
    stratified_split,
    train_classifier,
)
from hsg.steer.features import FeatureSet, collate, encode_features
from hsg.steer.metrics import auroc, binary_metrics, f1_score, roc_curve

POSITIVE = "motif_positive"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("clf")
    model = make_tiny(root / "model", "v2", layers=2, hidden=32, seed=0)
    records = make_synthetic_dataset(n=160, length=60, seed=0)
    data = write_tsv(records, root / "data.tsv")
    return {"root": root, "model": model, "records": records, "data": data}


# ---------------------------------------------------------------------- metrics


def test_auroc_equals_pair_counting_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(40) < 0.4
    s = rng.integers(0, 5, 40).astype(float)  # many ties
    pairs = [(p, n) for p, n in itertools.product(s[y], s[~y])]
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert auroc(y, s) == pytest.approx(expected)
    fpr, tpr = roc_curve(y, s)
    assert np.trapezoid(tpr, fpr) == pytest.approx(expected)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert auroc(y, np.ones(40)) == 0.5
    assert np.isnan(auroc(np.ones(5), np.arange(5)))


def test_f1_and_confusion() -> None:
    y = [1, 1, 0, 0, 1]
    m = binary_metrics(y, [0.9, 0.2, 0.7, 0.1, 0.6])
    assert m["confusion"] == [[1, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert f1_score([0, 0], [0, 0]) == 0.0


# ---------------------------------------------------------------------- config and split


def test_kernel_and_channel_rules() -> None:
    assert [default_kernel_size(c) for c in (4, 16, 32, 256, 512, 4096, 16384)] == [
        3,
        3,
        5,
        5,
        7,
        7,
        9,
    ]
    assert [default_channels(c) for c in (8, 32, 512, 4096)] == [16, 16, 128, 128]
    cfg = ClassifierConfig(d_in=512, input_kind="hidden", layer=3, positive_label="p")
    assert (cfg.kernel_size, cfg.channels) == (7, 128)
    assert ClassifierConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="odd"):
        ClassifierConfig(d_in=8, input_kind="hidden", layer=0, positive_label="p", kernel_size=4)
    with pytest.raises(ValueError, match="SAE id"):
        ClassifierConfig(d_in=8, input_kind="latents", layer=0, positive_label="p")


def test_split_is_stratified_seeded_and_order_free() -> None:
    ids = [f"chr1:{i}-{i + 10}(+)" for i in range(200)]
    labels = [i % 4 == 0 for i in range(200)]  # 50 positives
    split = stratified_split(ids, labels, seed=7)
    assert sorted(itertools.chain(*split.values())) == sorted(ids)
    assert {len(v) for v in split.values()} == {len(split["train"]), 32, 40}
    pos = set(i for i, y in zip(ids, labels, strict=True) if y)
    assert sum(i in pos for i in split["test"]) == 10  # 20% of each class
    assert sum(i in pos for i in split["val"]) == 8  # 16% of each class
    shuffled = list(zip(ids, labels, strict=True))[::-1]
    again = stratified_split([i for i, _ in shuffled], [y for _, y in shuffled], seed=7)
    assert again == split
    assert split_sha256(again) == split_sha256(split)
    assert stratified_split(ids, labels, seed=8) != split
    with pytest.raises(ClassifierError, match="duplicate"):
        stratified_split(["a", "a"], [True, False])


# ---------------------------------------------------------------------- the network


def test_padding_does_not_leak_length() -> None:
    torch.manual_seed(0)
    cfg = ClassifierConfig(d_in=16, input_kind="hidden", layer=1, positive_label="p")
    model = ConvClassifier(cfg).eval()
    gen = torch.Generator().manual_seed(1)
    rows = [torch.randn(n, 16, generator=gen) for n in (5, 23, 11, 40, 2)]
    alone = torch.cat([model.predict_proba(*collate([r])) for r in rows])
    together = model.predict_proba(*collate(rows))
    assert torch.equal(alone, together)
    # what sits in the padded positions is invisible
    x, mask = collate(rows)
    x[~mask] = 1e3
    assert torch.equal(model.predict_proba(x, mask), together)


def test_wrong_input_width_is_a_clear_error() -> None:
    cfg = ClassifierConfig(d_in=16, input_kind="hidden", layer=1, positive_label="p")
    with pytest.raises(ClassifierError, match="width 16.*width 8"):
        ConvClassifier(cfg)(torch.zeros(1, 3, 8), torch.ones(1, 3, dtype=torch.bool))


def noisy_features(n: int = 80, seed: int = 0) -> tuple[FeatureSet, list[bool]]:
    gen = torch.Generator().manual_seed(seed)
    labels = [bool(i % 2) for i in range(n)]
    rows = [torch.randn(6, 8, generator=gen) + 0.15 * y for y in labels]
    return FeatureSet([f"s{i}" for i in range(n)], rows, "hidden", 0, 8), labels


def test_early_stopping_keeps_the_best_weights() -> None:
    feats, labels = noisy_features()
    split = stratified_split(feats.ids, labels, seed=0)
    cfg = ClassifierConfig(d_in=8, input_kind="hidden", layer=0, positive_label="p", channels=32)
    result = train_classifier(
        feats, labels, split, cfg, TrainConfig(epochs=30, patience=4, lr=1e-2)
    )
    val_losses = [h["val_loss"] for h in result.history]
    assert result.best_epoch == int(np.argmin(val_losses)) + 1
    assert result.best_epoch < len(result.history)  # it ran past the best and went back
    position = {s: i for i, s in enumerate(feats.ids)}
    y = torch.tensor(labels, dtype=torch.long)
    weights = torch.ones(2, dtype=torch.float64)
    val = [position[s] for s in split["val"]]
    assert _loss(result.model, feats, val, y, weights, 256) == pytest.approx(min(val_losses))
    again = train_classifier(feats, labels, split, cfg, TrainConfig(epochs=30, patience=4, lr=1e-2))
    assert again.history == result.history  # seeded: the same run twice


def test_learns_a_planted_motif_from_a_tiny_model(world) -> None:
    encoder = load_encoder(world["model"])
    records = world["records"]
    ids = [r.id for r in records]
    labels = [POSITIVE in r.labels for r in records]
    feats = encode_features(encoder, [r.sequence for r in records], ids, layer=1)
    assert feats.width == 32 and all(r.shape[0] == 10 for r in feats.rows)  # 60 bp = 10 tokens
    split = stratified_split(ids, labels, seed=0)
    cfg = ClassifierConfig(d_in=32, input_kind="hidden", layer=1, positive_label=POSITIVE)
    result = train_classifier(feats, labels, split, cfg, TrainConfig())
    assert result.metrics["test"]["auroc"] > 0.9
    assert result.metrics["test"]["accuracy"] > 0.8


def test_save_load_round_trip_and_tamper_check(tmp_path) -> None:
    cfg = ClassifierConfig(d_in=8, input_kind="hidden", layer=0, positive_label="p")
    model = ConvClassifier(cfg)
    model.save(tmp_path)
    loaded = ConvClassifier.load(tmp_path)
    assert loaded.cfg == model.cfg and loaded.cfg.weights_sha256
    x, mask = collate([torch.randn(4, 8)])
    assert torch.equal(loaded.predict_proba(x, mask), model.predict_proba(x, mask))
    (tmp_path / "classifier.safetensors").write_bytes(b"junk")
    with pytest.raises(ClassifierError, match="hash mismatch"):
        ConvClassifier.load(tmp_path)


# ---------------------------------------------------------------------- CLI


def _eval(world, clf_dir: Path, *extra: str):
    """`hsg classifier eval` of ``clf_dir`` on the world's data and model."""
    args = ["eval", "--classifier", str(clf_dir), "--data", str(world["data"])]
    return CliRunner().invoke(classifier, [*args, "--model", str(world["model"]), *extra])


def test_cli_train_and_eval_on_hidden_states(world) -> None:
    out = world["root"] / "clf_hidden"
    args = [
        "train",
        "--data",
        str(world["data"]),
        "--model",
        str(world["model"]),
        "--layer",
        "1",
        "--positive",
        POSITIVE,
        "--out",
        str(out),
        "--split-seed",
        "3",
    ]
    res = CliRunner().invoke(classifier, args)
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "classifier.json").read_text())
    split = json.loads((out / "split.json").read_text())
    assert cfg["input_kind"] == "hidden" and cfg["layer"] == 1 and cfg["split_seed"] == 3
    assert cfg["model_id"] == "model" and cfg["model_checkpoint_hash"] != "unsaved"
    assert cfg["split_sha256"] == split_sha256({k: split[k] for k in ("train", "val", "test")})
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (102, 26, 32)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["auroc"] > 0.75
    res = _eval(world, out)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["auroc"] == pytest.approx(metrics["test"]["auroc"])


def test_cli_train_on_latents_records_the_sae(world) -> None:
    encoder = load_encoder(world["model"])
    sae = SparseAutoencoder(SAEConfig(d_in=32, d_sae=64, layer=1, model_id=encoder.model_id))
    sae.save(world["root"] / "sae")
    out = world["root"] / "clf_latents"
    args = [
        "train",
        "--data",
        str(world["data"]),
        "--model",
        str(world["model"]),
        "--sae",
        str(world["root"] / "sae"),
        "--positive",
        POSITIVE,
        "--out",
        str(out),
        "--epochs",
        "2",
    ]
    res = CliRunner().invoke(classifier, args)
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "classifier.json").read_text())
    assert (cfg["input_kind"], cfg["layer"], cfg["d_in"]) == ("latents", 1, 64)
    assert cfg["sae_id"] == sae.sae_id
    res = _eval(world, out)
    assert res.exit_code == 1 and "pass --sae" in res.output
    res = _eval(world, out, "--sae", str(world["root"] / "sae"), "--split", "all")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["n"] == 160


def test_cli_bad_input(world, tmp_path) -> None:
    base = ["train", "--model", str(world["model"]), "--layer", "1", "--out", str(tmp_path / "o")]
    res = CliRunner().invoke(classifier, [*base, "--data", str(world["data"]), "--positive", "x"])
    assert res.exit_code == 1 and "no sequence has the label 'x'" in res.output
    empty = tmp_path / "empty.tsv"
    empty.write_text("id\tchrom\tstart\tend\tstrand\tsequence\tlabel\n")
    res = CliRunner().invoke(classifier, [*base, "--data", str(empty), "--positive", POSITIVE])
    assert res.exit_code == 1 and "no sequences" in res.output
    res = CliRunner().invoke(
        classifier, [*base, "--data", str(world["data"]), "--positive", POSITIVE, "--on", "latents"]
    )
    assert res.exit_code == 1 and "needs --sae" in res.output
