"""Activation shards without Ray or Neo4j: the format round-trips, and every way a set can be
wrong (no manifest, edited manifest, a shard of another set, a changed file, a missing
marker) is refused with a message that says what to do, before anything reads on."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from hsg.graph.bulk import write_import_files
from hsg.graph.shard_rows import annotation_row, hit_from_row, sequence_row, sequence_writes
from hsg.regions.annotations import AnnotationHit, MotifHit
from hsg.regions.records import SequenceRecord
from hsg.shards.errors import ShardError
from hsg.shards.manifest import MANIFEST, Manifest, read_manifest, write_manifest
from hsg.shards.reader import ShardSet
from hsg.shards.schema import marker_file, table_file
from hsg.shards.writer import write_shard

SAE = {"id": "sae-x", "layer": 1, "d_in": 8, "d_sae": 4, "architecture": "relu", "config": "{}"}
MODEL = {"id": "hash-m", "name": "tiny", "version": "v2", "checkpoint_hash": "hash-m",
         "num_layers": 2, "hidden_size": 8}  # fmt: skip


def manifest(**changes) -> Manifest:
    data = dict(model=MODEL, sae=SAE, parameters={"input": "x.tsv", "top_k": 2, "batch_size": 8},
                shard_size=2, shards=2, sequences=3)  # fmt: skip
    data.update(changes)
    return Manifest(**data)


def record(i: int, seq: str = "ACGTACGTAC", labels=("A",)) -> SequenceRecord:
    return SequenceRecord(f"s{i}", "chr1", 10 * i, 10 * i + len(seq), "+", seq, tuple(labels))


def props(r: SequenceRecord) -> dict:
    return {"length": len(r.sequence), "gc": 0.5, "sequence": r.sequence, "chrom": r.chrom,
            "start": r.start, "end": r.end, "strand": r.strand}  # fmt: skip


def acts(*rows):
    cols = {k: [] for k in ("sequence_id", "position", "token", "feature", "activation", "rank")}
    for row in rows:
        for key, value in zip(cols, row, strict=True):
            cols[key].append(value)
    return cols


HIT = MotifHit("g4", "motif", "G4", "g4hunter", 1, 5, "+", 1.5, motif_id="g4", matched="GGGG")


@pytest.fixture
def shard_set(tmp_path) -> Path:
    out = tmp_path / "shards"
    m = manifest()
    write_manifest(out, m)
    r0, r1, r2 = record(0), record(1, labels=("B",)), record(0, labels=("B",))  # r2 repeats s0
    write_shard(out, 0, m.fingerprint,
                [sequence_row(r0, props(r0), True), sequence_row(r1, props(r1), True)],
                acts(("s0", 0, "ACGTAC", 3, 0.5, 0), ("s0", 1, "GTAC", 3, 0.25, 0),
                     ("s1", 0, "ACGTAC", 1, 2.0, 0)),
                [annotation_row("s0", HIT)])  # fmt: skip
    write_shard(out, 1, m.fingerprint, [sequence_row(r2, props(r2), False)], acts(), [])
    return out


def test_a_set_round_trips_into_the_writers_input(shard_set):
    s = ShardSet(shard_set)
    assert s.validate() == {"shards": 2, "sequences": 3, "encoded": 2, "activations": 3,
                            "annotation_links": 1}  # fmt: skip
    shard = s.read(0)
    writes = sequence_writes(shard.sequences, shard.activations, shard.annotations)
    assert [w.id for w in writes] == ["s0", "s1"]
    assert writes[0].activations == [[3, 0, "ACGTAC", 0.5, 0], [3, 1, "GTAC", 0.25, 0]]
    (hit,) = writes[0].annotations  # what the graph gets from it is what it got from HIT
    assert hit.relationship_properties() == HIT.relationship_properties()
    assert writes[0].props["chrom"] == "chr1" and writes[0].labels == ["A"]
    repeat = sequence_writes(*(lambda x: (x.sequences, x.activations, x.annotations))(s.read(1)))
    assert repeat[0].activations is None and repeat[0].labels == ["B"]  # labels only


def test_annotation_hits_survive_the_round_trip():
    plain = AnnotationHit("refseq:chr1:1-5:enhancer", "enhancer", "E", "refseq", 0, 4, ".")
    for hit in (plain, HIT):
        back = hit_from_row(annotation_row("s", hit))
        assert back.relationship == hit.relationship
        assert back.node_properties() == hit.node_properties()
        assert back.relationship_properties() == hit.relationship_properties()


def test_a_missing_manifest_is_refused(tmp_path):
    with pytest.raises(ShardError, match="no manifest.json"):
        ShardSet(tmp_path)
    with pytest.raises(ShardError, match="no such directory"):
        ShardSet(tmp_path / "nothing")


def test_an_edited_or_truncated_manifest_is_refused(shard_set):
    path = shard_set / MANIFEST
    data = json.loads(path.read_text())
    data["sae"]["d_sae"] = 5
    path.write_text(json.dumps(data))
    with pytest.raises(ShardError, match="edited or damaged"):
        ShardSet(shard_set)
    path.write_text(path.read_text()[:40])
    with pytest.raises(ShardError, match="corrupt"):
        ShardSet(shard_set)


def test_a_shard_of_another_set_is_refused(shard_set, tmp_path):
    other = tmp_path / "other"
    m = manifest(sae={**SAE, "id": "another-sae"})
    write_manifest(other, m)
    r = record(0)
    write_shard(other, 1, m.fingerprint, [sequence_row(r, props(r), True)], acts(), [])
    for name in (marker_file(1), *(table_file(t, 1) for t in ("sequences", "activations",
                                                                "annotations"))):  # fmt: skip
        shutil.copy(other / name, shard_set / name)
    with pytest.raises(ShardError, match="belongs to another shard set"):
        ShardSet(shard_set).validate()
    assert read_manifest(shard_set).differences(m) == ["sae.id: 'sae-x' vs 'another-sae'"]


def test_a_changed_file_or_a_missing_marker_is_refused(shard_set):
    path = shard_set / table_file("activations", 0)
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    with pytest.raises(ShardError, match="corrupt: its SHA-256"):
        ShardSet(shard_set).validate()
    (shard_set / marker_file(1)).unlink()
    assert not ShardSet(shard_set).is_complete(1)
    with pytest.raises(ShardError, match="incomplete"):
        ShardSet(shard_set).check_shard(1)


def test_execution_parameters_do_not_change_the_set():
    assert (
        manifest().fingerprint
        == manifest(parameters={"input": "x.tsv", "top_k": 2, "batch_size": 64}).fingerprint
    )
    assert (
        manifest().fingerprint
        != manifest(parameters={"input": "x.tsv", "top_k": 3, "batch_size": 8}).fingerprint
    )


def test_bulk_files_hold_the_graph_once(shard_set, tmp_path):
    run = {"id": "run-1", "status": "finished", "pid": 7, "input_sha256": None}
    files = write_import_files(ShardSet(shard_set), tmp_path / "csv", run)
    assert set(files.nodes) == {"Model", "SAE", "IngestRun", "Feature", "Sequence", "Label",
                                "Annotation"}  # fmt: skip
    assert set(files.relationships) >= {"READS", "USED", "IN_SAE", "HAS_LABEL", "ACTIVATES",
                                        "HAS_FEATURE", "ENCODED_BY", "HAS_MOTIF"}  # fmt: skip
    counts = files.counts
    assert counts["Sequence"] == 2 and counts["Feature"] == 4 and counts["ACTIVATES"] == 3
    assert counts["HAS_LABEL"] == 3  # s0: A, then B from its repeat; s1: B
    assert counts["Label"] == 2 and counts["ENCODED_BY"] == 2 and counts["HAS_MOTIF"] == 1

    def rows(kind, name):
        head, *data = files.nodes.get(name) or files.relationships[name]
        return list(csv.reader(open(head))) + [r for d in data for r in csv.reader(open(d))]

    assert rows("r", "HAS_FEATURE")[1:] == [
        ["s0", "sae-x/3", "2", "0.75", "0.5"],
        ["s1", "sae-x/1", "1", "2", "2"],
    ]  # the importer reads "2" as a double
    assert rows("r", "ENCODED_BY")[1:] == [["s0", "sae-x", "run-1", "2"],
                                           ["s1", "sae-x", "run-1", "1"]]  # fmt: skip
    # the repeat's label B is on s0's node too (hsg.graph.node_labels), TAB-separated
    assert [(r[0], r[-1]) for r in rows("n", "Sequence")[1:]] == [
        ("s0", "Label_A\tLabel_B"),
        ("s1", "Label_B"),
    ]
    assert {r[-1] for r in rows("n", "Feature")[1:]} == {"SAE_sae-x"}
    head = rows("n", "IngestRun")[0]
    assert head == ["id:ID(IngestRun)", "status:string", "pid:long"]  # None left out


def test_importer_reads_relative_paths_from_here(tmp_path, monkeypatch):
    """The importer runs in the server's home: `hsg load shards/ --bulk` with a relative
    folder must hand it absolute paths (it once looked for shards/ inside the home)."""
    from hsg.db.admin_import import _files_arg

    monkeypatch.chdir(tmp_path)
    arg = _files_arg("nodes", "Model", [Path("shards/.bulk-x/nodes-Model-header.csv")])
    assert arg == f"--nodes=Model={tmp_path / 'shards/.bulk-x/nodes-Model-header.csv'}"
