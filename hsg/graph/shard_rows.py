"""Shard rows ↔ what the graph writer takes: one mapping for the Ray engine, `hsg load
--online` and `hsg load --bulk`, so the three cannot disagree on a property.

A sequences row carries the Sequence node's properties as `hsg ingest` sets them (gc already
rounded); an annotations row carries an `AnnotationHit` (or `MotifHit`) field by field, and
is turned back into one so that node and relationship properties come from the same
methods the transactional writer calls.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from hsg.graph.writer import SequenceWrite
from hsg.regions.annotations import AnnotationHit, MotifHit
from hsg.regions.records import SequenceRecord

PROPERTY_COLUMNS = ("length", "gc", "sequence", "chrom", "start", "end", "strand")


def sequence_row(record: SequenceRecord, props: dict[str, Any], encoded: bool) -> dict[str, Any]:
    """The sequences-table row of `record`; `props` as `hsg.ingest.pipeline.sequence_props`."""
    return {"id": record.id, **props, "labels": list(record.labels), "encoded": encoded}


def sequence_props(row: dict[str, Any]) -> dict[str, Any]:
    """The Sequence node's properties from a sequences row (nulls left out, as the writer)."""
    return {k: row[k] for k in PROPERTY_COLUMNS if row.get(k) is not None}


def annotation_row(sequence_id: str, hit: AnnotationHit) -> dict[str, Any]:
    row = {
        "sequence_id": sequence_id,
        "relationship": hit.relationship,
        "annotation_id": hit.annotation_id,
        "kind": hit.kind,
        "name": hit.name,
        "source": hit.source,
        "start": hit.start,
        "end": hit.end,
        "strand": hit.strand,
        "score": hit.score,
    }
    if isinstance(hit, MotifHit):
        row.update(matched=hit.matched, threshold=hit.threshold, pvalue=hit.pvalue)
    return row


def hit_from_row(row: dict[str, Any]) -> AnnotationHit:
    common = {k: row[k] for k in ("kind", "name", "source", "start", "end", "strand", "score")}
    if row["relationship"] == MotifHit.relationship:
        return MotifHit(
            annotation_id=row["annotation_id"],
            **common,
            matched=row.get("matched") or "",
            threshold=row.get("threshold"),
            pvalue=row.get("pvalue"),
        )
    if row["relationship"] == AnnotationHit.relationship:
        return AnnotationHit(annotation_id=row["annotation_id"], **common)
    raise ValueError(f"unknown annotation relationship {row['relationship']!r} in a shard")


def sequence_writes(
    sequences: pa.Table, activations: pa.Table, annotations: pa.Table
) -> list[SequenceWrite]:
    """The writer's input for one shard: a SequenceWrite per sequences row, in order.

    Rows of repeated ids (``encoded`` false) carry labels only, as in `run_ingest`."""
    writes: list[SequenceWrite] = []
    by_id: dict[str, SequenceWrite] = {}
    for row in sequences.to_pylist():
        write = SequenceWrite(row["id"], sequence_props(row), list(row["labels"] or []))
        if row["encoded"]:
            write.activations = []
            by_id[row["id"]] = write
        writes.append(write)
    cols = activations.to_pydict()
    for sid, position, token, feature, activation, rank in zip(
        cols["sequence_id"], cols["position"], cols["token"], cols["feature"],
        cols["activation"], cols["rank"], strict=True,
    ):  # fmt: skip
        by_id[sid].activations.append([feature, position, token, float(activation), rank])
    for row in annotations.to_pylist():
        by_id[row["sequence_id"]].annotations.append(hit_from_row(row))
    return writes
