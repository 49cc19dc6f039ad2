"""`hsg correlate --write-graph` against the real server: counts, properties, idempotence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from hsg.cli.correlate import correlate
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
    live = {}
    for layer in LAYERS:
        sae = SparseAutoencoder.load(root / "saes" / f"layer_{layer}")
        out = encoder.embed(seqs, layer)
        with torch.inference_mode():
            z = sae.encode(out.hidden[out.content_mask])
        live[layer] = int((z.max(0).values > z.min(0).values).sum())
    return root, live


def _run(root, top: int):
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
    ]  # fmt: skip
    res = CliRunner().invoke(correlate, args)
    assert res.exit_code == 0, res.output
    return pd.read_csv(root / f"out_{top}" / "best_features.tsv", sep="\t")


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
    root, live = assets
    driver, db = clean_db, settings.database
    table = _run(root, top=3)
    expected = sum(len(TRACKS) * min(3, live[layer]) for layer in LAYERS)
    assert len(table) == expected

    graph = _graph(driver, db)
    assert len(graph) == expected
    assert set(graph.kind) == {"track"} and set(graph.source) == {"tracks.bed"}
    assert set(graph.annotation) == {f"track:tracks.bed:{t}" for t in TRACKS}
    assert (graph.feature_id == graph.sae + "/" + graph.feature.astype(str)).all()
    assert _count(driver, db, "MATCH (f:Feature) RETURN count(f)") == table.feature_id.nunique()
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
