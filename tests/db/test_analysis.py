"""PageRank, targets and topology against the real server.

Correctness is checked against independent computations: networkx PageRank on the same
graph, and a pandas ranking from the raw ACTIVATES rows. The equivalence relied on: on an
undirected graph without isolated nodes there are no dangling nodes, so GDS's unnormalised
PageRank x = (1 - d) + d·M·x and networkx's y = (1 - d)/N + d·M·y solve the same linear
system up to the factor N; dividing both by their sum makes them equal.
"""

from __future__ import annotations

import json
import random

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy.stats import spearmanr

from hsg.analysis import AnalysisError, open_session
from hsg.analysis import pagerank as pr
from hsg.analysis.pagerank import PageRankConfig, run_pagerank
from hsg.analysis.targets import TargetsConfig, compute_targets, load_targets
from hsg.analysis.topology import TopologyConfig, run_topology
from hsg.cli.analysis import analyze, targets
from hsg.graph import analysis_writes
from hsg.graph.writer import GraphWriter, SequenceWrite

pytestmark = pytest.mark.db

SAE = "tiny/L1/relu-8-00000001"
TIGHT = {"max_iterations": 500, "tolerance": 1e-12}
OTHER = "other/L2/relu-30-00000002"


def write_graph(driver, database, sequences, d_sae=8, sae=SAE) -> None:
    """sequences: (id, labels, [(feature, count, activation), ...])."""
    writer = GraphWriter(driver, database, sae, "run-a")
    writer.register(
        model={"id": "c0ffee", "name": "tiny", "version": "v2", "checkpoint_hash": "c0ffee"},
        sae={"id": sae, "layer": 1, "d_sae": d_sae, "config": '{"weights_sha256": "01"}'},
        d_sae=d_sae,
        run={"id": "run-a"},
    )
    writes = []
    for sid, labels, acts in sequences:
        rows, position = [], 0
        for feature, count, activation in acts:
            for _ in range(count):
                rows.append([feature, position, "ACGTAC", activation, 0])
                position += 1
        writes.append(SequenceWrite(sid, {"length": 6 * max(position, 1)}, labels, rows))
    writer.write_batch(writes)


# Label A: one 2-core component {s1 s2 s3 f0 f1 f2} and one tree {s4 s5 f3 f4}.
SMALL = [
    ("s1", ["A"], [(0, 1, 1.0), (1, 1, 1.0)]),
    ("s2", ["A"], [(0, 1, 1.0), (1, 3, 0.5), (2, 1, 1.0)]),
    ("s3", ["A"], [(1, 1, 1.0), (2, 1, 1.0)]),
    ("s4", ["A"], [(3, 1, 1.0)]),
    ("s5", ["A"], [(3, 1, 1.0), (4, 1, 1.0)]),
    ("s6", ["B"], [(0, 1, 1.0)]),
    ("s7", ["B"], [(0, 2, 1.0), (5, 1, 1.0)]),
    ("e1", ["E"], []),
]


def random_graph(seed=7, sequences=80, features=30):
    """Two labels with skewed feature popularity that differs between them."""
    rng = random.Random(seed)
    popularity = {
        "up": [1.0 / (i + 1) for i in range(features)],
        "down": [1.0 / (features - i) for i in range(features)],
    }
    out = []
    for i in range(sequences):
        label = "up" if i % 2 == 0 else "down"
        chosen = rng.choices(range(features), weights=popularity[label], k=rng.randint(3, 12))
        counts: dict[int, int] = {}
        for feature in chosen:
            counts[feature] = counts.get(feature, 0) + 1
        acts = [(f, c, round(rng.uniform(0.1, 3.0), 3)) for f, c in counts.items()]
        out.append((f"r{i:03d}", [label], acts))
    return out


@pytest.fixture
def session(clean_db, settings):
    with open_session(settings) as s:
        yield s


def centrality(session, label):
    return {
        r["feature"]: r
        for r in session.records(
            "MATCH (f:Feature)-[c:CENTRALITY]->(:Label {name: $label}) "
            "RETURN f.id AS feature, c {.*} AS c",
            label=label,
        )
    }


def graphs_in_catalog(session) -> list[str]:
    return [r["g"] for r in session.records("CALL gds.graph.list() YIELD graphName AS g RETURN g")]


