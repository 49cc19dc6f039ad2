"""The Python API: its surface, its silence, and that options reach the step they name."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from hsg import api

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"


def test_every_public_name_is_documented():
    for name in api.__all__:
        obj = getattr(api, name)
        if callable(obj):
            assert obj.__doc__ and obj.__doc__.strip(), f"hsg.api.{name} has no docstring"
    docs = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    for name in ("load_encoder", "load_sae", "connect", "ingest", "pagerank", "targets",
                 "steer", "correlate", "embed", "train_sae", "check_compatible"):  # fmt: skip
        assert name in api.__all__ and f"`{name}(" in docs, name


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder

    root = tmp_path_factory.mktemp("api")
    model = api.make_tiny_model(root / "model", "v2")
    enc = api.load_encoder(model, device="cpu")
    cfg = SAEConfig(
        d_in=enc.hidden_size,
        d_sae=24,
        layer=1,
        model_id=enc.model_id,
        encoder_checkpoint_hash=enc.checkpoint_hash,
    )
    return {"model": model, "encoder": enc, "sae": SparseAutoencoder(cfg).save(root / "sae")}


def test_api_prints_nothing(tiny, capsys):
    summary = api.ingest(
        FIXTURES / "loci_small.tsv", tiny["encoder"], tiny["sae"], dry_run=True, device="cpu"
    )
    assert summary.sequences_encoded > 0 and summary.activations > 0
    batch = api.embed(tiny["encoder"], ["ACGTACGTAAGG", "TTGACC"], layer=1)
    assert batch.hidden.shape[0] == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_ingest_reports_progress_per_stage(tiny):
    seen: dict[str, int] = {}

    def progress(stage: str, n: int, total: int | None) -> None:
        seen[stage] = seen.get(stage, 0) + n

    summary = api.ingest(
        FIXTURES / "loci_small.tsv",
        tiny["model"],
        tiny["sae"],
        dry_run=True,
        device="cpu",
        progress=progress,
    )
    assert seen == {"validating": summary.sequences_read, "ingesting": summary.sequences_read}


def test_too_long_sequence_is_bad_input_before_any_write(tiny, tmp_path):
    from hsg.regions.records import InputError

    long = tmp_path / "long.fa"
    long.write_text(">long\n" + "ACGT" * 20_000 + "\n")
    with pytest.raises(InputError, match="too long"):
        api.ingest(long, tiny["encoder"], tiny["sae"], dry_run=True)


def test_sae_train_caches_on_the_device_it_is_given(tiny, tmp_path, monkeypatch):
    """`hsg sae train --device` used to be ignored while caching activations."""
    import hsg.models.encoder as encoder_module

    real = encoder_module.load_encoder
    devices = []

    def spy(path, device=None, dtype=None):
        devices.append(device)
        return real(path, device=device, dtype=dtype)

    monkeypatch.setattr(encoder_module, "load_encoder", spy)
    from hsg.cli import cli

    res = CliRunner().invoke(cli, [
        "sae", "train", "--data", str(FIXTURES / "loci_small.tsv"), "--model", str(tiny["model"]),
        "--layer", "1", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "sae"),
        "--d-sae", "16", "--epochs", "1", "--val-fraction", "0.5", "--device", "cpu", "--quiet",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert devices == ["cpu"]


def test_window_tiles_a_too_long_region(tiny, tmp_path):
    from hsg.regions.records import InputError

    most = 6 * (tiny["encoder"].max_tokens - 1)
    long = tmp_path / "long.fa"
    long.write_text(f">chr1:0-{3 * most}(+)\n" + "ACGTTGCA" * (3 * most // 8) + "\n")
    with pytest.raises(InputError, match="--window SIZE"):
        api.ingest(long, tiny["encoder"], tiny["sae"], dry_run=True)
    summary = api.ingest(
        long, tiny["encoder"], tiny["sae"], dry_run=True, window=most, stride=most // 2
    )
    assert summary.sequences_read == summary.sequences_encoded == 5
