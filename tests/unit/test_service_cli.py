"""`hsg ingest --server` and `hsg serve` refuse what they cannot do, before any work."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from hsg import api
from hsg.cli import cli


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture
def regions(tmp_path):
    path = tmp_path / "r.tsv"
    path.write_text("id\tsequence\nx\tACGTACGT\n")
    return path


def test_server_refuses_local_only_options(regions):
    for extra in (["--model", "m"], ["--dry-run"], ["--layer", "1"]):
        result = CliRunner().invoke(
            cli, ["ingest", str(regions), "--server", "http://127.0.0.1:1", *extra]
        )
        assert result.exit_code == 2, result.output
        assert "local options" in result.output


def test_local_ingest_still_needs_model_and_sae(regions):
    result = CliRunner().invoke(cli, ["ingest", str(regions)])
    assert result.exit_code == 2 and "--model" in result.output


def test_unreachable_service_is_one_clear_error(regions):
    url = f"http://127.0.0.1:{_closed_port()}"
    result = CliRunner().invoke(cli, ["ingest", str(regions), "--server", url])
    assert result.exit_code == 1
    assert f"cannot reach the hsg service at {url}" in result.output
    with pytest.raises(api.ServiceError, match="cannot reach"):
        api.ServiceClient(url, "t").health()


def test_serve_needs_a_pair(tmp_path):
    result = CliRunner().invoke(cli, ["serve", "--state-dir", str(tmp_path)])
    assert result.exit_code == 2 and "nothing to serve" in result.output


def test_serve_refuses_a_bad_config(tmp_path):
    cfg = tmp_path / "service.json"
    cfg.write_text('{"prot": 1}')
    result = CliRunner().invoke(cli, ["serve", "--config", str(cfg)])
    assert result.exit_code == 1 and "unknown key(s) in ServiceConfig: prot" in result.output