# --------------------------------------------------------------------------- pagerank
def test_pagerank_writes_normalised_centrality(session, settings):
    write_graph(session.driver, settings.database, SMALL)
    run = run_pagerank(session, None, ["A", "B"], PageRankConfig(**TIGHT))
    a, b = centrality(session, "A"), centrality(session, "B")
    assert sorted(a) == [f"{SAE}/{i}" for i in range(5)]
    assert sorted(b) == [f"{SAE}/0", f"{SAE}/5"]
    for scores in (a, b):
        assert sum(r["c"]["pagerank_normalized"] for r in scores.values()) == pytest.approx(1.0)
    f1 = a[f"{SAE}/1"]["c"]
    assert (f1["support"], f1["activations"]) == (3, 5)
    assert (b[f"{SAE}/0"]["c"]["support"], b[f"{SAE}/0"]["c"]["activations"]) == (2, 3)
    assert f1["sae"] == SAE and f1["label"] == "A" and f1["run"] == run.run
    assert (f1["damping"], f1["weight"], f1["orientation"]) == (0.85, "count", "undirected")
    assert f1["converged"] is True and f1["computed"] == run.computed
    top = max(a.values(), key=lambda r: r["c"]["pagerank"])
    assert top["feature"] == f"{SAE}/1"
    summary = {r.label: (r.sequences, r.features, r.pairs, r.activations) for r in run.labels}
    assert summary == {"A": (5, 5, 10, 12), "B": (2, 2, 3, 4)}
    assert graphs_in_catalog(session) == []


def test_rerun_replaces_scores(session, settings):
    write_graph(session.driver, settings.database, SMALL)
    first = run_pagerank(session, SAE, ["A", "B"], PageRankConfig())
    second = run_pagerank(session, SAE, ["A"], PageRankConfig(damping=0.5, weight="none"))
    a, b = centrality(session, "A"), centrality(session, "B")
    assert len(a) == 5 and {r["c"]["run"] for r in a.values()} == {second.run}
    assert {r["c"]["damping"] for r in a.values()} == {0.5}
    assert {r["c"]["weight"] for r in a.values()} == {"none"}
    assert {r["c"]["run"] for r in b.values()} == {first.run}  # other labels untouched


def test_failed_write_leaves_old_scores(session, settings, monkeypatch):
    write_graph(session.driver, settings.database, SMALL)
    first = run_pagerank(session, SAE, ["A", "B"], PageRankConfig())
    before = centrality(session, "A")
    broken = analysis_writes.CREATE_CENTRALITY + "\nWITH count(*) AS n RETURN 1 / 0 AS boom"
    monkeypatch.setattr(analysis_writes, "CREATE_CENTRALITY", broken)
    with pytest.raises(Exception, match="/ by zero"):
        run_pagerank(session, SAE, ["A", "B"], PageRankConfig(damping=0.5))
    assert centrality(session, "A") == before
    assert {r["c"]["run"] for r in centrality(session, "B").values()} == {first.run}
    assert graphs_in_catalog(session) == []


def test_failed_computation_drops_projection(session, settings, monkeypatch):
    write_graph(session.driver, settings.database, SMALL)
    seen = []

    def explode(session_, graph, config):
        seen.append(graph.name)
        raise RuntimeError("boom")

    monkeypatch.setattr(pr, "score_projection", explode)
    with pytest.raises(RuntimeError, match="boom"):
        run_pagerank(session, SAE, ["A"], PageRankConfig())
    assert seen and graphs_in_catalog(session) == []
    assert centrality(session, "A") == {}


def test_bad_input_is_refused_before_anything_is_written(session, settings):
    with pytest.raises(AnalysisError, match="no SAE"):
        run_pagerank(session, None, ["A"], PageRankConfig())
    write_graph(session.driver, settings.database, SMALL)
    first = run_pagerank(session, None, ["A"], PageRankConfig())
    with pytest.raises(AnalysisError, match=r"no SAE with id 'nope'.*" + SAE):
        run_pagerank(session, "nope", ["A"], PageRankConfig())
    with pytest.raises(AnalysisError, match=r"no label named 'Z' \(known: A, B, E\)"):
        run_pagerank(session, SAE, ["A", "Z"], PageRankConfig())
    with pytest.raises(AnalysisError, match="label 'E' has 1 sequences but none activates"):
        run_pagerank(session, SAE, ["A", "E"], PageRankConfig())
    assert {r["c"]["run"] for r in centrality(session, "A").values()} == {first.run}
    write_graph(session.driver, settings.database, [], sae="other/L2/relu-8-00000002")
    with pytest.raises(AnalysisError, match="several SAEs; choose one with --sae: other"):
        run_pagerank(session, None, ["A"], PageRankConfig())


