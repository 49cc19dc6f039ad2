"""``hsg models make-tiny / info / embed`` end to end on tiny models and small files."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from hsg.cli import cli
from hsg.models.encoder import load_encoder
from hsg.models.output import read_embeddings

torch.set_num_threads(1)

ROWS = [
    ("chr1:100-130(+)", "chr1", 100, 130, "+", "ACGTAGCTAGCTAGGATCGATCGATTGACA", "1"),
    ("chr2:5-12(-)", "chr2", 5, 12, "-", "GATTACA", "0"),
    ("chr3:0-20(+)", "chr3", 0, 20, "+", "ACGTTGCANNACGTTGCAAC", "1"),
]


def _tsv(path):
    lines = ["id\tchrom\tstart\tend\tstrand\tsequence\tlabel"]
    lines += ["\t".join(map(str, row)) for row in ROWS]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "tiny-v2"
    args = ["--version", "v2", "--layers", "2", "--hidden", "16", "--heads", "2"]
    result = CliRunner().invoke(cli, ["models", "make-tiny", str(out), *args])
    assert result.exit_code == 0, result.output
    return out


def test_help_lists_commands():
    result = CliRunner().invoke(cli, ["models", "--help"])
    assert result.exit_code == 0
    for name in ("make-tiny", "embed", "info"):
        assert name in result.output


def test_make_tiny_deterministic_and_refuses_non_empty(tiny, tmp_path):
    runner = CliRunner()
    again = tmp_path / "again"
    args = ["--layers", "2", "--hidden", "16", "--heads", "2"]
    assert runner.invoke(cli, ["models", "make-tiny", str(again), *args]).exit_code == 0
    assert (again / "model.safetensors").read_bytes() == (tiny / "model.safetensors").read_bytes()
    result = runner.invoke(cli, ["models", "make-tiny", str(again)])
    assert result.exit_code != 0 and "not empty" in result.output
    bad = runner.invoke(cli, ["models", "make-tiny", str(tmp_path / "bad"), "--hidden", "30",
                              "--heads", "4"])  # fmt: skip
    assert bad.exit_code != 0 and "multiple" in bad.output
    enc = load_encoder(tiny)
    assert (enc.version, enc.num_layers, enc.hidden_size) == ("v2", 2, 16)


def test_info(tiny):
    result = CliRunner().invoke(cli, ["models", "info", str(tiny)])
    assert result.exit_code == 0, result.output
    assert "NT v2" in result.output and load_encoder(tiny).checkpoint_hash in result.output


@pytest.mark.parametrize("fmt", ["safetensors", "npy"])
def test_embed_tsv_writes_hidden_states_ids_and_masks(tiny, tmp_path, fmt):
    out = tmp_path / ("out.safetensors" if fmt == "safetensors" else "out_npy")
    result = CliRunner().invoke(cli, [
        "models", "embed", "--model", str(tiny), "--layer", "1", str(_tsv(tmp_path / "in.tsv")),
        "--out", str(out), "--format", fmt, "--batch-size", "2",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    stored = read_embeddings(out)
    assert stored.ids == [r[0] for r in ROWS]
    assert stored.metadata["layer"] == "1" and stored.metadata["version"] == "v2"
    enc = load_encoder(tiny)
    assert stored.metadata["checkpoint_hash"] == enc.checkpoint_hash
    expected = enc.embed([r[5] for r in ROWS], layer=1, names=[r[0] for r in ROWS])
    t = expected.hidden.shape[1]
    assert stored.hidden.shape == (3, t, 16)
    torch.testing.assert_close(stored.hidden, expected.hidden, atol=1e-6, rtol=0)
    assert torch.equal(stored.input_ids, expected.input_ids)
    assert torch.equal(stored.attention_mask, expected.attention_mask)
    assert torch.equal(stored.content_mask, expected.content_mask)
    spans = stored.token_start[2][stored.content_mask[2]].tolist()
    assert spans == [s for s, _ in expected.offsets[2]]


def test_embed_fasta_with_windows(tmp_path):
    runner = CliRunner()
    model = tmp_path / "m"
    assert runner.invoke(cli, ["models", "make-tiny", str(model), "--hidden", "8",
                               "--heads", "2", "--layers", "1"]).exit_code == 0  # fmt: skip
    fasta = tmp_path / "in.fa"
    fasta.write_text(">one\nACGTACGTAC\n>two\n" + "ACGTAC" * 3000 + "\n")  # 3001 tokens > 2048
    out = tmp_path / "w.safetensors"
    args = [
        "models",
        "embed",
        "--model",
        str(model),
        "--layer",
        "-1",
        str(fasta),
        "--out",
        str(out),
    ]
    refused = runner.invoke(cli, args)
    assert refused.exit_code != 0 and "'two'" in refused.output and "--window" in refused.output
    assert not out.exists()
    result = runner.invoke(cli, [*args, "--window", "--final-norm"])
    assert result.exit_code == 0, result.output
    stored = read_embeddings(out)
    assert stored.ids == ["one", "two", "two"]
    assert stored.window_start.tolist() == [0, 0, 2047 * 6]
    assert stored.metadata["final_norm"] == "True" and stored.metadata["layer"] == "1"


def test_embed_errors_are_one_line_messages(tiny, tmp_path):
    runner = CliRunner()
    tsv = _tsv(tmp_path / "in.tsv")
    out = ["--out", str(tmp_path / "o")]
    missing = runner.invoke(
        cli, ["models", "embed", "--model", str(tmp_path / "nope"), "--layer", "1", str(tsv), *out]
    )
    assert missing.exit_code != 0 and str(tmp_path / "nope") in missing.output
    assert "Traceback" not in missing.output
    bad_layer = runner.invoke(
        cli, ["models", "embed", "--model", str(tiny), "--layer", "9", str(tsv), *out]
    )
    assert bad_layer.exit_code != 0 and "out of range" in bad_layer.output
    bad_tsv = tmp_path / "bad.tsv"
    bad_tsv.write_text(tsv.read_text().replace("GATTACA", "GATUACA"))
    bad = runner.invoke(
        cli, ["models", "embed", "--model", str(tiny), "--layer", "1", str(bad_tsv), *out]
    )
    assert bad.exit_code != 0 and "bad.tsv" in bad.output and "'U'" in bad.output
