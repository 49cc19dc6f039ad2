"""Reading and validating a shard set before anything is loaded from it.

`ShardSet.validate` proves, before the first write, that the manifest is whole, that every
shard it announces is complete, belongs to this set (fingerprint) and is unchanged (hashes),
and that the tables carry the documented schema. A loader that starts after it passes
cannot stop half-way on a bad file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hsg.shards.errors import ShardError
from hsg.shards.manifest import Manifest, read_manifest
from hsg.shards.schema import TABLES, marker_file, table_file
from hsg.shards.writer import file_sha256


@dataclass
class Shard:
    index: int
    sequences: pa.Table
    activations: pa.Table
    annotations: pa.Table


class ShardSet:
    """A folder of shards and its manifest."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.manifest: Manifest = read_manifest(self.directory)

    # ------------------------------------------------------------------ markers
    def marker(self, index: int) -> dict[str, Any] | None:
        """Shard `index`'s marker, or None when it has none (never started, or killed)."""
        path = self.directory / marker_file(index)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ShardError(f"{path} is corrupt ({exc})") from exc
        if not isinstance(data, dict) or "files" not in data:
            raise ShardError(f"{path} is not a shard marker")
        return data

    def is_complete(self, index: int, check_hashes: bool = True) -> bool:
        """Whether shard `index` is whole and of this set (a resumed encoder skips it)."""
        try:
            self.check_shard(index, check_hashes=check_hashes)
        except ShardError:
            return False
        return True

    def check_shard(self, index: int, check_hashes: bool = True) -> dict[str, Any]:
        marker = self.marker(index)
        where = self.directory / marker_file(index)
        if marker is None:
            raise ShardError(
                f"shard {index} of {self.directory} is incomplete ({where.name} missing): "
                "run the same `hsg ingest --engine ray --shards DIR` again to finish the set"
            )
        if marker.get("fingerprint") != self.manifest.fingerprint:
            raise ShardError(
                f"{where} belongs to another shard set (another model, SAE, input or "
                "parameters than this folder's manifest.json); shard sets cannot be mixed"
            )
        for table in TABLES:
            name = table_file(table, index)
            expected = marker["files"].get(name)
            path = self.directory / name
            if expected is None or not path.is_file():
                raise ShardError(f"{path} is missing (shard {index} is incomplete)")
            if check_hashes and file_sha256(path) != expected.get("sha256"):
                raise ShardError(
                    f"{path} is corrupt: its SHA-256 differs from the one recorded in {where.name}"
                )
        return marker

    # --------------------------------------------------------------- validation
    def validate(
        self, check_hashes: bool = True, progress: Callable[[int], None] | None = None
    ) -> dict[str, int]:
        """Check every shard; totals over the set. `ShardError` on the first problem."""
        totals = {"shards": 0, "sequences": 0, "encoded": 0, "activations": 0,
                  "annotation_links": 0}  # fmt: skip
        for index in range(self.manifest.shards):
            marker = self.check_shard(index, check_hashes=check_hashes)
            for table, schema in TABLES.items():
                path = self.directory / table_file(table, index)
                try:
                    found = pq.read_schema(path)
                except (OSError, pa.ArrowException) as exc:
                    raise ShardError(f"{path} is not a readable Parquet file: {exc}") from exc
                if not found.remove_metadata().equals(schema):
                    raise ShardError(
                        f"{path} does not have the {table} schema of shard format "
                        f"{self.manifest.version}"
                    )
            totals["shards"] += 1
            for key in ("sequences", "encoded", "activations", "annotation_links"):
                totals[key] += int(marker.get(key, 0))
            if progress is not None:
                progress(1)
        return totals

    # ------------------------------------------------------------------ reading
    def read(self, index: int) -> Shard:
        tables = {}
        for table, schema in TABLES.items():
            path = self.directory / table_file(table, index)
            try:
                tables[table] = pq.read_table(path, schema=schema)
            except (OSError, pa.ArrowException) as exc:
                raise ShardError(f"cannot read {path}: {exc}") from exc
        return Shard(index=index, **tables)