def test_graph_without_node_labels_is_refused_until_db_init(session, settings):
    """A graph written before the Label_/SAE_ node labels existed: PageRank names the fix,
    `hsg db check` reports the nodes, `hsg db init` adds the labels, and the scores equal
    those of a graph written with them."""
    from hsg.cli import cli
    from hsg.graph.consistency import check_graph

    write_graph(session.driver, settings.database, SMALL)
    reference = run_pagerank(session, SAE, ["A", "B"], PageRankConfig(**TIGHT))
    session.driver.execute_query(
        "MATCH (n) UNWIND [t IN labels(n) WHERE t STARTS WITH 'Label_' OR t STARTS WITH 'SAE_']"
        " AS t REMOVE n:$(t)"
    )
    with pytest.raises(AnalysisError, match="lack their 'SAE_.*hsg db init"):
        run_pagerank(session, SAE, ["A"], PageRankConfig())
    findings = {f.name: f for f in check_graph(session.driver, settings.database)}
    assert findings["node_labels_disagree"].count == 8 + 8  # features + labelled sequences
    session.driver.execute_query("MATCH (f:Feature) SET f:$('SAE_' + f.sae)")
    with pytest.raises(AnalysisError, match="5 sequences lack the node label 'Label_A'"):
        run_pagerank(session, SAE, ["A"], PageRankConfig())

    result = CliRunner().invoke(cli, ["db", "init"])
    assert result.exit_code == 0, result.output
    assert "node labels added to 8 nodes" in result.output
    assert all(f.ok for f in check_graph(session.driver, settings.database))
    again = run_pagerank(session, SAE, ["A", "B"], PageRankConfig(**TIGHT))
    for before, after in zip(reference.labels, again.labels, strict=True):
        assert [(s.feature, s.support) for s in before.scores] == [
            (s.feature, s.support) for s in after.scores
        ]
        for a, b in zip(before.scores, after.scores, strict=True):
            assert a.pagerank == pytest.approx(b.pagerank, rel=1e-12)


# ------------------------------------------------------------------------ correctness
def _raw_rows(session, label=None) -> pd.DataFrame:
    rows = session.records(
        "MATCH (l:Label)<-[:HAS_LABEL]-(s:Sequence)-[a:ACTIVATES]->(f:Feature {sae: $sae}) "
        "RETURN l.name AS label, s.id AS seq, f.id AS feature, f.index AS idx, "
        "a.activation AS activation",
        sae=SAE,
    )
    frame = pd.DataFrame(rows)
    return frame if label is None else frame[frame.label == label]


def _nx_pagerank(rows: pd.DataFrame, weight: str, damping=0.85) -> dict[str, float]:
    """Reference PageRank from raw ACTIVATES rows, normalised over all nodes."""
    pairs = rows.groupby(["seq", "feature"]).agg(n=("idx", "size"), total=("activation", "sum"))
    graph = nx.Graph()
    for (seq, feature), row in pairs.iterrows():
        w = {"count": float(row.n), "none": 1.0, "activation": float(row.total)}[weight]
        graph.add_edge(seq, feature, weight=w)
    scores = nx.pagerank(graph, alpha=damping, weight="weight", tol=1e-15, max_iter=10_000)
    total = sum(scores.values())
    return {node: value / total for node, value in scores.items()}


GDS_STREAM = """
CALL gds.pageRank.stream($graph, $config) YIELD nodeId, score
RETURN gds.util.asNode(nodeId).id AS id, score
"""


@pytest.mark.parametrize("weight", ["count", "none", "activation"])
def test_gds_pagerank_matches_networkx(session, settings, weight):
    write_graph(session.driver, settings.database, random_graph(), d_sae=30)
    config = PageRankConfig(weight=weight, **TIGHT)
    gds_config = {"dampingFactor": 0.85, "maxIterations": 500, "tolerance": 1e-12}
    with pr.project_label(session, SAE, "up", config) as graph:
        if weight != "none":
            gds_config["relationshipWeightProperty"] = graph.weight_property
        rows = session.records(GDS_STREAM, graph=graph.name, config=gds_config)
    gds_scores = {r["id"]: r["score"] for r in rows}
    total = sum(gds_scores.values())
    gds_scores = {k: v / total for k, v in gds_scores.items()}
    reference = _nx_pagerank(_raw_rows(session, "up"), weight)
    assert set(gds_scores) == set(reference)
    nodes = sorted(reference)
    a = np.array([gds_scores[n] for n in nodes])
    b = np.array([reference[n] for n in nodes])
    assert np.max(np.abs(a - b)) <= 1e-6
    assert spearmanr(np.round(a, 12), np.round(b, 12)).statistic >= 0.999
    # and what `hsg analyze pagerank` stores: the same, normalised over features only
    run_pagerank(session, SAE, ["up"], config)
    stored = centrality(session, "up")
    features = {k: v for k, v in reference.items() if k.startswith(SAE)}
    norm = sum(features.values())
    for feature, value in features.items():
        assert stored[feature]["c"]["pagerank_normalized"] == pytest.approx(value / norm, abs=1e-6)


