"""`hsg load --bulk`: the graph of a shard set as CSV + header files for Neo4j's importer.

This is the graph's shape a second time, as files instead of Cypher, so it follows
`statements.py` exactly: the same labels, keys, properties and relationships that
`hsg ingest` (and `hsg load --online`) write, including the per-pair HAS_FEATURE
{count, sum, max} aggregated from the ACTIVATES rows in their order, the feature dictionary
0..d_sae-1, and the Model/SAE/IngestRun provenance. `tests/db/test_shards_db.py` compares
the two graphs. Sequence properties and annotation links come from `shard_rows`, the same
mapping the online loader sends through `GraphWriter`.

The importer (`neo4j-admin database import full`, see `hsg.db.admin_import`) takes per
label / type one header file and any number of data files; ids live in one ID space per
label (`id:ID(Sequence)` …) and are stored as the `id` (or `name`) property as well.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from hsg.graph.node_labels import phenotype_node_label, sae_node_label
from hsg.graph.shard_rows import hit_from_row, sequence_props
from hsg.shards.errors import ShardError
from hsg.shards.reader import ShardSet

SEQUENCE_HEADER = ["id:ID(Sequence)", "chrom", "start:long", "end:long", "strand",
                   "length:long", "gc:double", "sequence", ":LABEL"]  # fmt: skip
# The importer splits a :LABEL field on its array delimiter; hsg passes TAB (see
# admin_import), which no label read from a tab-separated input can contain.
LABEL_DELIMITER = "\t"
RELATIONSHIP_PROPERTIES = {
    "OVERLAPS": [("start", "long"), ("end", "long"), ("strand", "string"), ("score", "double")],
    "HAS_MOTIF": [("start", "long"), ("end", "long"), ("strand", "string"), ("score", "double"),
                  ("matched", "string"), ("threshold", "double"), ("pvalue", "double")],
}  # fmt: skip


@dataclass
class ImportFiles:
    """Per node label and relationship type: [header, data files…] for the importer."""

    directory: Path
    nodes: dict[str, list[Path]] = field(default_factory=dict)
    relationships: dict[str, list[Path]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def _cell(value: Any) -> str:
    if value is None:
        return ""  # the importer sets no property for an empty field
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same double
    return str(value)


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    return "string"


class _Files:
    def __init__(self, directory: Path, spec: ImportFiles) -> None:
        self.directory = directory
        self.spec = spec
        self._open: dict[tuple[str, str], tuple[Any, Any]] = {}

    def _header(self, kind: str, name: str, header: list[str]) -> Path:
        head = self.directory / f"{kind}-{name}-header.csv"
        with open(head, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerow(header)
        return head

    def writer(self, kind: str, name: str, header: list[str]):
        key = (kind, name)
        if key not in self._open:
            head = self._header(kind, name, header)
            data = self.directory / f"{kind}-{name}.csv"
            fh = open(data, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._open[key] = (fh, csv.writer(fh))
            target = self.spec.nodes if kind == "nodes" else self.spec.relationships
            target[name] = [head, data]
        return self._count(name, self._open[key][1])

    def table(self, kind: str, name: str, header: list[str], table: pa.Table, part: int) -> None:
        """`table` as one more data file of `name`, written by Arrow's CSV writer (its
        doubles are the shortest text that reads back as the same double, as `_cell`'s)."""
        target = self.spec.nodes if kind == "nodes" else self.spec.relationships
        if name not in target:
            target[name] = [self._header(kind, name, header)]
        data = self.directory / f"{kind}-{name}-{part:05d}.csv"
        pacsv.write_csv(table, data, write_options=pacsv.WriteOptions(include_header=False))
        target[name].append(data)
        self.spec.counts[name] = self.spec.counts.get(name, 0) + table.num_rows

    def _count(self, name: str, writer):
        counts = self.spec.counts

        class Counting:
            def writerow(self, row):
                counts[name] = counts.get(name, 0) + 1
                writer.writerow([_cell(v) for v in row])

        return Counting()

    def close(self) -> None:
        for fh, _ in self._open.values():
            fh.close()


def _single(files: _Files, kind: str, name: str, props: dict[str, Any], id_field: str | None,
            id_space: str | None) -> None:  # fmt: skip
    keys = [k for k, v in props.items() if v is not None]
    header = [f"{k}:ID({id_space})" if k == id_field else f"{k}:{_type(props[k])}" for k in keys]
    files.writer(kind, name, header).writerow([props[k] for k in keys])


