"""Emptying a database in bounded transactions.

A single `MATCH (n) DETACH DELETE n` on a graph of millions of relationships exceeds the
transaction memory pool; deleting relationships first, then nodes, in fixed-size batches
keeps every transaction small whatever the graph's size or degree distribution. GDS
projections are dropped first, so no in-memory graph outlives the data it was built from.
"""

from __future__ import annotations

import neo4j

DROP_GDS_GRAPHS = """
CALL gds.graph.list() YIELD graphName
CALL gds.graph.drop(graphName, false) YIELD graphName AS dropped
RETURN count(*)
"""

# CALL … IN TRANSACTIONS needs an auto-commit transaction, hence session.run below.
DELETE_RELATIONSHIPS = """
MATCH ()-[r]->()
CALL (r) { DELETE r } IN TRANSACTIONS OF $batch ROWS
"""

DELETE_NODES = """
MATCH (n)
CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF $batch ROWS
"""


def wipe(driver: neo4j.Driver, database: str, batch: int = 20_000) -> None:
    """Delete every node, relationship and GDS projection of `database`."""
    with driver.session(database=database) as session:
        session.run(DROP_GDS_GRAPHS).consume()
        session.run(DELETE_RELATIONSHIPS, batch=batch).consume()
        session.run(DELETE_NODES, batch=batch).consume()