@pytest.mark.parametrize("weight", ["count", "none", "activation"])
@pytest.mark.parametrize("orientation", ["undirected", "natural"])
def test_has_feature_projection_equals_activates_aggregation(session, settings, weight,
                                                             orientation):  # fmt: skip
    """The native projection (by node labels) and the Cypher projection over HAS_FEATURE
    give the graph, scores, support and activations of the Cypher aggregation of ACTIVATES
    they replaced, on the same graph."""
    write_graph(session.driver, settings.database, random_graph(seed=5), d_sae=30)
    # the same sequences (and labels) encoded by another SAE: never part of SAE's graph
    write_graph(session.driver, settings.database, random_graph(seed=6), d_sae=30, sae=OTHER)
    config = PageRankConfig(weight=weight, orientation=orientation, **TIGHT)
    results = {}
    for source, exact in [*((s, True) for s in pr.SOURCES), ("native", False)]:
        with pr.project_label(session, SAE, "up", config, source=source, exact=exact) as graph:
            rows, iterations, converged = pr.score_projection(session, graph, config)
            paired = session.records(pr.PAIRED_SEQUENCES, graph=graph.name)[0]["sequences"]
        results[source, exact] = (graph.node_count, graph.pairs, paired, rows, iterations)
    old = results["activates", True]
    for key, (node_count, pairs, paired, rows, iterations) in results.items():
        # every 'up' sequence has pairs; the inexact graph also holds all 30 features
        assert node_count == (old[0] if key[1] else paired + 30), key
        assert (pairs, paired, iterations) == (old[1], old[2], old[4]), key
        assert [(r["feature"], r["support"], r["activations"]) for r in rows] == [
            (r["feature"], r["support"], r["activations"]) for r in old[3]
        ], key
        for a, b in zip(rows, old[3], strict=True):
            assert a["pagerank"] == pytest.approx(b["pagerank"], rel=1e-12, abs=1e-15)


def test_targets_match_independent_pandas_ranking(session, settings):
    write_graph(session.driver, settings.database, random_graph(seed=11), d_sae=30)
    run_pagerank(session, SAE, ["up", "down"], PageRankConfig(**TIGHT))
    config = TargetsConfig(up="up", down="down", top=1000, min_support=2, pseudo_count=1e-4)
    report = compute_targets(session, None, config)

    raw = _raw_rows(session)
    per_label = []
    for label in ("up", "down"):
        rows = raw[raw.label == label]
        scores = _nx_pagerank(rows, "count")
        feats = {k: v for k, v in scores.items() if k.startswith(SAE)}
        norm = sum(feats.values())
        frame = pd.DataFrame(
            {
                "feature": list(feats),
                f"{label}_score": [v / norm for v in feats.values()],
            }
        ).set_index("feature")
        frame[f"{label}_support"] = rows.groupby("feature").seq.nunique()
        per_label.append(frame)
    table = per_label[0].join(per_label[1], how="outer").fillna(0)
    table["index"] = [int(f.rsplit("/", 1)[1]) for f in table.index]
    table = table[(table.up_support >= 2) | (table.down_support >= 2)]
    table["lfc"] = np.log2((table.up_score + 1e-4) / (table.down_score + 1e-4))
    table = table.sort_values(["lfc", "up_score", "index"], ascending=[False, False, True])
    gaps = np.abs(np.diff(table.lfc.to_numpy()))
    assert gaps.min() > 1e-6, "the fixture must have no near-ties for an exact order"

    assert report.candidates == len(table)
    assert [t.feature for t in report.targets] == list(table.index)
    assert [t.log2_fold_change for t in report.targets] == pytest.approx(list(table.lfc), abs=1e-5)
    assert [t.up_support for t in report.targets] == [int(x) for x in table.up_support]
    assert [t.one_sided for t in report.targets] == [
        bool(u == 0 or d == 0) for u, d in zip(table.up_support, table.down_support, strict=True)
    ]
    assert report.warnings and "returning all" in report.warnings[0]


