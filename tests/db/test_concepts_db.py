"""Concepts, motifs and the atlas against the real server: a planted feature read back from
ACTIVATES detects the JASPAR motif its sequences carry, resembles that motif's matrix, the
relationships are replaced per run, and the CLI reports bad input in one line."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from hsg.concepts.data import token_index
from hsg.graph.writer import GraphWriter, SequenceWrite

pytestmark = pytest.mark.db

SAE = "tiny/L1/topk-6-c0ncept5"
PLANTED = "MA0080"  # Spi1
COMPLEMENT = str.maketrans("ACGT", "TGCA")


@pytest.fixture(scope="module")
def matrix():
    pytest.importorskip("pyjaspar")
    from hsg.regions.motifs import load_jaspar_matrices

    _, matrices = load_jaspar_matrices()
    return next(m for m in matrices if m.motif_id.startswith(PLANTED + "."))


def planted_writes(matrix, n=160, seed=1) -> list[SequenceWrite]:
    """Half the sequences carry a Spi1 instance; feature 0 fires on the tokens overlapping
    it, features 1-5 at random. Annotations are the real JASPAR scan of the sequences."""
    from hsg.regions.motifs import MotifScanner

    rng = np.random.default_rng(seed)
    freq = matrix.counts / matrix.counts.sum(axis=1, keepdims=True)
    ids, seqs, sites = [], [], []
    for i in range(n):
        s = list(rng.choice(list("ACGT"), 100))
        site = None
        if i % 2 == 0:
            inst = "".join("ACGT"[rng.choice(4, p=row)] for row in freq)
            if rng.random() < 0.5:
                inst = inst[::-1].translate(COMPLEMENT)
            a = int(rng.integers(0, 100 - len(inst)))
            s[a : a + len(inst)] = inst
            site = (a, a + len(inst))
        ids.append(f"chr1:{1000 * i}-{1000 * i + 100}(+)")
        seqs.append("".join(s))
        sites.append(site)
    scanner = MotifScanner.from_matrices([matrix], pvalue=1e-4, source="JASPAR test")
    hits = list(scanner.scan_many(seqs))
    index = token_index(ids, seqs)
    writes = []
    for i, sid in enumerate(ids):
        acts = []
        for r in range(index.row_start[i], index.row_start[i + 1]):
            pos = int(r - index.row_start[i])
            t0, t1 = (int(x) for x in index.spans[r])
            token = seqs[i][t0:t1]
            site = sites[i]
            if site and t0 < site[1] and t1 > site[0]:
                acts.append([0, pos, token, 1.0 + min(site[1], t1) - max(site[0], t0), 0])
            elif rng.random() < 0.5:
                acts.append([int(rng.integers(1, 6)), pos, token, float(rng.gamma(2.0)), 0])
        props = {"sequence": seqs[i], "length": 100, "chrom": "chr1", "start": 1000 * i,
                 "end": 1000 * i + 100, "strand": "+"}  # fmt: skip
        label = "binding" if sites[i] else "non_binding"
        writes.append(SequenceWrite(sid, props, [label], acts, hits[i]))
    return writes


@pytest.fixture(scope="module")
def graph(driver, settings, matrix):
    from hsg.db.schema import apply_schema
    from hsg.graph.maintenance import wipe

    wipe(driver, settings.database)
    apply_schema(driver, settings.database)
    writer = GraphWriter(driver, settings.database, SAE, "run-c")
    writer.register(
        model={"id": "c0ffee", "name": "tiny", "version": "v2", "checkpoint_hash": "c0ffee"},
        sae={
            "id": SAE,
            "layer": 1,
            "d_in": 8,
            "d_sae": 6,
            "architecture": "topk",
            "config": "{}",
        },  # fmt: skip
        d_sae=6,
        run={"id": "run-c"},
    )
    writer.write_batch(planted_writes(matrix))
    yield settings
    wipe(driver, settings.database)


_COUNTS = {
    "DETECTS": "MATCH (:Feature {sae: $sae})-[r:DETECTS]->() RETURN count(r) AS n",
    "RESEMBLES": "MATCH (:Feature {sae: $sae})-[r:RESEMBLES]->() RETURN count(r) AS n",
}


def _count(driver, database, rel: str) -> int:
    records = driver.execute_query(_COUNTS[rel], sae=SAE, database_=database).records
    return records[0]["n"]


def test_planted_feature_detects_its_motif_and_runs_replace(graph, driver, tmp_path):
    from hsg import api

    with api.connection_for(graph) as conn:
        run = api.concepts(connection=conn, out=tmp_path / "c", top=3)
        best = run.best[run.best["concept"] == "Spi1"].iloc[0]
        assert best["feature"] == f"{SAE}/0"
        assert best["f1"] > 0.9
        assert run.written == len(run.best) > 0
        first = _count(driver, graph.database, "DETECTS")
        rows = conn.query("features_detecting_concept", concept="Spi1", limit=1)
        assert rows["feature"].tolist() == [f"{SAE}/0"]
        assert rows["f1"].iloc[0] == pytest.approx(best["f1"])
        # a second run replaces, never adds
        again = api.concepts(connection=conn, top=3, plot=False)
        assert again.written == first == _count(driver, graph.database, "DETECTS")
    for name in ("concepts.tsv", "concepts.parquet", "concepts_best.tsv", "concepts.png"):
        assert (tmp_path / "c" / name).is_file()


@pytest.mark.slow  # JASPAR load + Tomtom
def test_motifs_resemble_the_planted_matrix_and_atlas_renders(graph, driver, matrix, tmp_path):
    from hsg import api

    with api.connection_for(graph) as conn:
        api.concepts(connection=conn, plot=False)
        run = api.motifs(connection=conn, features=["0", f"{SAE}/1"], out=tmp_path / "m")
        assert run.motifs[0].best.motif_id == matrix.motif_id
        rows = conn.query("features_resembling_motif", motif=matrix.motif_id, limit=5)
        assert rows["feature"].tolist()[0] == f"{SAE}/0"
        n = _count(driver, graph.database, "RESEMBLES")
        assert api.motifs(connection=conn, features=["0"], logos=False).written <= n
        summary = api.atlas(tmp_path / "atlas", connection=conn)
    index = (tmp_path / "atlas" / "index.html").read_text()
    assert "Spi1" in index and f"{SAE}/0" in index
    card = (tmp_path / "atlas" / "features" / "0.html").read_text()
    assert "<mark>" in card and "logos/0.png" in card
    assert summary.logos >= 1


def test_cli_reports_bad_input_in_one_line(graph, tmp_path):
    from hsg.cli import cli

    env = {"NEO4J_URI": graph.uri, "NEO4J_PASSWORD": graph.password}
    runner = CliRunner()
    result = runner.invoke(cli, ["concepts", "--sae-id", "nope", "--out", str(tmp_path)], env=env)
    assert result.exit_code == 1
    assert "no SAE 'nope' in the graph" in result.output
    result = runner.invoke(cli, ["concepts", "--thresholds", "0.5,0.2"], env=env)
    assert result.exit_code == 1 and "thresholds" in result.output
    result = runner.invoke(
        cli, ["concepts", "--no-plot", "--top", "1", "--out", str(tmp_path / "c")], env=env
    )
    assert result.exit_code == 0, result.output
    assert "Spi1" in result.output
    result = runner.invoke(cli, ["atlas", "--out", str(tmp_path / "a")], env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "index.html").is_file()
