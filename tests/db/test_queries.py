"""Every named query of `queries/` on a small graph whose answers are worked out by hand.

The graph (SAE with 6 features, f5 never fires):

    b1 binding      f0@0 AAAAAA 2.0, f0@1 CCCCCC 1.0, f1@2 GGGGGG 0.5   G-quadruplex
    b2 binding      f0@0 AAAAAA 1.5, f2@1 TTTTTT 0.7                    G-quadruplex
    b3 binding      f0@0 ACGTAC 0.9, f3@1 GGGCCC 1.1                    enhancer (OVERLAPS)
    n1 non_binding  f1@0 AAAAAA 1.0, f1@1 AAAAAA 1.2, f2@2 CCCCCC 0.4
    n2 non_binding  f1@0 TTTTTT 0.8, f4@1 GGGGGG 0.3
    n3 non_binding  f2@0 ACGTAC 0.6                                     G-quadruplex
    e1 empty        (encoded, no activation)
"""

from __future__ import annotations

import pytest

from hsg.analysis import open_session
from hsg.analysis.pagerank import PageRankConfig, run_pagerank
from hsg.graph.writer import GraphWriter, SequenceWrite
from hsg.regions.annotations import AnnotationHit, MotifHit

pytestmark = pytest.mark.db

SAE = "tiny/L1/relu-6-abcdef12"


def f(i: int) -> str:
    return f"{SAE}/{i}"


def _g4() -> MotifHit:
    return MotifHit("g4", "g_quadruplex", "G-quadruplex", "scan", 0, 20, "+", matched="GGG")


def fixture_writes() -> list[SequenceWrite]:
    enhancer = AnnotationHit("refseq:chr1:0-50:enhancer", "refseq", "enhancer", "bed", 0, 50, ".")
    rows = [
        (
            "b1",
            ["binding"],
            [[0, 0, "AAAAAA", 2.0, 0], [0, 1, "CCCCCC", 1.0, 0], [1, 2, "GGGGGG", 0.5, 0]],
            [_g4()],
        ),
        ("b2", ["binding"], [[0, 0, "AAAAAA", 1.5, 0], [2, 1, "TTTTTT", 0.7, 0]], [_g4()]),
        ("b3", ["binding"], [[0, 0, "ACGTAC", 0.9, 0], [3, 1, "GGGCCC", 1.1, 0]], [enhancer]),
        (
            "n1",
            ["non_binding"],
            [[1, 0, "AAAAAA", 1.0, 0], [1, 1, "AAAAAA", 1.2, 0], [2, 2, "CCCCCC", 0.4, 0]],
            [],
        ),
        ("n2", ["non_binding"], [[1, 0, "TTTTTT", 0.8, 0], [4, 1, "GGGGGG", 0.3, 0]], []),
        ("n3", ["non_binding"], [[2, 0, "ACGTAC", 0.6, 0]], [_g4()]),
        ("e1", ["empty"], [], []),
    ]
    return [
        SequenceWrite(sid, {"length": 18}, labels, acts, annotations)
        for sid, labels, acts, annotations in rows
    ]


def write_fixture(driver, database) -> None:
    writer = GraphWriter(driver, database, SAE, "run-q")
    writer.register(
        model={"id": "c0ffee", "name": "tiny", "version": "v2", "checkpoint_hash": "c0ffee"},
        sae={
            "id": SAE,
            "layer": 1,
            "d_in": 8,
            "d_sae": 6,
            "architecture": "relu",
            "config": '{"d_sae": 6, "weights_sha256": "abcdef12"}',
        },
        d_sae=6,
        run={"id": "run-q"},
    )
    writer.write_batch(fixture_writes())


@pytest.fixture(scope="module")
def session(driver, settings):
    """The fixture graph with PageRank for both labels; the queries only read it."""
    from hsg.db.schema import apply_schema
    from hsg.graph.maintenance import wipe

    wipe(driver, settings.database)
    apply_schema(driver, settings.database)
    write_fixture(driver, settings.database)
    with open_session(settings) as s:
        run_pagerank(
            s, SAE, ["binding", "non_binding"], PageRankConfig(max_iterations=300, tolerance=1e-12)
        )
        yield s
    wipe(driver, settings.database)


