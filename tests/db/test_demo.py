"""README's first command runs `hsg demo`; this keeps it working (small and fast here)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hsg.cli import cli

pytestmark = pytest.mark.db


def test_demo_runs_whole_path(clean_db, settings, tmp_path):
    args = [
        "demo",
        "--no-start",
        "--work",
        str(tmp_path),
        "-n",
        "60",
        "--epochs",
        "1",
        "--d-sae",
        "32",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "stored per label" in result.output
    # the server it used, not the default one (the tests' server is on another port)
    assert f"Explore it in Neo4j Browser connected to {settings.uri}" in result.output
    counts = clean_db.execute_query(
        "MATCH (s:Sequence)-[:HAS_LABEL]->(l:Label) RETURN l.name AS label, count(s) AS n "
        "ORDER BY label"
    ).records
    assert [(r["label"], r["n"]) for r in counts] == [
        ("motif_negative", 30),
        ("motif_positive", 30),
    ]
    # a second run reuses model and SAE and changes nothing
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert "60 already present" in again.output
    # the analysis half: scores in the graph, targets file, steering report
    scored = clean_db.execute_query(
        "MATCH (:Feature)-[c:CENTRALITY]->(l:Label) RETURN count(DISTINCT l) AS n"
    ).records[0]["n"]
    assert scored == 2
    assert list(tmp_path.glob("targets-*.json"))
    assert list(tmp_path.glob("steer-*/report.md"))
