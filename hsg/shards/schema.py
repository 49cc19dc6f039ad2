"""The Parquet schemas of a shard, one per table; `docs/scale-out.md` documents them.

Activations are float32 because the SAE computes in float32: widening to float64 on read
gives back exactly the double `hsg ingest` stores, so both paths write identical values.
"""

from __future__ import annotations

import pyarrow as pa

FORMAT = "hsg-activation-shards"
VERSION = 1

SEQUENCES = pa.schema(
    [
        ("id", pa.string()),
        ("chrom", pa.string()),  # null for FASTA input without coordinates
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("strand", pa.string()),
        ("length", pa.int64()),
        ("gc", pa.float64()),  # rounded to 6 digits, as on the Sequence node
        ("sequence", pa.string()),
        ("labels", pa.list_(pa.string())),
        # false: a repeat of an id stored earlier in the set (same sequence): labels only
        ("encoded", pa.bool_()),
    ]
)

ACTIVATIONS = pa.schema(
    [
        ("sequence_id", pa.string()),
        ("position", pa.int32()),
        ("token", pa.string()),
        ("feature", pa.int32()),
        ("activation", pa.float32()),
        ("rank", pa.int16()),
    ]
)

ANNOTATIONS = pa.schema(
    [
        ("sequence_id", pa.string()),
        ("relationship", pa.string()),  # OVERLAPS or HAS_MOTIF
        ("annotation_id", pa.string()),
        ("kind", pa.string()),
        ("name", pa.string()),
        ("source", pa.string()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("strand", pa.string()),
        ("score", pa.float64()),
        ("matched", pa.string()),  # motif hits only
        ("threshold", pa.float64()),
        ("pvalue", pa.float64()),
    ]
)

TABLES = {"sequences": SEQUENCES, "activations": ACTIVATIONS, "annotations": ANNOTATIONS}


def shard_name(index: int) -> str:
    return f"{index:05d}"


def table_file(table: str, index: int) -> str:
    return f"{table}-{shard_name(index)}.parquet"


def marker_file(index: int) -> str:
    return f"shard-{shard_name(index)}.json"
