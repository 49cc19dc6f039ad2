"""Backfilling what older graphs lack: HAS_FEATURE, and the node labels of `node_labels`.

The ingest writer writes one `HAS_FEATURE {count, sum, max}` per (sequence, feature) pair in
the transaction that writes the pair's ACTIVATES (`statements.WRITE_ACTIVATIONS`). A graph
ingested by an earlier version has ACTIVATES only; `hsg db init` calls `backfill_has_feature`
to aggregate them once. It works a batch of sequences per transaction, so a large graph
needs no large transaction, and an interrupted backfill resumes where it stopped: a sequence
is done exactly when it has its HAS_FEATURE relationships. On an up-to-date graph it costs
one read that finds nothing. `backfill_node_labels` does the same for the `Label_<name>` and
`SAE_<id>` node labels GDS's native projection selects by.
"""

from __future__ import annotations

from collections.abc import Callable

import neo4j

from hsg.graph import statements as q
from hsg.graph.driver_errors import driver_errors
from hsg.graph.node_labels import LABEL_PREFIX, SAE_PREFIX


def _backfill_errors(doing: str, refused: str):
    """A lost server keeps what was written (each batch is its own transaction), and
    `hsg db init` finishes the job."""
    return driver_errors(doing, "What was written is kept; run `hsg db init` again to finish.",
                         f"the {refused}")  # fmt: skip


def backfill_has_feature(
    driver: neo4j.Driver,
    database: str,
    batch: int = 500,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the missing HAS_FEATURE of every encoded sequence; returns how many sequences
    got theirs. `progress` is called with the running total after each batch."""
    done = 0
    with _backfill_errors("backfilling HAS_FEATURE", "HAS_FEATURE backfill"):
        while True:
            rows = driver.execute_query(
                q.SEQUENCES_WITHOUT_HAS_FEATURE,
                limit=batch,
                database_=database,
                routing_=neo4j.RoutingControl.READ,
            ).records
            if not rows:
                return done
            params = [{"id": r["id"], "sae": r["sae"]} for r in rows]
            record = driver.execute_query(
                q.BACKFILL_HAS_FEATURE, rows=params, database_=database
            ).records[0]
            if record["sequences"] == 0:  # every one was written concurrently meanwhile
                continue
            done += record["sequences"]
            if progress is not None:
                progress(done)


def backfill_node_labels(driver: neo4j.Driver, database: str, batch: int = 5000) -> int:
    """Give every labelled sequence its `Label_<name>` node labels and every feature its
    `SAE_<id>` label where missing; returns how many nodes got one."""
    done = 0
    with _backfill_errors("labelling nodes", "node-label backfill"):
        done += (
            driver.execute_query(
                q.SET_FEATURE_NODE_LABELS, sae_prefix=SAE_PREFIX, database_=database
            ).records[0]["features"]
            or 0
        )
        while True:
            ids = driver.execute_query(
                q.SEQUENCES_WITHOUT_NODE_LABELS,
                label_prefix=LABEL_PREFIX,
                limit=batch,
                database_=database,
                routing_=neo4j.RoutingControl.READ,
                result_transformer_=lambda result: result.value("id"),
            )
            if not ids:
                return done
            done += driver.execute_query(
                q.SET_SEQUENCE_NODE_LABELS, ids=ids, label_prefix=LABEL_PREFIX,
                database_=database,
            ).records[0]["sequences"]  # fmt: skip