def test_label_composition(session):
    rows = session.named("label_composition", sae=SAE)
    assert rows == [
        {
            "label": "binding",
            "sequences": 3,
            "encoded": 3,
            "active_sequences": 3,
            "activations": 7,
            "features": 4,
        },
        {
            "label": "empty",
            "sequences": 1,
            "encoded": 1,
            "active_sequences": 0,
            "activations": 0,
            "features": 0,
        },
        {
            "label": "non_binding",
            "sequences": 3,
            "encoded": 3,
            "active_sequences": 3,
            "activations": 6,
            "features": 3,
        },
    ]
    other = session.named("label_composition", sae="no/such/sae")
    assert [(r["label"], r["encoded"], r["features"]) for r in other] == [
        ("binding", 0, 0),
        ("empty", 0, 0),
        ("non_binding", 0, 0),
    ]


def test_label_summary(session):
    # over every SAE; the same numbers as label_composition on this one-SAE graph
    assert session.named("label_summary") == [
        {"label": "binding", "sequences": 3, "activations": 7, "features": 4},
        {"label": "empty", "sequences": 1, "activations": 0, "features": 0},
        {"label": "non_binding", "sequences": 3, "activations": 6, "features": 3},
    ]


def test_most_shared_features(session):
    def top(limit):
        rows = session.named("most_shared_features", limit=limit)
        return {r["label"]: [(t["feature"], t["sequences"]) for t in r["top"]] for r in rows}

    # f0 is on all three binding sequences; ties (one sequence each) go by feature id;
    # `empty` activates nothing and is left out
    assert top(3) == {
        "binding": [(f(0), 3), (f(1), 1), (f(2), 1)],
        "non_binding": [(f(1), 2), (f(2), 2), (f(4), 1)],
    }
    assert top(1) == {"binding": [(f(0), 3)], "non_binding": [(f(1), 2)]}
    assert [len(v) for v in top(10).values()] == [4, 3]


def test_every_query_of_the_library_is_tested_here():
    from hsg.db.cypher import list_queries

    tested = {
        name.removeprefix("test_")
        for name, value in globals().items()
        if name.startswith("test_") and callable(value)
    }
    untested = sorted(q.name for q in list_queries() if q.name not in tested)
    assert untested == [], f"add a test_<query name> to {__file__}"


def test_sequences_for_feature(session):
    rows = session.named("sequences_for_feature", feature=f(0), limit=10)
    assert rows == [
        {
            "sequence": "b1",
            "labels": ["binding"],
            "activations": 2,
            "max_activation": 2.0,
            "positions": [0, 1],
            "tokens": ["AAAAAA", "CCCCCC"],
            "values": [2.0, 1.0],
        },
        {
            "sequence": "b2",
            "labels": ["binding"],
            "activations": 1,
            "max_activation": 1.5,
            "positions": [0],
            "tokens": ["AAAAAA"],
            "values": [1.5],
        },
        {
            "sequence": "b3",
            "labels": ["binding"],
            "activations": 1,
            "max_activation": 0.9,
            "positions": [0],
            "tokens": ["ACGTAC"],
            "values": [0.9],
        },
    ]
    assert [
        r["sequence"] for r in session.named("sequences_for_feature", feature=f(0), limit=2)
    ] == ["b1", "b2"]
    assert session.named("sequences_for_feature", feature=f(5), limit=10) == []


def _neighbourhood(session, feature, sequences, neighbours):
    rows = session.named(
        "feature_neighbourhood", feature=feature, sequences=sequences, neighbours=neighbours
    )
    return [
        (
            r["feature"]["id"],
            r["sequence"]["id"],
            r["activations"],
            [n["id"] for n in r["neighbours"]],
            r["neighbour_activations"],
        )
        for r in rows
    ]


def test_feature_neighbourhood(session):
    # f1: n1 twice, b1 and n2 once (ties by sequence id)
    assert _neighbourhood(session, f(1), 10, 5) == [
        (f(1), "n1", 2, [f(2)], [1]),
        (f(1), "b1", 1, [f(0)], [2]),
        (f(1), "n2", 1, [f(4)], [1]),
    ]
    assert _neighbourhood(session, f(1), 2, 5) == [
        (f(1), "n1", 2, [f(2)], [1]),
        (f(1), "b1", 1, [f(0)], [2]),
    ]
    # n3 activates only f2: it stays, with no neighbours
    assert _neighbourhood(session, f(2), 10, 1) == [
        (f(2), "b2", 1, [f(0)], [1]),
        (f(2), "n1", 1, [f(1)], [2]),
        (f(2), "n3", 1, [], []),
    ]


