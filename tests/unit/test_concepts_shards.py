"""Concepts from an activation shard set (hsg.shards, written by its own writer): the same
rows the graph would hold, read without a database; repeats are read once."""

from __future__ import annotations

import pytest

from hsg import api
from hsg.concepts.run import ConceptError, inputs_from_shards
from hsg.graph.shard_rows import annotation_row, sequence_row
from hsg.regions.annotations import MotifHit
from hsg.regions.records import SequenceRecord
from hsg.shards.manifest import Manifest, write_manifest
from hsg.shards.writer import write_shard

SAE = {"id": "sae-s", "layer": 1, "d_in": 8, "d_sae": 3, "architecture": "relu", "config": "{}"}
MODEL = {"id": "hash-m", "name": "tiny", "version": "v2", "checkpoint_hash": "hash-m"}
HIT = MotifHit("g4", "g_quadruplex", "G-quadruplex", "scan", 0, 8, "+", motif_id="g4",
               matched="GGGAGGGA")  # fmt: skip


def _props(r: SequenceRecord) -> dict:
    return {"length": len(r.sequence), "gc": 0.5, "sequence": r.sequence, "chrom": r.chrom,
            "start": r.start, "end": r.end, "strand": r.strand}  # fmt: skip


@pytest.fixture
def shard_set(tmp_path):
    """Even sequences carry the G4 hit on their first 8 bases (tokens 0 and 1); feature 0
    fires exactly there, feature 1 everywhere, feature 2 never."""
    n = 40
    m = Manifest(model=MODEL, sae=SAE, parameters={"top_k": 2}, shard_size=20, shards=2,
                 sequences=n + 1)  # fmt: skip
    out = tmp_path / "shards"
    write_manifest(out, m)
    for shard in range(2):
        seqs, cols, ann = [], {k: [] for k in ("sequence_id", "position", "token", "feature",
                                               "activation", "rank")}, []  # fmt: skip
        for i in range(shard * 20, shard * 20 + 20):
            r = SequenceRecord(f"s{i}", "chr1", 100 * i, 100 * i + 24, "+", "GGGAGGGA" + "ACGT" * 4)
            seqs.append(sequence_row(r, _props(r), True))
            for pos in range(4):
                rows = [(1, 0.5)] + ([(0, 2.0)] if i % 2 == 0 and pos < 2 else [])
                for rank, (f, v) in enumerate(rows):
                    for key, val in zip(cols, (r.id, pos, "ACGTAC", f, v, rank), strict=True):
                        cols[key].append(val)
            if i % 2 == 0:
                ann.append(annotation_row(r.id, HIT))
        if shard == 1:  # a repeat of s0: labels only, never read as a second sequence
            r = SequenceRecord("s0", "chr1", 0, 24, "+", "GGGAGGGA" + "ACGT" * 4, ("B",))
            seqs.append(sequence_row(r, _props(r), False))
        write_shard(out, shard, m.fingerprint, seqs, cols, ann)
    return out


def test_concepts_from_shards(shard_set):
    inputs = inputs_from_shards(shard_set)
    assert len(inputs.index.sequence_ids) == 40
    assert inputs.activations.feature_ids == ["sae-s/0", "sae-s/1", "sae-s/2"]
    run = api.concepts(shards=shard_set, plot=False)
    best = run.best.iloc[0]
    assert (best["concept"], best["feature"], best["f1"]) == ("G-quadruplex", "sae-s/0", 1.0)
    assert run.sae == "sae-s" and run.written == 0


def test_shards_and_regions_are_exclusive(shard_set, tmp_path):
    with pytest.raises(ConceptError, match="not both"):
        api.concepts(shards=shard_set, regions=tmp_path / "x.tsv", model=tmp_path,
                     sae_dir=tmp_path)  # fmt: skip
