"""docs/api.md's worked example runs as written, against the real test server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"

pytestmark = [pytest.mark.db, pytest.mark.slow]


def example_blocks() -> list[str]:
    text = DOC.read_text()
    section = text.split("## A worked example", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_example_has_every_step():
    code = "\n".join(example_blocks())
    for step in ("train_sae", "check_compatible", "ingest", "pagerank", "targets", "steer"):
        assert f"api.{step}(" in code


def test_api_example_runs(clean_db, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "api_example"}
    for i, block in enumerate(example_blocks()):
        exec(compile(block, f"{DOC}:block{i}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "refused:" in out
    summary = namespace["summary"]
    assert summary.sequences_encoded == 120 and summary.activations > 0
    assert namespace["report"].targets, "the example's targets are empty"
    assert (tmp_path / "api-example" / "steer" / "report.md").is_file()
