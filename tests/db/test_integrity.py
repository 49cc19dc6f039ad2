"""Nothing lost, nothing wrong: concurrent ingests, repeated ids, a broken dictionary and
failed runs, against the real server. The fingerprint of a graph is its counts plus the sum
of activations per feature, so a shifted activation changes it even when counts agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from graph_helpers import fingerprint as graph_fingerprint
from graph_helpers import tiny_pair

from hsg import api
from hsg.cli import cli
from hsg.regions.synthetic import make_synthetic_dataset, write_tsv

pytestmark = pytest.mark.db

HSG = [sys.executable, "-m", "hsg"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    pair = tiny_pair(tmp_path_factory.mktemp("integrity"), seed=2, d_sae=40)
    records = make_synthetic_dataset(n=90, seed=5)
    pair["all"] = write_tsv(records, pair["root"] / "all.tsv")
    pair["a"] = write_tsv(records[:60], pair["root"] / "a.tsv")
    pair["b"] = write_tsv(records[30:], pair["root"] / "b.tsv")
    return pair


def fingerprint(driver) -> dict:
    """The shared fingerprint plus node counts a race would double, and unfinished runs."""
    nodes = driver.execute_query(
        "CALL () { MATCH (x:SAE) RETURN count(x) AS saes } "
        "CALL () { MATCH (m:Model) RETURN count(m) AS models } "
        "CALL () { MATCH (r:IngestRun) WHERE r.status <> 'finished' RETURN count(r) AS open } "
        "RETURN saes, models, open"
    ).records[0]
    return {
        **graph_fingerprint(driver),
        "saes": nodes["saes"],
        "models": nodes["models"],
        "unfinished_runs": nodes["open"],
    }


def drop_schema(driver) -> None:
    for row in driver.execute_query("SHOW CONSTRAINTS YIELD name").records:
        driver.execute_query(f"DROP CONSTRAINT `{row['name']}` IF EXISTS")
    for row in driver.execute_query(
        "SHOW INDEXES YIELD name, type WHERE type <> 'LOOKUP' RETURN name"
    ).records:
        driver.execute_query(f"DROP INDEX `{row['name']}` IF EXISTS")


def ingest_cmd(assets, path: Path, *extra: str) -> list[str]:
    return [*HSG, "ingest", str(path), "--model", str(assets["model"]), "--sae",
            str(assets["sae"]), "--device", "cpu", "--batch-size", "8", "--write-batch", "8",
            "--json", *extra]  # fmt: skip


def run_json(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("schema_first", [True, False], ids=["after-db-init", "fresh-database"])
def test_two_concurrent_ingests_equal_one_clean_run(clean_db, assets, schema_first):
    from hsg.db.schema import apply_schema
    from hsg.graph.maintenance import wipe

    if not schema_first:
        drop_schema(clean_db)
    procs = [
        subprocess.Popen(ingest_cmd(assets, assets[k]), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        for k in ("a", "b")
    ]  # fmt: skip
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-2000:]
    summaries = [json.loads(out) for out, _err in outputs]
    concurrent = fingerprint(clean_db)
    # each run counts only what it wrote itself: together, every sequence exactly once
    assert sum(s["sequences_encoded"] for s in summaries) == 90
    assert sum(s["activations"] for s in summaries) == concurrent["counts"]["activates"]

    wipe(clean_db, "neo4j")
    apply_schema(clean_db, "neo4j")
    run_json(ingest_cmd(assets, assets["all"]))
    clean = fingerprint(clean_db)
    assert concurrent == clean
    assert clean["counts"]["sequences"] == 90 and clean["counts"]["encoded_by"] == 90
    with api.connect() as graph:
        assert [f.name for f in graph.check() if not f.ok] == []


def test_a_repeated_id_merges_labels_and_encodes_once(clean_db, assets, tmp_path):
    rows = ["id\tchrom\tstart\tend\tstrand\tsequence\tlabel"]
    seq = "ACGTTGCAAGGGTTAGGGTTAGGGTTAGGGCATG"
    rows += [f"r1\tchr1\t0\t{len(seq)}\t+\t{seq}\tup", "r2\tchr1\t50\t54\t+\tACGT\tdown"]
    rows += [f"r1\tchr1\t0\t{len(seq)}\t+\t{seq}\tdown"]  # same id, same sequence
    path = tmp_path / "dup.tsv"
    path.write_text("\n".join(rows) + "\n")
    with api.connect() as graph:
        summary = api.ingest(path, assets["encoder"], assets["sae"], connection=graph,
                             batch_size=1, device="cpu")  # fmt: skip
    assert summary.sequences_read == 3 and summary.duplicates == 1
    assert summary.sequences_encoded == 2
    labels = clean_db.execute_query(
        "MATCH (s:Sequence {id: 'r1'}) "
        "RETURN COUNT { (s)-[:ENCODED_BY]->() } AS marks, "
        "       [(s)-[:HAS_LABEL]->(l) | l.name] AS labels"
    ).records[0]
    assert labels["marks"] == 1 and sorted(labels["labels"]) == ["down", "up"]


def test_a_repeated_id_with_another_sequence_stores_nothing(clean_db, assets, tmp_path):
    from hsg.regions.records import InputError

    path = tmp_path / "clash.tsv"
    path.write_text(
        "id\tchrom\tstart\tend\tstrand\tsequence\tlabel\n"
        "r1\tchr1\t0\t8\t+\tACGTACGT\tup\n"
        "r2\tchr1\t10\t18\t+\tTTTTAAAA\tup\n"
        "r1\tchr1\t20\t28\t+\tGGGGCCCC\tdown\n"
    )
    with pytest.raises(InputError) as err, api.connect() as graph:
        api.ingest(path, assets["encoder"], assets["sae"], connection=graph, device="cpu")
    assert "line 2" in str(err.value) and "line 4" in str(err.value)
    assert fingerprint(clean_db)["counts"]["sequences"] == 0


def test_a_broken_dictionary_is_refused_before_any_activation(clean_db, assets):
    from hsg.db.errors import DatabaseError

    sae = api.load_sae(assets["sae"], device="cpu")
    with api.connect() as graph:
        api.ingest(assets["a"], assets["encoder"], sae, connection=graph, device="cpu")
        before = fingerprint(clean_db)
        # a second Feature claiming index 3 of this SAE (what a race without the schema made)
        clean_db.execute_query(
            "CREATE (:Feature {id: 'stray', sae: $sae, index: 3})", sae=sae.sae_id
        )
        with pytest.raises(DatabaseError, match="not exactly its 40 features"):
            api.ingest(assets["b"], assets["encoder"], sae, connection=graph, device="cpu")
        problems = {f.name: f for f in graph.check() if not f.ok}
    after = fingerprint(clean_db)
    assert after["counts"]["activates"] == before["counts"]["activates"]
    assert after["counts"]["encoded_by"] == before["counts"]["encoded_by"]
    # the stray also lacks the SAE_<id> node label the writer gives every feature
    assert set(problems) == {"feature_index_duplicates", "features_outside_an_sae",
                             "node_labels_disagree"}  # fmt: skip
    assert problems["feature_index_duplicates"].examples == [f"{sae.sae_id}/3"]
    assert problems["features_outside_an_sae"].examples == ["stray"]
    result = CliRunner().invoke(cli, ["db", "check"])
    assert result.exit_code == 1
    assert "BAD feature_index_duplicates: 1" in result.output and "3 problem(s)" in result.output
    clean_db.execute_query("MATCH (f:Feature {id: 'stray'}) DELETE f")
    result = CliRunner().invoke(cli, ["db", "check"])
    assert result.exit_code == 0 and "is consistent" in result.output, result.output


def test_a_failed_run_is_marked_failed(clean_db, assets):
    from hsg.ingest.pipeline import IngestConfig, run_ingest
    from hsg.regions.readers import read_records

    def records():
        for i, record in enumerate(read_records(assets["a"])):
            if i == 20:
                raise RuntimeError("the input went away")
            yield record

    sae = api.load_sae(assets["sae"], device="cpu")
    cfg = IngestConfig(input=str(assets["a"]), model="m", sae="s", batch_size=8, write_batch=8)
    with api.connect() as graph, pytest.raises(RuntimeError):
        run_ingest(cfg, records(), assets["encoder"], sae, driver=graph.driver)
    run = clean_db.execute_query("MATCH (r:IngestRun) RETURN r.status AS s, r.error AS e")
    row = run.records[0]
    assert row["s"] == "failed" and "the input went away" in row["e"]
    with api.connect() as graph:
        assert [f.name for f in graph.check() if not f.ok] == []