def test_annotation_enrichment(session):
    rows = session.named(
        "annotation_enrichment", sae=SAE, annotation="g4", min_sequences=1, limit=10
    )
    got = [
        (
            r["feature"],
            r["annotated_with"],
            r["annotated_total"],
            r["unannotated_with"],
            r["unannotated_total"],
        )
        for r in rows
    ]
    # 7 encoded sequences, 3 with a G4 (b1, b2, n3); ties on the difference go by index
    assert got == [
        (f(0), 2, 3, 1, 4),
        (f(2), 2, 3, 1, 4),
        (f(1), 1, 3, 2, 4),
        (f(3), 0, 3, 1, 4),
        (f(4), 0, 3, 1, 4),
    ]
    assert rows[0]["annotated_fraction"] == pytest.approx(2 / 3)
    assert rows[0]["unannotated_fraction"] == pytest.approx(1 / 4)
    assert rows[0]["difference"] == pytest.approx(2 / 3 - 1 / 4)
    assert rows[2]["difference"] == pytest.approx(1 / 3 - 2 / 4)
    strict = session.named(
        "annotation_enrichment", sae=SAE, annotation="g4", min_sequences=3, limit=2
    )
    assert [r["feature"] for r in strict] == [f(0), f(2)]
    # the enhancer is an OVERLAPS annotation: only b3 carries it
    enh = session.named(
        "annotation_enrichment",
        sae=SAE,
        annotation="refseq:chr1:0-50:enhancer",
        min_sequences=1,
        limit=1,
    )
    assert (enh[0]["feature"], enh[0]["annotated_with"], enh[0]["annotated_total"]) == (f(3), 1, 1)


# Normalised PageRank of the two label graphs (undirected, weight = activations per pair),
# from networkx.pagerank on the same graphs; GDS must agree to 1e-6.
BINDING = {0: 0.5129400, 2: 0.1670404, 3: 0.1670404, 1: 0.1529793}
NON_BINDING = {1: 0.4556355, 2: 0.3469225, 4: 0.1974420}


def test_top_features_for_label(session):
    rows = session.named("top_features_for_label", sae=SAE, label="binding", limit=10)
    assert [(r["index"], r["support"], r["activations"]) for r in rows] == [
        (0, 3, 4),
        (2, 1, 1),
        (3, 1, 1),
        (1, 1, 1),
    ]
    for r in rows:
        assert r["feature"] == f(r["index"])
        assert r["pagerank_normalized"] == pytest.approx(BINDING[r["index"]], abs=1e-6)
    rows = session.named("top_features_for_label", sae=SAE, label="non_binding", limit=2)
    assert [(r["index"], r["support"], r["activations"]) for r in rows] == [(1, 2, 3), (2, 2, 2)]
    assert session.named("top_features_for_label", sae=SAE, label="empty", limit=5) == []


def test_differential_centrality(session):
    rows = session.named(
        "differential_centrality",
        sae=SAE,
        up="binding",
        down="non_binding",
        min_support=1,
        pseudo_count=1e-6,
        top=10,
    )
    assert [(r["rank"], r["index"], r["one_sided"], r["candidates"]) for r in rows] == [
        (1, 0, True, 5),
        (2, 3, True, 5),
        (3, 2, False, 5),
        (4, 1, False, 5),
        (5, 4, True, 5),
    ]
    import math

    def lfc(up, down):
        return math.log2((up + 1e-6) / (down + 1e-6))

    expected = [
        lfc(BINDING[0], 0),
        lfc(BINDING[3], 0),
        lfc(BINDING[2], NON_BINDING[2]),
        lfc(BINDING[1], NON_BINDING[1]),
        lfc(0, NON_BINDING[4]),
    ]
    assert [r["log2_fold_change"] for r in rows] == pytest.approx(expected, abs=1e-3)
    assert (rows[2]["up_support"], rows[2]["down_support"]) == (1, 2)
    assert (rows[2]["up_activations"], rows[2]["down_activations"]) == (1, 2)
    # min_support 2 keeps f0 (3 binding), f1 and f2 (2 non_binding each); top cuts after it
    rows = session.named(
        "differential_centrality",
        sae=SAE,
        up="binding",
        down="non_binding",
        min_support=2,
        pseudo_count=1e-6,
        top=2,
    )
    assert [(r["index"], r["candidates"]) for r in rows] == [(0, 3), (2, 3)]
    # swapping up and down negates the fold changes of the same candidates
    swapped = session.named(
        "differential_centrality",
        sae=SAE,
        up="non_binding",
        down="binding",
        min_support=2,
        pseudo_count=1e-6,
        top=10,
    )
    assert [r["index"] for r in swapped] == [1, 2, 0]
    assert swapped[2]["log2_fold_change"] == pytest.approx(-lfc(BINDING[0], 0))


