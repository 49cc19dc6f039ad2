"""HAS_FEATURE agrees with ACTIVATES on graphs built by ingest: after one run, a re-run, a
resumed run, two concurrent runs and a backfill of a graph written without it. The agreement
is computed here independently (pairs aggregated in Python from the ACTIVATES rows) and by
`hsg db check`, which must report both ways of disagreeing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest
from click.testing import CliRunner
from graph_helpers import tiny_pair

from hsg import api
from hsg.cli import cli
from hsg.regions.synthetic import make_synthetic_dataset, write_tsv

pytestmark = pytest.mark.db

HSG = [sys.executable, "-m", "hsg"]
CHECKS = ("has_feature_disagrees", "has_feature_without_activations")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    pair = tiny_pair(tmp_path_factory.mktemp("has_feature"), seed=3, d_sae=32)
    records = make_synthetic_dataset(n=60, seed=7)
    pair["all"] = write_tsv(records, pair["root"] / "all.tsv")
    pair["a"] = write_tsv(records[:40], pair["root"] / "a.tsv")
    pair["b"] = write_tsv(records[20:], pair["root"] / "b.tsv")
    return pair


def ingest_cmd(assets, key: str) -> list[str]:
    return [*HSG, "ingest", str(assets[key]), "--model", str(assets["model"]), "--sae",
            str(assets["sae"]), "--device", "cpu", "--batch-size", "8", "--write-batch", "8",
            "--no-g4", "--json"]  # fmt: skip


def ingest(assets, key: str) -> dict:
    proc = subprocess.run(ingest_cmd(assets, key), capture_output=True, text=True,
                          env=dict(os.environ))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def pairs_from_activates(driver) -> dict:
    rows = driver.execute_query(
        "MATCH (s:Sequence)-[a:ACTIVATES]->(f:Feature) RETURN s.id AS s, f.id AS f, "
        "a.activation AS v"
    ).records
    acc: dict = defaultdict(list)
    for r in rows:
        acc[(r["s"], r["f"])].append(r["v"])
    return {k: (len(v), sum(v), max(v)) for k, v in acc.items()}


def pairs_from_has_feature(driver) -> dict:
    rows = driver.execute_query(
        "MATCH (s:Sequence)-[h:HAS_FEATURE]->(f:Feature) RETURN s.id AS s, f.id AS f, "
        "h.count AS n, h.sum AS total, h.max AS peak"
    ).records
    out: dict = {}
    for r in rows:
        key = (r["s"], r["f"])
        assert key not in out, f"two HAS_FEATURE for {key}"
        out[key] = (r["n"], r["total"], r["peak"])
    return out


def assert_agree(driver) -> int:
    """HAS_FEATURE equals the aggregated ACTIVATES pair by pair; `hsg db check` agrees."""
    expected, stored = pairs_from_activates(driver), pairs_from_has_feature(driver)
    assert expected, "the graph must have activations"
    assert stored.keys() == expected.keys()
    for key, (n, total, peak) in expected.items():
        assert stored[key][0] == n and stored[key][2] == peak, key
        assert stored[key][1] == pytest.approx(total, rel=1e-12, abs=1e-12), key
    with api.connect() as graph:
        findings = {f.name: f for f in graph.check()}
    assert [findings[name].count for name in CHECKS] == [0, 0]
    return len(expected)


@pytest.mark.slow
def test_agree_after_ingest_rerun_and_resume(clean_db, assets):
    ingest(assets, "a")  # a run stopped after the first 40 sequences …
    partial = assert_agree(clean_db)
    summary = ingest(assets, "all")  # … resumed over the whole input
    assert summary["sequences_encoded"] == 20
    full = assert_agree(clean_db)
    assert full > partial
    again = ingest(assets, "all")  # a repeat writes nothing
    assert again["sequences_encoded"] == 0
    assert assert_agree(clean_db) == full


@pytest.mark.slow
def test_agree_after_two_concurrent_ingests(clean_db, assets):
    procs = [
        subprocess.Popen(ingest_cmd(assets, k), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=dict(os.environ))
        for k in ("a", "b")
    ]  # fmt: skip
    for p in procs:
        _out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    assert assert_agree(clean_db) > 0
    assert clean_db.execute_query(
        "MATCH (s:Sequence) RETURN count(s) AS n, sum(COUNT { (s)-[:ENCODED_BY]->() }) AS marks"
    ).records[0].values() == [60, 60]


def test_check_reports_disagreement_and_init_backfills(clean_db, assets):
    ingest(assets, "a")
    before = pairs_from_has_feature(clean_db)
    # a graph as an earlier version wrote it: no HAS_FEATURE; plus one stray pair
    clean_db.execute_query("MATCH ()-[h:HAS_FEATURE]->() DELETE h")
    clean_db.execute_query(
        "MATCH (s:Sequence), (f:Feature) WHERE NOT EXISTS { (s)-[:ACTIVATES]->(f) } "
        "WITH s, f LIMIT 1 CREATE (s)-[:HAS_FEATURE {count: 1, sum: 1.0, max: 1.0}]->(f)"
    )
    with api.connect() as graph:
        findings = {f.name: f for f in graph.check()}
    assert findings["has_feature_disagrees"].count == len(before)
    assert findings["has_feature_without_activations"].count == 1
    result = CliRunner().invoke(cli, ["db", "check"])
    assert result.exit_code == 1 and "has_feature_disagrees" in result.output

    clean_db.execute_query(
        "MATCH (s)-[h:HAS_FEATURE]->(f) WHERE NOT EXISTS { (s)-[:ACTIVATES]->(f) } DELETE h"
    )
    result = CliRunner().invoke(cli, ["db", "init"])
    assert result.exit_code == 0, result.output
    assert "HAS_FEATURE backfilled for 40 encoded sequences" in result.output
    assert assert_agree(clean_db) == len(before)
    assert pairs_from_has_feature(clean_db).keys() == before.keys()
    again = CliRunner().invoke(cli, ["db", "init"])  # nothing left to do
    assert again.exit_code == 0 and "backfilled" not in again.output