ACTIVATES_HEADER = [":START_ID(Sequence)", ":END_ID(Feature)", "position:long", "token",
                    "activation:double", "rank:long"]  # fmt: skip
HAS_FEATURE_HEADER = [":START_ID(Sequence)", ":END_ID(Feature)", "count:long", "sum:double",
                      "max:double"]  # fmt: skip


def _write_activations(files: _Files, acts: pa.Table, sae_id: str, part: int) -> dict[str, int]:
    """One shard's ACTIVATES and the HAS_FEATURE {count, sum, max} of each of its pairs,
    column-wise in Arrow (no Python loop per activation); returns activations per sequence
    for ENCODED_BY. Activations widen from float32 to the double `hsg ingest` stores."""
    prefix = pa.scalar(f"{sae_id}/")
    value = pc.cast(acts["activation"], pa.float64())
    feature_id = pc.binary_join_element_wise(prefix, pc.cast(acts["feature"], pa.string()), "")
    rows = pa.table(
        [acts["sequence_id"], feature_id, acts["position"], acts["token"], value, acts["rank"]],
        names=["s", "f", "position", "token", "activation", "rank"],
    )
    files.table("relationships", "ACTIVATES", ACTIVATES_HEADER, rows, part)
    pairs = (
        rows.select(["s", "f", "activation"])
        .group_by(["s", "f"], use_threads=False)  # sums in row order, as the writer's
        .aggregate([("activation", "count"), ("activation", "sum"), ("activation", "max")])
    )
    pairs = pairs.select(["s", "f", "activation_count", "activation_sum", "activation_max"])
    files.table("relationships", "HAS_FEATURE", HAS_FEATURE_HEADER, pairs, part)
    per_sequence = rows.group_by("s", use_threads=False).aggregate([("s", "count")])
    return dict(zip(per_sequence["s"].to_pylist(), per_sequence["s_count"].to_pylist(),
                    strict=True))  # fmt: skip


