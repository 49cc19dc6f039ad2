"""Batched, idempotent writes of encoded sequences into Neo4j.

One batch of sequences is one transaction: its Sequence and Label nodes, annotations, and
every ACTIVATES relationship with the ENCODED_BY mark. A batch that fails (or a process
killed mid-batch) leaves nothing of itself behind, and the next run skips exactly the
sequences that carry the mark. Transient errors (deadlocks, leader switches) are retried
by the driver's managed transactions.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import neo4j

from hsg.db.errors import DatabaseError
from hsg.graph import statements as q
from hsg.graph.driver_errors import driver_errors
from hsg.graph.node_labels import LABEL_PREFIX, sae_node_label
from hsg.regions.annotations import AnnotationHit


@dataclass
class SequenceWrite:
    """Everything written for one sequence. `activations` None means: labels only (the
    sequence is already encoded by this SAE, a new label may still be added)."""

    id: str
    props: dict
    labels: list[str]
    activations: list[list] | None = None  # rows [feature, position, token, activation, rank]
    annotations: list[AnnotationHit] = field(default_factory=list)


@dataclass
class WriteStats:
    nodes_created: int = 0
    relationships_created: int = 0
    properties_set: int = 0
    sequences_encoded: int = 0
    activations: int = 0

    def add(self, counters: neo4j.SummaryCounters) -> None:
        self.nodes_created += counters.nodes_created
        self.relationships_created += counters.relationships_created
        self.properties_set += counters.properties_set

    def merge(self, other: WriteStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class GraphWriter:
    """Writes batches for one SAE within one ingest run."""

    def __init__(
        self,
        driver: neo4j.Driver,
        database: str,
        sae_id: str,
        run_id: str,
        d_sae: int | None = None,
    ) -> None:
        self.driver = driver
        self.database = database
        self.sae_id = sae_id
        self.run_id = run_id
        self.d_sae = d_sae

    def _check_dictionary(self, tx: neo4j.ManagedTransaction) -> None:
        """Refuse to write by list position unless the SAE's features are exactly 0..d_sae-1."""
        if self.d_sae is None:
            raise DatabaseError("GraphWriter: register() the SAE before writing activations")
        row = tx.run(q.CHECK_DICTIONARY, sae_id=self.sae_id, d_sae=self.d_sae).single()
        if row is None or not row["exact"]:
            found = 0 if row is None else row["features"]
            raise DatabaseError(
                f"the graph's feature dictionary of SAE {self.sae_id} is not exactly its "
                f"{self.d_sae} features ({found} Feature nodes carry its id): nothing was "
                "written. Run `hsg db check` to see the duplicates."
            )

    # --------------------------------------------------------------- provenance
    def register(self, model: dict, sae: dict, d_sae: int, run: dict) -> None:
        """Model, SAE, its whole feature dictionary and the run node; idempotent.

        `model["id"]` is the checkpoint hash (the Model node's key) and `model["name"]` the
        model's own id; see `statements.MERGE_MODEL`."""
        self.ensure_schema()
        self.d_sae = d_sae
        self._write(q.MERGE_MODEL, model=model)
        self._write(q.MERGE_SAE, model_hash=model["id"], sae=sae)
        for start in range(0, d_sae, 5000):
            indices = list(range(start, min(d_sae, start + 5000)))
            self._write(
                q.MERGE_FEATURES,
                sae_id=self.sae_id,
                sae_label=sae_node_label(self.sae_id),
                indices=indices,
            )
        self._write(q.CREATE_RUN, sae_id=self.sae_id, run=run)

    def ensure_schema(self) -> None:
        """The uniqueness constraints every MERGE here relies on (see `ensure_schema`)."""
        from hsg.db.schema import ensure_schema

        with driver_errors(refused="the schema"):
            ensure_schema(self.driver, self.database)

    def finish(self, summary: dict) -> None:
        self._write(q.FINISH_RUN, run_id=self.run_id, summary=summary)

    def encoded_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these sequences already carry all their activations for this SAE."""
        records = self._read(q.ENCODED_IDS, ids=list(ids), sae_id=self.sae_id)
        return {r["id"] for r in records}

    def encoded_snapshot(self, limit: int = 2_000_000) -> set[str] | None:
        """Every sequence this SAE has already encoded, in one query, or None when there
        are more than `limit` of them (ask `encoded_ids` per batch then, to bound memory).

        An ingest reads this once instead of asking per batch. A run that starts while
        another is writing may then encode a sequence the other stores meanwhile; the
        ENCODED_BY guard of WRITE_ACTIVATIONS keeps it from being written twice, so the
        snapshot only decides what is worth encoding, never what is stored."""
        with driver_errors():
            ids = self.driver.execute_query(
                q.ALL_ENCODED_IDS,
                sae_id=self.sae_id,
                limit=limit + 1,
                database_=self.database,
                routing_=neo4j.RoutingControl.READ,
                result_transformer_=lambda result: result.value("id"),
            )
        return set(ids) if len(ids) <= limit else None

    def counts(self) -> dict[str, int]:
        return dict(self._read(q.COUNTS)[0])

    # -------------------------------------------------------------------- batch
    def write_batch(self, items: Sequence[SequenceWrite]) -> WriteStats:
        seq_rows = [{"id": s.id, "props": s.props, "labels": list(s.labels)} for s in items]
        act_rows = [{"id": s.id, "acts": s.activations} for s in items if s.activations is not None]
        annotations: dict[str, dict] = {}
        links: dict[str, list[dict]] = {}  # relationship type → rows
        for s in items:
            for hit in s.annotations:
                q.link_statement(hit.relationship)  # an unknown type fails before writing
                annotations.setdefault(hit.annotation_id, hit.node_properties())
                row = {
                    "seq": s.id,
                    "ann": hit.annotation_id,
                    "props": hit.relationship_properties(),
                }
                links.setdefault(hit.relationship, []).append(row)

        def work(tx: neo4j.ManagedTransaction) -> WriteStats:
            stats = WriteStats()
            stats.add(
                tx.run(q.MERGE_SEQUENCES, rows=seq_rows, label_prefix=LABEL_PREFIX)
                .consume()
                .counters
            )
            if annotations:
                rows = list(annotations.values())
                stats.add(tx.run(q.MERGE_ANNOTATIONS, rows=rows).consume().counters)
            for relationship, rows in links.items():
                statement = q.link_statement(relationship)
                stats.add(tx.run(statement, rows=rows).consume().counters)
            if act_rows:
                self._check_dictionary(tx)
                result = tx.run(
                    q.WRITE_ACTIVATIONS, rows=act_rows, sae_id=self.sae_id, run_id=self.run_id
                )
                record = result.single(strict=True)
                stats.add(result.consume().counters)
                stats.sequences_encoded = record["encoded"]
                stats.activations = record["activations"] or 0
            return stats

        stats = self._execute(work)
        return stats

    # ------------------------------------------------------------------ helpers
    def _execute(self, work):
        kept = "Everything written before this batch is kept; run the same command again to resume."
        with driver_errors("writing", kept, refused="a write"):
            with self.driver.session(database=self.database) as session:
                return session.execute_write(work)

    def _write(self, statement: str, **params) -> None:
        self._execute(lambda tx: tx.run(statement, **params).consume())

    def _read(self, statement: str, **params) -> list[neo4j.Record]:
        with driver_errors():
            return self.driver.execute_query(
                statement,
                parameters_=params,
                database_=self.database,
                routing_=neo4j.RoutingControl.READ,
            ).records


class BackgroundWriter:
    """Runs GraphWriter.write_batch on a thread so encoding and writing overlap.

    The queue is bounded (two batches in flight), so a slow database slows the encoder
    instead of growing memory. The first write error is re-raised in the caller's thread.
    """

    _STOP = object()

    def __init__(self, writer: GraphWriter, depth: int = 2, on_done=None) -> None:
        self.writer = writer
        self.stats = WriteStats()
        self.on_done = on_done
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hsg-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            if self._error is not None:
                continue  # drain without writing after a failure
            try:
                stats = self.writer.write_batch(item)
                self.stats.merge(stats)
                if self.on_done is not None:
                    self.on_done(item, stats)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self._error = exc

    def submit(self, items: Iterable[SequenceWrite]) -> None:
        self.raise_if_failed()
        self._queue.put(list(items))

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> WriteStats:
        self._queue.put(self._STOP)
        self._thread.join()
        self.raise_if_failed()
        return self.stats