# --------------------------------------------------------------------------- topology
def test_topology_numbers(session, settings):
    write_graph(session.driver, settings.database, SMALL)
    config = TopologyConfig(PageRankConfig(**TIGHT), max_fraction=0.2, steps=1)
    report = run_topology(session, SAE, ["A", "B"], config)
    a = report.labels[0]
    assert (a.sequences, a.features, a.pairs, a.activations) == (5, 5, 10, 12)
    assert a.density == pytest.approx(10 / 25)
    assert a.density_all_features == pytest.approx(10 / 40)
    assert a.activations_per_pair == pytest.approx(1.2)
    assert (a.components, a.largest_component, a.component_sizes) == (2, 6, [6, 4])
    assert (a.degeneracy, a.kcore) == (2, {"1": 4, "2": 6})
    start, cut = a.fragmentation
    assert (start.removed, start.features, start.pairs, start.components) == (0, 5, 10, 2)
    # f1 (3 sequences, 5 activations) is the most central; without it s1-f0-s2-f2-s3 hold on
    assert (cut.fraction, cut.removed, cut.features, cut.pairs) == (0.2, 1, 4, 7)
    assert (cut.components, cut.largest_component) == (2, 5)
    assert cut.density == pytest.approx(7 / 20)
    b = report.labels[1]
    assert (b.sequences, b.features, b.pairs, b.components, b.degeneracy) == (2, 2, 3, 1, 1)
    assert graphs_in_catalog(session) == []
    json.dumps(report.to_dict())  # serialisable as is


# ------------------------------------------------------------------------------- CLI
def test_cli_end_to_end(session, settings, tmp_path):
    write_graph(session.driver, settings.database, SMALL)
    runner = CliRunner()
    res = runner.invoke(
        analyze, ["pagerank", "--label", "A", "--label", "B", "--out", str(tmp_path / "pr.json")]
    )
    assert res.exit_code == 0, res.output
    full = json.loads((tmp_path / "pr.json").read_text())
    assert [len(label["scores"]) for label in full["labels"]] == [5, 2]
    assert full["parameters"]["weight"] == "count"

    out = tmp_path / "targets.json"
    res = runner.invoke(
        targets, ["--up", "A", "--down", "B", "--top", "3", "--min-support", "1", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    report = load_targets(out)
    assert report.sae["id"] == SAE and report.sae["layer"] == 1
    assert report.sae["model"] == {"id": "tiny", "version": "v2", "checkpoint_hash": "c0ffee"}
    assert report.sae["weights_sha256"] == "01" and len(report.sae["config_sha256"]) == 64
    assert report.parameters["centrality"]["damping"] == 0.85
    assert [t.rank for t in report.targets] == [1, 2, 3]
    assert all(t.sae == SAE and t.layer == 1 for t in report.targets)

    res = runner.invoke(
        targets, ["--up", "A", "--down", "B", "--min-support", "1", "--format", "tsv"]
    )
    assert res.exit_code == 0, res.output
    assert "rank\tfeature\tindex" in res.output

    res = runner.invoke(
        analyze, ["topology", "--label", "A", "--label", "B", "--out", str(tmp_path / "topo")]
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "topo" / "topology.json").read_text())["sae"] == SAE
    assert (tmp_path / "topo" / "fragmentation.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_errors_exit_nonzero(session, settings):
    write_graph(session.driver, settings.database, SMALL)
    runner = CliRunner()
    cases = [
        (["pagerank", "--sae", "nope", "--label", "A"], "no SAE with id 'nope'"),
        (["pagerank", "--label", "E"], "none activates a feature"),
        (["pagerank", "--label", "Q"], "no label named 'Q'"),
        (["topology", "--label", "Q", "--out", "/tmp/unused"], "no label named 'Q'"),
    ]
    for args, message in cases:
        res = runner.invoke(analyze, args)
        assert res.exit_code == 1 and message in res.output, (args, res.output)
    res = runner.invoke(targets, ["--up", "A", "--down", "B"])
    assert res.exit_code == 1 and "run `hsg analyze pagerank" in res.output
    runner.invoke(analyze, ["pagerank", "--label", "A", "--label", "B"])
    res = runner.invoke(targets, ["--up", "A", "--down", "B", "--min-support", "50"])
    assert res.exit_code == 1 and "lower --min-support" in res.output
