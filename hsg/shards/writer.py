"""Writing one shard: three Parquet files, then the marker that says they are complete.

Each file goes through a temporary name and a rename, and the marker (with each file's
SHA-256 and row count) is written last, so a worker killed at any point leaves a shard that
readers see as incomplete and the next run redoes — never a half shard that looks whole.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hsg.shards.manifest import write_json_atomic
from hsg.shards.schema import ACTIVATIONS, ANNOTATIONS, SEQUENCES, marker_file, table_file


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_table(directory: Path, name: str, table: pa.Table) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        digest = file_sha256(tmp)
        os.replace(tmp, directory / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


def write_shard(
    directory: str | Path,
    index: int,
    fingerprint: str,
    sequences: list[dict[str, Any]],
    activations: dict[str, list],
    annotations: list[dict[str, Any]],
) -> dict[str, Any]:
    """Write shard `index` of the set whose manifest has `fingerprint`; returns its marker.

    ``sequences`` and ``annotations`` are rows (dicts keyed by the schema's columns, missing
    keys null); ``activations`` is columnar (one list per column of `schema.ACTIVATIONS`).
    """
    directory = Path(directory)
    tables = {
        "sequences": pa.Table.from_pylist(sequences, schema=SEQUENCES),
        "activations": pa.Table.from_pydict(activations, schema=ACTIVATIONS),
        "annotations": pa.Table.from_pylist(annotations, schema=ANNOTATIONS),
    }
    files = {}
    for table, data in tables.items():
        name = table_file(table, index)
        files[name] = {"sha256": _write_table(directory, name, data), "rows": data.num_rows}
    seq = tables["sequences"]
    encoded = sum(1 for flag in seq.column("encoded").to_pylist() if flag)
    marker = {
        "shard": index,
        "fingerprint": fingerprint,
        "files": files,
        "sequences": seq.num_rows,
        "encoded": encoded,
        "activations": tables["activations"].num_rows,
        "annotation_links": tables["annotations"].num_rows,
    }
    write_json_atomic(directory / marker_file(index), marker)
    return marker
