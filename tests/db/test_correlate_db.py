"""`hsg correlate --write-graph` against the real server: counts, properties, idempotence,
and that it links only features the graph already holds under their SAE."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from hsg.cli.correlate import correlate
from hsg.graph.analysis_writes import write_correlations
from hsg.graph.writer import GraphWriter
from hsg.regions.records import reverse_complement

pytestmark = pytest.mark.db

TRACKS = ("LINE_L1", "enhancer", "protein_bind:_CTCF")
LAYERS = (0, 1)
D_SAE = 8


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from hsg.models.encoder import load_encoder
    from hsg.models.tiny import make_tiny
    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder

    root = tmp_path_factory.mktemp("correlate_db")
    rng = np.random.default_rng(5)
    genome = "".join(rng.choice(list("ACGT"), size=1200))
    regions = [(40 + 140 * i, 40 + 140 * i + 66, "+-"[i % 2]) for i in range(8)]
    lines = ["id\tchrom\tstart\tend\tstrand\tsequence"]
    for start, end, strand in regions:
        s = genome[start:end] if strand == "+" else reverse_complement(genome[start:end])
        lines.append(f"chr1:{start}-{end}({strand})\tchr1\t{start}\t{end}\t{strand}\t{s}")
    (root / "regions.tsv").write_text("\n".join(lines) + "\n")
    bed = []
    for i, (start, _end, _strand) in enumerate(regions):
        name = TRACKS[i % len(TRACKS)]
        bed.append(f"chr1\t{start + 7 * (i % 5)}\t{start + 20 + 5 * i}\t{name}\t0\t+")
    (root / "tracks.bed").write_text("\n".join(bed) + "\n")
    make_tiny(root / "model", "v2", layers=2, hidden=32, seed=2)
    encoder = load_encoder(root / "model", device="cpu")
    for layer in LAYERS:
        cfg = SAEConfig(d_in=32, d_sae=D_SAE, layer=layer, model_id="model", seed=layer)
        SparseAutoencoder(cfg).save(root / "saes" / f"layer_{layer}")
    # features that vary over the tokens, found without hsg.correlate: only they can rank
    seqs = [ln.split("\t")[5] for ln in lines[1:]]
    live, sae_ids = {}, {}
    for layer in LAYERS:
        sae = SparseAutoencoder.load(root / "saes" / f"layer_{layer}")
        sae_ids[layer] = sae.sae_id
        out = encoder.embed(seqs, layer)
        with torch.inference_mode():
            z = sae.encode(out.hidden[out.content_mask])
        live[layer] = int((z.max(0).values > z.min(0).values).sum())
    return root, live, sae_ids


def _register(driver, database, sae_id: str, d_sae: int = D_SAE, layer: int = 0) -> None:
    """What `hsg ingest` writes first for an SAE: its Model, the SAE, its whole dictionary."""
    writer = GraphWriter(driver, database, sae_id, "run-c")
    writer.register(
        model={"id": "c0ffee", "name": "model", "checkpoint_hash": "c0ffee"},
        sae={"id": sae_id, "layer": layer, "d_sae": d_sae},
        d_sae=d_sae,
        run={"id": "run-c"},
    )


def _run(root, top: int, *extra: str):
    args = [
        "--regions", str(root / "regions.tsv"),
        "--tracks", str(root / "tracks.bed"),
        "--model", str(root / "model"),
        "--sae-dir", str(root / "saes"),
        "--layers", "0-1",
        "--top", str(top),
        "--max-lag", "2",
        "--out", str(root / f"out_{top}"),
        "--device", "cpu",
        "--no-plot",
        "--write-graph",
        *extra,
    ]  # fmt: skip
    res = CliRunner().invoke(correlate, args)
    assert res.exit_code == 0, res.output
    return pd.read_csv(root / f"out_{top}" / "best_features.tsv", sep="\t"), res.output


def _graph(driver, database):
    rows = driver.execute_query(
        "MATCH (f:Feature)-[r:CORRELATES]->(a:Annotation) "
        "RETURN f.id AS feature_id, f.sae AS sae, f.index AS feature, a.id AS annotation, "
        "a.kind AS kind, a.name AS track, a.source AS source, r.pearson AS pearson, "
        "r.ncc AS ncc, r.lag AS lag, r.layer AS layer, r.rank AS rank",
        database_=database,
    ).records
    return pd.DataFrame([dict(r) for r in rows])


def _count(driver, database, query: str) -> int:
    return driver.execute_query(query, database_=database).records[0][0]


def test_write_graph_counts_properties_and_idempotence(assets, clean_db, settings):
    root, live, sae_ids = assets
    driver, db = clean_db, settings.database
    for layer in LAYERS:
        _register(driver, db, sae_ids[layer], layer=layer)
    table, output = _run(root, top=3)
    assert "not written to the graph" not in output
    expected = sum(len(TRACKS) * min(3, live[layer]) for layer in LAYERS)
    assert len(table) == expected

    graph = _graph(driver, db)
    assert len(graph) == expected
    assert set(graph.kind) == {"track"} and set(graph.source) == {"tracks.bed"}
    assert set(graph.annotation) == {f"track:tracks.bed:{t}" for t in TRACKS}
    assert (graph.feature_id == graph.sae + "/" + graph.feature.astype(str)).all()
    # the features are those of the registered dictionaries, none created by the run
    assert _count(driver, db, "MATCH (f:Feature) RETURN count(f)") == D_SAE * len(LAYERS)
    assert _count(driver, db, "MATCH (f:Feature) WHERE NOT (f)-[:IN_SAE]->() RETURN count(f)") == 0
    merged = table.merge(graph, on=["feature_id", "track"], suffixes=("", "_db"))
    assert len(merged) == expected
    np.testing.assert_allclose(merged.pearson_db, merged.pearson, rtol=1e-5)
    np.testing.assert_allclose(merged.ncc_db, merged.ncc, rtol=1e-5)
    assert (merged.lag_db == merged.lag).all() and (merged.layer_db == merged.layer).all()
    assert (merged.rank_db == merged["rank"]).all()

    _run(root, top=3)  # the same run again changes nothing
    again = _graph(driver, db)
    assert len(again) == expected
    assert _count(driver, db, "MATCH (a:Annotation) RETURN count(a)") == len(TRACKS)

    _run(root, top=1)  # fewer best features: the extra relationships are replaced, not kept
    fewer = _graph(driver, db)
    assert len(fewer) == len(TRACKS) * len(LAYERS)
    assert set(fewer["rank"]) == {1}


def test_write_graph_skips_features_of_an_sae_not_in_the_graph(assets, clean_db, settings):
    import json

    root, live, sae_ids = assets
    driver, db = clean_db, settings.database
    _register(driver, db, sae_ids[0], layer=0)  # layer 1's SAE was never ingested
    table, output = _run(root, 2, "--json")
    layer1 = int((table.layer == 1).sum())
    assert layer1 == len(TRACKS) * min(2, live[1]) > 0
    document = json.loads(output[output.index("{") :])
    assert document["graph_relationships"] == len(table) - layer1
    assert document["graph_missing_features"] == layer1
    assert f"{layer1} best-feature row(s) not written to the graph" in output
    assert sae_ids[1] in output  # the warning names some of them
    graph = _graph(driver, db)
    assert set(graph.sae) == {sae_ids[0]} and len(graph) == len(table) - layer1
    assert _count(driver, db, "MATCH (f:Feature) RETURN count(f)") == D_SAE


def test_write_correlations_matches_features_through_their_sae(clean_db, settings):
    driver, db = clean_db, settings.database
    sae = "m/L0/relu-4-00000000"
    _register(driver, db, sae, d_sae=4)
    # a feature node without IN_SAE, as older versions of this command created them
    driver.execute_query(
        "CREATE (:Feature {id: $id, sae: $sae, index: 9})", id=f"{sae}/9", sae=sae, database_=db
    )

    def row(index: int, track: str = "enhancer") -> dict:
        return {
            "feature_id": f"{sae}/{index}",
            "annotation_id": f"track:t.bed:{track}",
            "track": track,
            "pearson": 0.5,
            "ncc": 0.6,
            "lag": 0,
            "layer": 0,
            "rank": 1,
            "tokens": 100,
        }

    def write(rows):
        return write_correlations(
            driver,
            db,
            {sae: rows},
            ["track:t.bed:enhancer", "track:t.bed:CTCF"],
            kind="track",
            source="t.bed",
            rank_by="pearson",
            max_lag=0,
            batch=2,  # several statements in the one transaction
        )

    result = write([row(1), row(9), row(42), row(2, "CTCF")])
    assert (result.written, result.missing) == (2, 2)
    assert result.missing_features == [f"{sae}/9", f"{sae}/42"]
    graph = _graph(driver, db)
    assert sorted(zip(graph.feature_id, graph.track, strict=True)) == [
        (f"{sae}/1", "enhancer"),
        (f"{sae}/2", "CTCF"),
    ]
    assert _count(driver, db, "MATCH (f:Feature) RETURN count(f)") == 5  # 4 + the stray one
    absent = driver.execute_query(
        "MATCH (f:Feature {id: $id}) RETURN count(f)", id=f"{sae}/42", database_=db
    )
    assert absent.records[0][0] == 0
    # a re-run replaces the SAE's relationships to these tracks
    result = write([row(3)])
    assert (result.written, result.missing, result.missing_features) == (1, 0, [])
    assert list(_graph(driver, db).feature_id) == [f"{sae}/3"]
    # rows under an SAE the graph does not hold (the feature is another SAE's): reported
    missing = write_correlations(
        driver, db, {"nope/L0/relu-4-00000001": [row(0)]}, ["track:t.bed:enhancer"],
        kind="track", source="t.bed", rank_by="pearson", max_lag=0,
    )  # fmt: skip
    assert (missing.written, missing.missing) == (0, 1)
    assert _count(driver, db, "MATCH (f:Feature) RETURN count(f)") == 5
