"""Backfilling HAS_FEATURE on graphs ingested before the writer wrote it.

The ingest writer writes one `HAS_FEATURE {count, sum, max}` per (sequence, feature) pair in
the transaction that writes the pair's ACTIVATES (`statements.WRITE_ACTIVATIONS`). A graph
ingested by an earlier version has ACTIVATES only; `hsg db init` calls `backfill_has_feature`
to aggregate them once. It works a batch of sequences per transaction, so a large graph
needs no large transaction, and an interrupted backfill resumes where it stopped: a sequence
is done exactly when it has its HAS_FEATURE relationships. On an up-to-date graph it costs
one read that finds nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import neo4j
from neo4j.exceptions import Neo4jError, ServiceUnavailable

from hsg.db.errors import DatabaseError
from hsg.graph import statements as q


def backfill_has_feature(
    driver: neo4j.Driver,
    database: str,
    batch: int = 500,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the missing HAS_FEATURE of every encoded sequence; returns how many sequences
    got theirs. `progress` is called with the running total after each batch."""
    done = 0
    try:
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
    except ServiceUnavailable as exc:
        raise DatabaseError(
            f"lost the connection to Neo4j while backfilling HAS_FEATURE: {exc}. What was "
            "written is kept; run `hsg db init` again to finish.",
            connection_lost=True,
        ) from exc
    except Neo4jError as exc:
        raise DatabaseError(f"Neo4j refused the HAS_FEATURE backfill: {exc.message}") from exc