def write_import_files(
    shard_set: ShardSet,
    directory: str | Path,
    run: dict[str, Any],
    progress: Callable[[int], None] | None = None,
) -> ImportFiles:
    """Write the whole graph of `shard_set` (one load run `run`) as importer files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = shard_set.manifest
    sae_id = manifest.sae["id"]
    d_sae = int(manifest.sae["d_sae"])
    spec = ImportFiles(directory=directory)
    files = _Files(directory, spec)
    try:
        # provenance, as GraphWriter.register and FINISH_RUN leave it
        _single(files, "nodes", "Model", manifest.model, "id", "Model")
        _single(files, "nodes", "SAE", manifest.sae, "id", "SAE")
        _single(files, "nodes", "IngestRun", run, "id", "IngestRun")
        files.writer("relationships", "READS",
                     [":START_ID(SAE)", ":END_ID(Model)", "layer:long"]).writerow(
            [sae_id, manifest.model["id"], manifest.sae["layer"]])  # fmt: skip
        files.writer("relationships", "USED", [":START_ID(IngestRun)", ":END_ID(SAE)"]).writerow(
            [run["id"], sae_id]
        )
        features = files.writer(
            "nodes", "Feature", ["id:ID(Feature)", "sae", "index:long", ":LABEL"]
        )
        in_sae = files.writer("relationships", "IN_SAE", [":START_ID(Feature)", ":END_ID(SAE)"])
        sae_label = sae_node_label(sae_id)
        for i in range(d_sae):
            features.writerow([f"{sae_id}/{i}", sae_id, i, sae_label])
            in_sae.writerow([f"{sae_id}/{i}", sae_id])

        sequences = files.writer("nodes", "Sequence", SEQUENCE_HEADER)
        labels_out = files.writer("nodes", "Label", ["name:ID(Label)"])
        has_label = files.writer("relationships", "HAS_LABEL",
                                 [":START_ID(Sequence)", ":END_ID(Label)"])  # fmt: skip
        encoded_by = files.writer(
            "relationships", "ENCODED_BY",
            [":START_ID(Sequence)", ":END_ID(SAE)", "run", "activations:long"],
        )  # fmt: skip
        annotations_out = files.writer(
            "nodes", "Annotation", ["id:ID(Annotation)", "kind", "name", "source"]
        )
        link_writers = {
            rel: files.writer(
                "relationships", rel,
                [":START_ID(Sequence)", ":END_ID(Annotation)"]
                + [f"{name}:{kind}" for name, kind in props],
            )
            for rel, props in RELATIONSHIP_PROPERTIES.items()
        }  # fmt: skip

        # labels of a repeated id are merged onto its one Sequence (MERGE in the writer),
        # and its node carries the Label_<name> label of each (node_labels)
        labels_of: dict[str, set[str]] = {}
        repeated: dict[str, set[str]] = {}
        for index in range(manifest.shards):
            table = shard_set.read(index).sequences.select(["id", "encoded", "labels"])
            for i, e, names in zip(*table.to_pydict().values(), strict=True):
                if not e:
                    repeated.setdefault(i, set()).update(names or [])
        seen_labels: set[str] = set()
        seen_annotations: set[str] = set()
        for index in range(manifest.shards):
            shard = shard_set.read(index)
            for row in shard.sequences.to_pylist():
                names = list(dict.fromkeys(row["labels"] or []))
                if row["id"] in repeated:
                    known = labels_of.setdefault(row["id"], set())
                    names = [n for n in names if n not in known]
                    known.update(names)
                for name in names:
                    if name not in seen_labels:
                        seen_labels.add(name)
                        labels_out.writerow([name])
                    has_label.writerow([row["id"], name])
                if not row["encoded"]:
                    continue
                props = sequence_props(row)
                node_labels = sorted(set(row["labels"] or []) | repeated.get(row["id"], set()))
                for name in node_labels:
                    if LABEL_DELIMITER in name:
                        raise ShardError(
                            f"label {name!r} of sequence {row['id']!r} contains a tab, which "
                            "the bulk importer cannot take in a node label; load with --online"
                        )
                cells = [props.get(h.split(":")[0]) for h in SEQUENCE_HEADER[1:-1]]
                tags = LABEL_DELIMITER.join(phenotype_node_label(n) for n in node_labels)
                sequences.writerow([row["id"], *cells, tags])
            n_of = _write_activations(files, shard.activations, sae_id, index)
            for row in shard.sequences.to_pylist():
                if row["encoded"]:
                    encoded_by.writerow([row["id"], sae_id, run["id"], n_of.get(row["id"], 0)])
            links: dict[tuple, list] = {}  # the writer MERGEs links on these keys
            for row in shard.annotations.to_pylist():
                hit = hit_from_row(row)
                node = hit.node_properties()
                if node["id"] not in seen_annotations:
                    seen_annotations.add(node["id"])
                    annotations_out.writerow([node["id"], node["kind"], node["name"],
                                              node["source"]])  # fmt: skip
                rel = hit.relationship
                props = hit.relationship_properties()
                key = (rel, row["sequence_id"], node["id"], props["start"], props["end"])
                if rel == "HAS_MOTIF":
                    key += (props["strand"],)
                merged = links.setdefault(key, [rel, row["sequence_id"], node["id"], {}])
                merged[3].update(props)
            for rel, sid, aid, props in links.values():
                names = [name for name, _ in RELATIONSHIP_PROPERTIES[rel]]
                link_writers[rel].writerow([sid, aid] + [props.get(n) for n in names])
            if progress is not None:
                progress(shard.sequences.num_rows)
    finally:
        files.close()
    return spec


# A store written by the importer carries an older kernel version than the running server;
# Neo4j upgrades it on the first write transaction, and refuses schema commands until then
# ("not up to the requested version"). This write changes nothing and lets the upgrade run.
UPGRADE_PROBE = "CREATE (n:HsgImportProbe) DELETE n"


def finish_import(driver, database: str) -> None:
    """After an import: let Neo4j upgrade the new store, then apply hsg's schema."""
    from hsg.db.schema import apply_schema

    driver.execute_query(UPGRADE_PROBE, database_=database)
    apply_schema(driver, database)


NODE_COUNT = "MATCH (n) RETURN count(n) AS n"


def node_count(driver, database: str) -> int:
    """All nodes of `database`: the importer replaces a database whole, so anything there
    is what `--overwrite` would lose."""
    return driver.execute_query(NODE_COUNT, database_=database).records[0]["n"]


def graph_counts(driver, database: str) -> dict[str, int]:
    from hsg.graph.statements import COUNTS

    return dict(driver.execute_query(COUNTS, database_=database).records[0])
