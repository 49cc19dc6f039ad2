"""The shared --device/--reference/--model options: checked before any model is loaded."""

from __future__ import annotations

import click
import pytest
import torch
from click.testing import CliRunner

from hsg.cli import cli
from hsg.cli.options import device_option, model_option, reference_option


@click.command()
@model_option()
@reference_option
@device_option
def probe(model, reference, device):
    click.echo(f"{model}|{reference}|{device}")


def _run(*args: str):
    return CliRunner().invoke(probe, ["--model", "m", *args])


def test_device_defaults_to_what_the_machine_has():
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert _run().output.strip() == f"m|None|{want}"
    assert _run("--device", "auto").output.strip() == f"m|None|{want}"  # older spelling
    assert _run("--device", "cpu").output.strip() == "m|None|cpu"


@pytest.mark.parametrize(
    ("value", "message"),
    [("gpu", "not a torch device"), ("cuda:7", "CUDA"), ("cuda", "CUDA")],
)
def test_a_bad_or_absent_device_is_refused_by_name(value, message):
    if value.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that device")
    if value == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = _run("--device", value)
    assert res.exit_code == 2
    assert "--device" in res.output and message in res.output


def test_reference_must_be_an_existing_file(tmp_path):
    res = _run("--reference", str(tmp_path / "absent.fa"))
    assert res.exit_code == 2 and "--reference" in res.output
    fasta = tmp_path / "ref.fa"
    fasta.write_text(">chr1\nACGT\n")
    assert _run("--reference", str(fasta)).output.strip().split("|")[1] == str(fasta)


@pytest.mark.parametrize(
    "command",
    [
        ["ingest", "IN"],
        ["correlate", "--regions", "IN", "--tracks", "IN", "--sae-dir", "."],
        ["models", "embed", "IN", "--layer", "0", "--out", "x"],
        ["sae", "train", "--out", "x"],
        ["classifier", "train", "--data", "IN", "--out", "x"],
        ["steer", "--targets", "IN", "--classifier", ".", "--sae", ".", "--data", "IN"],
    ],
)
def test_every_encoding_command_checks_the_device_before_loading(tmp_path, command):
    src = tmp_path / "in.tsv"
    src.write_text("id\tsequence\n")
    args = [str(src) if a == "IN" else a for a in command]
    if "--model" not in args and command[0] != "sae":
        args += ["--model", str(tmp_path / "no-model")]
    res = CliRunner().invoke(cli, [*args, "--device", "gpu"])
    assert res.exit_code == 2, res.output
    assert "--device" in res.output and "not a torch device" in res.output


def test_models_embed_runs_bf16_on_the_cpu(tmp_path):
    """--dtype beside --device (issue #17): bf16 on the CPU through the oneDNN path."""
    from hsg import api
    from hsg.models.kernels import onednn_supported

    if not onednn_supported(torch.device("cpu"), torch.bfloat16):
        pytest.skip("no bfloat16 oneDNN on this CPU")
    model = api.make_tiny_model(tmp_path / "m", "v2")
    src = tmp_path / "in.fa"
    src.write_text(">a\nACGTACGTAACC\n>b\nTTGGCCAA\n")
    for dtype in ("fp32", "bf16"):
        out = tmp_path / f"{dtype}.npy"
        args = ["models", "embed", str(src), "--model", str(model), "--layer", "2"]
        res = CliRunner().invoke(
            cli, [*args, "--out", str(out), "--device", "cpu", "--dtype", dtype]
        )
        assert res.exit_code == 0, res.output
        assert out.is_file()
    bad = CliRunner().invoke(cli, ["models", "embed", str(src), "--dtype", "fp64"])
    assert bad.exit_code == 2 and "--dtype" in bad.output