def test_running_ingest_runs(session):
    # this graph was built without ingest runs; the states of running, stale and finished
    # runs are covered with the status command in test_server_hardening.py
    assert session.named("running_ingest_runs") == []


# ----------------------------------------------- concept and motif results (hsg concepts/motifs)


@pytest.fixture
def concept_results(session):
    """DETECTS and RESEMBLES written by their real writers onto the fixture graph, removed
    afterwards (replaced by empty runs)."""
    from hsg.graph.concept_writes import replace_detects, replace_resembles

    def detects(feature, annotation, name, kind, node, f1):
        props = {"f1": f1, "precision": 1.0, "recall": f1, "threshold": 0.5, "support": 10}
        return {"feature": feature, "annotation_id": annotation, "name": name, "kind": kind,
                "concept_node": node, "props": props}  # fmt: skip

    g4 = ("g4", "G-quadruplex", "g_quadruplex", False)
    enhancer = ("concept:refseq_functional_element:enhancer", "enhancer", "refseq", True)
    rows = [detects(f(0), *g4, 0.9), detects(f(2), *g4, 0.4), detects(f(3), *enhancer, 0.7),
            detects(f(0), *enhancer, 0.2)]  # fmt: skip
    db, sae_features = session.database, [f(0), f(1)]
    replace_detects(session.driver, db, SAE, rows, run="c1")
    spi1 = {"pvalue": 1e-9, "qvalue": 1e-6, "offset": 0, "orientation": "+", "rank": 0}
    motifs = [{"feature": f(0), "consensus": "AAAGAGGAAGTG", "pwm": "[]", "seqlets": 50},
              {"feature": f(1), "consensus": "ACGT", "pwm": "[]", "seqlets": 9}]  # fmt: skip
    matches = [
        {"feature": f(0), "annotation_id": "jaspar:MA0080.7", "name": "Spi1", "props": spi1},
        {"feature": f(1), "annotation_id": "jaspar:MA0080.7", "name": "Spi1",
         "props": {**spi1, "pvalue": 1e-4, "qvalue": 0.01, "orientation": "-"}},
    ]  # fmt: skip
    replace_resembles(session.driver, db, SAE, sae_features, motifs, matches, run="m1",
                      release="JASPAR2026 CORE vertebrates", motif_kind="jaspar_motif")  # fmt: skip
    yield session
    replace_detects(session.driver, db, SAE, [], run="c2")
    replace_resembles(session.driver, db, SAE, sae_features, [], [], run="m2", release="-",
                      motif_kind="jaspar_motif")  # fmt: skip


def test_features_detecting_concept(concept_results):
    rows = concept_results.named("features_detecting_concept", concept="G-quadruplex", limit=10)
    got = [(r["index"], r["f1"], r["annotation"]) for r in rows]
    assert got == [(0, 0.9, "g4"), (2, 0.4, "g4")]
    by_id = concept_results.named(
        "features_detecting_concept", concept="concept:refseq_functional_element:enhancer", limit=1
    )
    assert [(r["index"], r["concept"]) for r in by_id] == [(3, "enhancer")]


def test_concepts_of_feature(concept_results):
    rows = concept_results.named("concepts_of_feature", feature=f(0), limit=10)
    assert [(r["concept"], r["f1"]) for r in rows] == [("G-quadruplex", 0.9), ("enhancer", 0.2)]
    assert concept_results.named("concepts_of_feature", feature=f(5), limit=10) == []


def test_features_resembling_motif(concept_results):
    for motif in ("Spi1", "MA0080.7", "jaspar:MA0080.7"):
        rows = concept_results.named("features_resembling_motif", motif=motif, limit=10)
        assert [(r["index"], r["orientation"]) for r in rows] == [(0, "+"), (1, "-")]
    assert rows[0]["consensus"] == "AAAGAGGAAGTG"
    assert concept_results.named("features_resembling_motif", motif="CTCF", limit=10) == []
