"""Outputs are checked before the work and written whole or not at all."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from hsg.cli import cli
from hsg.fileio import OutputError, atomic_write_text, ensure_writable

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"


def _blocked(tmp_path: Path) -> Path:
    """A path whose parent is a regular file: unwritable even for root."""
    wall = tmp_path / "wall"
    wall.write_text("a file, not a folder\n")
    return wall / "out"


def test_ensure_writable_names_the_location(tmp_path):
    assert ensure_writable(tmp_path / "new" / "x.json") == tmp_path / "new" / "x.json"
    assert (tmp_path / "new").is_dir() and not list((tmp_path / "new").iterdir())
    with pytest.raises(OutputError, match="cannot write to .*wall"):
        ensure_writable(_blocked(tmp_path) / "targets.json")
    with pytest.raises(OutputError, match="is a directory"):
        ensure_writable(tmp_path)


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "targets.json"
    target.write_text("old\n")
    real = os.fsync

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OutputError, match="No space left"):
        atomic_write_text(target, "new\n")
    monkeypatch.setattr(os, "fsync", real)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["targets.json"]  # no temp file left


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from hsg.models.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("outputs") / "model", "v2")


def test_embed_refuses_an_unwritable_out_before_encoding(tiny, tmp_path):
    out = _blocked(tmp_path) / "emb.safetensors"
    args = ["models", "embed", "--model", str(tiny), "--layer", "1"]
    res = CliRunner().invoke(cli, [*args, str(FIXTURES / "loci_small.tsv"), "--out", str(out)])
    assert res.exit_code == 1 and "cannot write" in res.output
    assert "Traceback" not in res.output


def test_targets_refuses_an_unwritable_out_before_querying(tmp_path):
    # nothing listens on this port: the output check must come first
    out = _blocked(tmp_path) / "targets.json"
    res = CliRunner().invoke(cli, ["targets", "--up", "a", "--down", "b", "--out", str(out),
                                   "--uri", "bolt://127.0.0.1:1", "--password", "x"])  # fmt: skip
    assert res.exit_code == 1 and "cannot write to" in res.output, res.output
    res = CliRunner().invoke(cli, ["analyze", "topology", "--label", "a", "--out",
                                   str(_blocked(tmp_path)), "--uri", "bolt://127.0.0.1:1",
                                   "--password", "x"])  # fmt: skip
    assert res.exit_code == 1 and "cannot write to" in res.output, res.output
