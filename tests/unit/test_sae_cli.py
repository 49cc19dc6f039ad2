"""`hsg sae train/eval/info/cache` through the real CLI entry point."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hsg.cli import cli
from hsg.sae.model import CFG_FILE, WEIGHTS_FILE
from hsg.sae.train import METRICS_FILE

FAST = ["--epochs", "2", "--batch-size", "64", "--l1-warmup", "5", "--lr", "3e-3", "--quiet"]


def _run(*args: str):
    return CliRunner().invoke(cli, ["sae", *args], catch_exceptions=False)


def _npy(path, n=600, d=8, seed=0):
    rng = np.random.default_rng(seed)
    np.save(path, (rng.standard_normal((n, d)) * (rng.random((n, d)) < 0.3)).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sae_cli")
    acts = _npy(tmp / "acts.npy")
    out = tmp / "sae"
    res = _run("train", "--activations", str(acts), "--out", str(out), "--d-sae", "32", *FAST)
    assert res.exit_code == 0, res.output
    return tmp, acts, out, res


def test_train_writes_best_sae_and_metrics(trained):
    _, _, out, res = trained
    assert (out / CFG_FILE).is_file() and (out / WEIGHTS_FILE).is_file()
    lines = (out / METRICS_FILE).read_text().splitlines()
    assert len(lines) == 2
    assert "epoch 1" in res.output and "fve=" in res.output and "dead=" in res.output
    summary = json.loads(res.output[res.output.index("{") :])
    assert summary["sae_id"].startswith("unknown-model/L?/relu-32-")
    assert summary["best_epoch"] in (1, 2)


def test_eval_and_info_report_json(trained):
    _, acts, out, _ = trained
    res = _run("eval", "--sae", str(out), "--activations", str(acts), "--device", "cpu")
    assert res.exit_code == 0, res.output
    m = json.loads(res.output)
    assert m["n_tokens"] == 600 and m["split"] == "all"
    assert {"mse", "fve", "l0", "l1", "dead_latents", "loss", "sae_id"} <= set(m)
    val = json.loads(_run("eval", "--sae", str(out), "--activations", str(acts), "--split",
                          "val").output)  # fmt: skip
    assert 0 < val["n_tokens"] < 600
    info = json.loads(_run("info", str(out)).output)
    assert info["d_in"] == 8 and info["sae_id"] == m["sae_id"]


def test_resume_continues_the_run(trained, tmp_path):
    tmp, acts, out, _ = trained
    # a copy of the run, resumed for one more epoch; saved options are reused
    import shutil

    run = tmp_path / "run"
    shutil.copytree(out, run)
    res = _run("train", "--activations", str(acts), "--out", str(run), "--resume",
               "--epochs", "3", "--quiet")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "resuming" in res.output and "epoch 3" in res.output
    assert len((run / METRICS_FILE).read_text().splitlines()) == 3
    again = CliRunner().invoke(cli, ["sae", "train", "--activations", str(acts), "--out",
                                     str(run), *FAST])  # fmt: skip
    assert again.exit_code == 1 and "--resume" in again.output


def test_clear_errors(trained, tmp_path):
    tmp, acts, out, _ = trained
    runner = CliRunner()

    wide = _npy(tmp_path / "wide.npy", d=12)
    res = runner.invoke(cli, ["sae", "eval", "--sae", str(out), "--activations", str(wide)])
    assert res.exit_code == 1
    assert "expects d_in=8" in res.output and "width 12" in res.output
    assert str(out / WEIGHTS_FILE) in res.output

    res = runner.invoke(cli, ["sae", "eval", "--sae", str(tmp_path / "none"),
                              "--activations", str(acts)])  # fmt: skip
    assert res.exit_code == 1 and "not found" in res.output

    res = runner.invoke(cli, ["sae", "train", "--activations", str(tmp_path / "missing.npy"),
                              "--out", str(tmp_path / "o")])  # fmt: skip
    assert res.exit_code == 1 and "activations not found" in res.output

    res = runner.invoke(cli, ["sae", "train", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "exactly one of" in res.output

    import shutil

    bad = tmp_path / "tampered"
    shutil.copytree(out, bad)
    data = bytearray((bad / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (bad / WEIGHTS_FILE).write_bytes(bytes(data))
    res = runner.invoke(cli, ["sae", "info", str(bad)])
    assert res.exit_code == 1 and "hash mismatch" in res.output
    assert str(bad / WEIGHTS_FILE) in res.output
    assert "Traceback" not in res.output


def _tsv(path, n=24, seed=0):
    rng = np.random.default_rng(seed)
    lines = ["id\tsequence\tlabel"]
    for i in range(n):
        seq = "".join(rng.choice(list("ACGT"), size=int(rng.integers(30, 60))))
        lines.append(f"r{i}\t{seq}\t{i % 2}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_train_and_eval_from_regions_with_the_tiny_model(tmp_path):
    tiny = pytest.importorskip("hsg.models.tiny")
    pytest.importorskip("hsg.models.encoder")
    pytest.importorskip("hsg.regions.readers")
    model = tiny.make_tiny(tmp_path / "tiny", "v2")
    data = _tsv(tmp_path / "loci.tsv")
    cache, out = tmp_path / "cache", tmp_path / "sae"
    res = _run("train", "--data", str(data), "--model", str(model), "--layer", "1",
               "--cache", str(cache), "--out", str(out), "--shard-size", "40",
               "--val-fraction", "0.25", *FAST)  # fmt: skip
    assert res.exit_code == 0, res.output
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["layer"] == 1 and manifest["n_sequences"] == 24
    assert all(s["n_tokens"] <= 40 for s in manifest["shards"])
    cfg = json.loads((out / CFG_FILE).read_text())
    assert cfg["layer"] == 1 and cfg["d_in"] == manifest["d_in"]
    assert cfg["encoder_checkpoint_hash"] == manifest["checkpoint_hash"]

    res = _run("eval", "--sae", str(out), "--data", str(data), "--model", str(model),
               "--cache", str(cache))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "reusing activation cache" in res.output
    assert json.loads(res.output[res.output.index("{") :])["n_tokens"] == manifest["n_tokens"]

    # an SAE of another width, pointed at this model's layer, is refused by name
    other = tmp_path / "other"
    acts = _npy(tmp_path / "acts16.npy", n=200, d=16)
    assert _run("train", "--activations", str(acts), "--out", str(other), *FAST).exit_code == 0
    res = CliRunner().invoke(cli, ["sae", "eval", "--sae", str(other), "--data", str(data),
                                   "--model", str(model), "--layer", "1"])  # fmt: skip
    assert res.exit_code == 1
    assert "expects d_in=16" in res.output and "layer 1" in res.output
    assert str(other / WEIGHTS_FILE) in res.output


@pytest.mark.parametrize("fmt", ["safetensors", "npy"])
def test_train_on_models_embed_output(tmp_path, fmt):
    """What `hsg models embed` writes is read as is: content tokens only, ids for the split."""
    tiny = pytest.importorskip("hsg.models.tiny")
    pytest.importorskip("hsg.models.output")
    model = tiny.make_tiny(tmp_path / "tiny", "v2")
    data = _tsv(tmp_path / "loci.tsv", n=20)
    emb = tmp_path / ("emb.safetensors" if fmt == "safetensors" else "emb")
    res = CliRunner().invoke(cli, ["models", "embed", str(data), "--model", str(model),
                                   "--layer", "2", "--out", str(emb), "--format", fmt])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = tmp_path / "sae"
    res = _run("train", "--activations", str(emb), "--out", str(out), "--val-fraction", "0.3",
               *FAST)  # fmt: skip
    assert res.exit_code == 0, res.output
    from hsg.models.output import read_embeddings

    stored = read_embeddings(emb)
    cfg = json.loads((out / CFG_FILE).read_text())
    assert cfg["layer"] == 2 and cfg["model_id"] == stored.metadata["model_id"]
    m = json.loads(_run("eval", "--sae", str(out), "--activations", str(emb)).output)
    assert m["n_tokens"] == int(stored.content_mask.sum())
