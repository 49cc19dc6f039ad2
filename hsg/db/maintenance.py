"""Emptying a database in bounded transactions.

A single `MATCH (n) DETACH DELETE n` on a graph of millions of relationships exceeds the
transaction memory pool; deleting relationships first, then nodes, in fixed-size batches
keeps every transaction small whatever the graph's size or degree distribution.
"""

from __future__ import annotations

import neo4j


def wipe(driver: neo4j.Driver, database: str, batch: int = 20_000) -> None:
    with driver.session(database=database) as session:
        session.run(
            "CALL gds.graph.list() YIELD graphName "
            "CALL gds.graph.drop(graphName, false) YIELD graphName AS dropped RETURN count(*)"
        ).consume()
        # CALL … IN TRANSACTIONS needs an auto-commit transaction, hence session.run
        session.run(
            "MATCH ()-[r]->() CALL (r) { DELETE r } IN TRANSACTIONS OF $batch ROWS",
            batch=batch,
        ).consume()
        session.run(
            "MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF $batch ROWS",
            batch=batch,
        ).consume()
