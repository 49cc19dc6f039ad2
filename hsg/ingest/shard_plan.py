"""The Ray engine's plan: the input cut into shards, one small Parquet file per shard.

The driver streams the input once and writes each shard's rows to ``input-NNNNN.parquet`` in
a plan folder as soon as the shard is full, so it never holds more than one shard of rows
(plus the ids seen so far, to merge repeats): a whole genome's windows do not have to fit in
its memory. Validation tasks and encoder actors read those files in parallel, by path — on
a cluster the plan folder sits in the shard folder, which every node mounts.

A row is a record (FASTA, TSV: the driver's reader read its sequence) or a BED lookup row
(`hsg.regions.lookup`: coordinates only, the bases fetched from the reference by whoever
reads the row). Shard ``i`` holds rows ``[i * shard_size, (i + 1) * shard_size)`` of the
input order, as it always has: a folder made by an earlier hsg resumes.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hsg.ingest.pipeline import SeenIds
from hsg.regions.lookup import lookup_record, open_reference, problem_key
from hsg.regions.records import InputError, SequenceRecord

PLAN = pa.schema(
    [
        ("id", pa.string()),
        ("chrom", pa.string()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("strand", pa.string()),
        ("sequence", pa.string()),  # null: a BED row, looked up in the reference
        ("labels", pa.list_(pa.string())),
        ("where", pa.string()),
        ("repeat", pa.bool_()),  # an id seen earlier in the input: labels only
        ("region", pa.int64()),  # order of the input row (BED: of the region) it comes from
        ("region_start", pa.int64()),  # BED rows: the region, for its checks
        ("region_end", pa.int64()),
        ("check_end", pa.int64()),
    ]
)

PLAN_PREFIX = ".plan-"


@dataclass
class LookupInput:
    """BED input for the Ray engine: `hsg.regions.lookup` rows, and where to look them up."""

    rows: Iterable[dict[str, Any]]
    reference: str
    index: str | None = None


@dataclass
class PlannedShard:
    index: int
    path: str
    rows: int
    first_region: int  # the smallest `region` in the shard (they rise with the input)


@dataclass
class Plan:
    """What the driver keeps of the plan: per shard its file and size (O(shards))."""

    directory: Path
    shard_size: int
    shards: list[PlannedShard] = field(default_factory=list)
    rows: int = 0
    duplicates: int = 0
    _chunk: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> PlannedShard | None:
        """Take one row; returns the shard this row completed (written), else None."""
        self._chunk.append(row)
        self.rows += 1
        self.duplicates += bool(row["repeat"])
        if len(self._chunk) >= self.shard_size:
            return self.flush()
        return None

    def flush(self) -> PlannedShard | None:
        """Write the rows taken since the last shard (the last, shorter shard at the end)."""
        if not self._chunk:
            return None
        index = len(self.shards)
        path = self.directory / f"input-{index:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(self._chunk, schema=PLAN), path)
        shard = PlannedShard(index, str(path), len(self._chunk), self._chunk[0]["region"])
        self.shards.append(shard)
        self._chunk = []
        return shard


def record_rows(records: Iterable[SequenceRecord]) -> Iterator[dict[str, Any]]:
    """Rows of records read by the driver; repeats merged as `run_ingest` merges them (a
    repeat with the same sequence: labels only; with another: `InputError` naming both)."""
    seen = SeenIds()
    for i, r in enumerate(records):
        first = seen.add(r)
        yield {"id": r.id, "chrom": r.chrom, "start": r.start, "end": r.end, "strand": r.strand,
               "sequence": r.sequence, "labels": list(r.labels), "where": r.where,
               "repeat": not first, "region": i}  # fmt: skip


def lookup_repeats(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """BED lookup rows with repeats marked. A BED record's id is its coordinates and strand,
    so one id always names the same reference bases: the ids alone tell a repeat (the
    "another sequence" error of `SeenIds` cannot arise), and the driver needs no bases."""
    seen: set[str] = set()
    for row in rows:
        row["repeat"] = row["id"] in seen
        seen.add(row["id"])
        yield row


def new_plan_directory(out: Path) -> Path:
    """A plan folder in the shard folder, named after this host and process; plan folders
    of this host's processes that no longer run (a killed run) are removed first."""
    out.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().replace("-", "_")
    for stale in out.glob(f"{PLAN_PREFIX}{host}-*"):
        try:
            pid = int(stale.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if not _alive(pid):
            shutil.rmtree(stale, ignore_errors=True)
    # absolute: Ray workers need not share the driver's working directory
    return Path(tempfile.mkdtemp(prefix=f"{PLAN_PREFIX}{host}-{os.getpid()}-", dir=out)).resolve()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    return pq.read_table(path, schema=PLAN).to_pylist()


class ShardRecords:
    """Plan rows → records, the reference opened once (and only when a row needs it)."""

    def __init__(self, reference: str | None = None, index: str | None = None) -> None:
        self.reference = reference
        self.index = index
        self._fasta = None

    def record(self, row: dict[str, Any]) -> SequenceRecord:
        """The row's record: as read (FASTA, TSV), or looked up in the reference (BED)."""
        if row["sequence"] is not None:
            return SequenceRecord(
                id=row["id"], chrom=row["chrom"], start=row["start"], end=row["end"],
                strand=row["strand"], sequence=row["sequence"], labels=tuple(row["labels"]),
                where=row["where"],
            )  # fmt: skip
        if self._fasta is None:
            if self.reference is None:
                raise ValueError("a BED row to look up, but no reference")
            self._fasta = open_reference(self.reference, self.index)
        return lookup_record(row, self._fasta)

    def close(self) -> None:
        if self._fasta is not None:
            self._fasta.close()
            self._fasta = None


# ----------------------------------------------------------------------- validation


def check_shard(
    shard: int,
    path: str,
    tokenizer,
    model_id: str,
    source: str,
    reference: str | None = None,
    index: str | None = None,
) -> dict[str, Any]:
    """Validate one shard's rows: bases and keys (BED rows), then tokenization (too long).

    The answer is data, not an exception (Ray wraps task exceptions in its own): the first
    problem in the reader's order, with `kind` "input" (what the sequential reader would
    have raised: it beats any "long", as reading used to finish before tokenizing) or
    "long", and a `key` that orders it among other shards' problems (`FirstProblem`)."""
    from hsg.models.errors import SequenceTooLongError

    records = ShardRecords(reference, index)
    n = 0
    found: tuple[tuple[int, int, int], str] | None = None  # the first input problem
    long: tuple[tuple[int, int, int], str] | None = None
    try:
        for row in read_rows(path):
            n += 1
            if found is not None and row["region"] > found[0][0]:
                break  # rows of later regions cannot come before it
            try:
                rec = records.record(row)
            except InputError as exc:
                key = problem_key(row, exc)
                if found is None or key < found[0]:
                    found = (key, str(exc))
                continue
            if found is None and long is None:
                try:
                    tokenizer.encode(rec.sequence, name=rec.id)
                except SequenceTooLongError as exc:
                    most = 6 * (tokenizer.max_tokens - 1)
                    long = ((shard, n, 0), (
                        f"{source}: sequence {rec.id!r} is too long for {model_id} ({exc}); "
                        f"tile it into windows with --window SIZE [--stride S], SIZE at most "
                        f"about {most} bases for this model"
                    ))  # fmt: skip
    finally:
        records.close()
    answer = {"shard": shard, "n": n, "kind": "", "key": (0, 0, 0), "message": ""}
    if found is not None:
        answer.update(kind="input", key=found[0], message=found[1])
    elif long is not None:
        answer.update(kind="long", key=long[0], message=long[1])
    return answer


class FirstProblem:
    """The problem to report among the shards' `check_shard` answers, as they arrive in any
    order: the first input problem in input order, else the first "long" one. `settled` says
    when no answer still missing can change it, so the driver can stop waiting early."""

    def __init__(self, shards: list[PlannedShard], done: Iterable[int] = ()) -> None:
        self.first_region = {s.index: s.first_region for s in shards}
        self.missing = {s.index for s in shards} - set(done)
        self.input: tuple[tuple[int, ...], str] | None = None
        self.long: tuple[tuple[int, ...], str] | None = None

    def add(self, answer: dict[str, Any]) -> None:
        self.missing.discard(int(answer["shard"]))
        key, kind = tuple(int(k) for k in answer["key"]), answer["kind"]
        if kind == "input" and (self.input is None or key < self.input[0]):
            self.input = (key, answer["message"])
        elif kind == "long" and (self.long is None or key < self.long[0]):
            self.long = (key, answer["message"])

    @property
    def settled(self) -> bool:
        if not self.missing:
            return True
        if self.input is None:
            return False  # any missing shard may hold an input problem
        region = self.input[0][0]  # shards starting at or before its region may come first
        return all(self.first_region[i] > region for i in self.missing)

    def error(self, pending: InputError | None = None) -> InputError | None:
        """What to raise: an input problem, else the driver's own (`pending`: found reading
        after every planned row), else a "long" one; None when all is well."""
        if self.input is not None:
            return InputError(self.input[1])
        if pending is not None:
            return pending
        if self.long is not None:
            return InputError(self.long[1])
        return None
