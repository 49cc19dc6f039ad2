"""The batched writer against the real server: counts, idempotence, atomicity."""

from __future__ import annotations

import pytest

from hsg.graph.writer import GraphWriter, SequenceWrite
from hsg.regions.annotations import AnnotationHit, MotifHit

pytestmark = pytest.mark.db

SAE = "tiny/L1/relu-8-abcdef12"


def _writer(driver, settings, run="run-1") -> GraphWriter:
    w = GraphWriter(driver, settings.database, SAE, run)
    w.register(
        model={"id": "c0ffee", "name": "tiny", "version": "v2", "checkpoint_hash": "c0ffee"},
        sae={"id": SAE, "layer": 1, "d_sae": 8},
        d_sae=8,
        run={"id": run},
    )
    return w


def _batch() -> list[SequenceWrite]:
    g4 = MotifHit("g4", "g_quadruplex", "G-quadruplex", "scan", 3, 24, "+", matched="GGG")
    enh = AnnotationHit("refseq:chr1:0-50:enhancer", "refseq", "enhancer", "bed", 0, 50, ".")
    return [
        SequenceWrite(
            "s1",
            {"length": 12},
            ["pos"],
            [[0, 0, "ACGTAC", 1.5, 0], [3, 1, "GGGGGG", 0.5, 0]],
            [g4, enh],
        ),
        SequenceWrite("s2", {"length": 6}, ["neg"], [[0, 0, "ACGTAC", 0.7, 0]]),
        SequenceWrite("s3", {"length": 6}, ["neg", "pos"], []),
    ]


def test_counts_and_idempotence(clean_db, settings):
    w = _writer(clean_db, settings)
    w.write_batch(_batch())
    first = w.counts()
    assert first == {
        "sequences": 3,
        "features": 8,
        "labels": 2,
        "annotations": 2,
        "activates": 3,
        "has_feature": 3,
        "has_label": 4,
        "overlaps": 1,
        "has_motif": 1,
        "encoded_by": 3,
    }
    # the same input again changes nothing, also from a new run
    w2 = _writer(clean_db, settings, run="run-2")
    assert w2.encoded_ids(["s1", "s2", "s3", "s4"]) == {"s1", "s2", "s3"}
    w2.write_batch(_batch())
    assert w2.counts() == first


def test_has_feature_aggregates_each_pair_in_the_same_write(clean_db, settings):
    """One HAS_FEATURE per (sequence, feature) pair with the count, sum and max of its
    activations, written by the statement that writes them; a repeat writes neither again."""
    w = _writer(clean_db, settings)
    rows = [[2, 0, "AAAAAA", 0.5, 0], [5, 1, "CCCCCC", 2.0, 0], [2, 2, "GGGGGG", 1.25, 1],
            [2, 3, "TTTTTT", 0.25, 0]]  # fmt: skip
    stats = w.write_batch([SequenceWrite("s1", {"length": 24}, ["pos"], rows)])
    assert stats.activations == 4
    pairs = clean_db.execute_query(
        "MATCH (:Sequence {id: 's1'})-[h:HAS_FEATURE]->(f:Feature) "
        "RETURN f.index AS index, h.count AS n, h.sum AS total, h.max AS peak ORDER BY index"
    ).records
    assert [tuple(r.values()) for r in pairs] == [(2, 3, 2.0, 1.25), (5, 1, 2.0, 2.0)]
    w.write_batch([SequenceWrite("s1", {"length": 24}, ["pos"], rows)])
    assert w.counts()["has_feature"] == 2


def test_new_label_adds_only_the_label(clean_db, settings):
    w = _writer(clean_db, settings)
    w.write_batch(_batch())
    before = w.counts()
    w.write_batch([SequenceWrite("s2", {"length": 6}, ["extra"], None)])
    after = w.counts()
    assert after["labels"] == before["labels"] + 1
    assert after["has_label"] == before["has_label"] + 1
    assert {k: v for k, v in after.items() if k not in ("labels", "has_label")} == {
        k: v for k, v in before.items() if k not in ("labels", "has_label")
    }


def test_failed_batch_leaves_nothing(clean_db, settings):
    w = _writer(clean_db, settings)
    bad = _batch()
    bad[1].activations = [[0, 0, "ACGTAC", {"not": "a number"}, 0]]  # server rejects maps
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do; what matters is below
        w.write_batch(bad)
    counts = w.counts()
    assert counts["sequences"] == 0 and counts["activates"] == 0 and counts["encoded_by"] == 0


def test_unknown_link_type_is_refused_and_nothing_written(clean_db, settings):
    from dataclasses import dataclass
    from typing import ClassVar

    @dataclass(frozen=True)
    class Mention(AnnotationHit):
        relationship: ClassVar[str] = "MENTIONS"

    w = _writer(clean_db, settings)
    batch = _batch()
    batch[0].annotations.append(Mention("paper:1", "paper", "a paper", "test", 0, 6, "."))
    with pytest.raises(ValueError, match="MENTIONS"):
        w.write_batch(batch)
    assert w.counts()["sequences"] == 0


def _indexes(driver) -> set[str]:
    rows = driver.execute_query("SHOW INDEXES YIELD name, type WHERE type <> 'LOOKUP' RETURN name")
    return {r["name"] for r in rows.records}


OBSOLETE = {
    "sequence_ingest_run": "CREATE INDEX sequence_ingest_run IF NOT EXISTS "
    "FOR (s:Sequence) ON (s.run)",
    "feature_sae_index": "CREATE INDEX feature_sae_index IF NOT EXISTS "
    "FOR (f:Feature) ON (f.sae, f.index)",
}


def test_init_drops_obsolete_indexes(clean_db, settings):
    from hsg.db.schema import apply_schema

    assert not set(OBSOLETE) & _indexes(clean_db)
    # a server initialised by an earlier version still has them
    for statement in OBSOLETE.values():
        clean_db.execute_query(statement)
    assert set(OBSOLETE) <= _indexes(clean_db)
    apply_schema(clean_db, settings.database)
    after = _indexes(clean_db)
    assert not set(OBSOLETE) & after
    assert {"feature_sae", "sequence_locus", "annotation_kind", "model_id"} <= after
    apply_schema(clean_db, settings.database)  # and again: nothing to drop is no error
    assert _indexes(clean_db) == after


def test_features_of_an_sae_are_found_through_the_index(clean_db, settings):
    """The writer's per-batch feature list and the per-SAE queries look features up by
    their SAE alone: that lookup must be an index seek, not a scan of every Feature."""
    _writer(clean_db, settings)
    plan = clean_db.execute_query(
        "EXPLAIN MATCH (f:Feature {sae: $sae}) RETURN f", sae=SAE
    ).summary.plan
    assert "NodeIndexSeek" in plan["args"]["string-representation"]
