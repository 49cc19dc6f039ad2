"""Graph analyses that run inside Neo4j: PageRank per label, topology, intervention targets.

Everything here reads the graph that `hsg ingest` wrote and computes in the database (Graph
Data Science projections, named Cypher from `queries/`), so the numbers a user sees in Neo4j
Browser and the numbers the CLI prints come from the same place.

`AnalysisSession` bundles the GDS client with the database name and the connection settings:
the client alone does not say which database its driver should open sessions on, and error
messages need the settings to say where the failure happened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import neo4j
    from graphdatascience import GraphDataScience

    from hsg.db.settings import ConnectionSettings


class AnalysisError(RuntimeError):
    """A problem with the user's request (unknown SAE, empty label …); the CLI prints it."""


@dataclass
class AnalysisSession:
    gds: GraphDataScience
    settings: ConnectionSettings

    @property
    def database(self) -> str:
        return self.settings.database

    @property
    def driver(self) -> neo4j.Driver:
        return self.gds.db_driver()

    def records(self, statement: str, **params: Any) -> list[dict[str, Any]]:
        """Rows of a read statement as plain dicts.

        Server notifications follow the driver (`hsg.db.connection`): off unless
        HSG_LOG_LEVEL=DEBUG, since the library's queries name relationship types a graph may
        not have yet (OVERLAPS before any BED annotation), which is expected, not news.
        """
        with self._session(read=True) as session:
            return session.execute_read(lambda tx: [r.data() for r in tx.run(statement, params)])

    def named(self, name: str, **params: Any) -> list[dict[str, Any]]:
        """Run a query of the `queries/` library; the parameters must be exactly its own, so a
        renamed parameter fails here instead of silently reading as null."""
        from hsg.db.cypher import load_query

        query = load_query(name)
        query.check_params(params)
        return self.records(query.text, **params)

    def write(self, work: Callable[[neo4j.ManagedTransaction], Any]) -> Any:
        """Run `work` in one managed write transaction: all of it commits, or none of it."""
        with self._session(read=False) as session:
            return session.execute_write(work)

    def _session(self, read: bool) -> neo4j.Session:
        import neo4j

        return self.driver.session(
            database=self.database,
            default_access_mode=neo4j.READ_ACCESS if read else neo4j.WRITE_ACCESS,
        )


@contextmanager
def open_session(settings: ConnectionSettings) -> Iterator[AnalysisSession]:
    """A GDS client for `settings`; raises `DatabaseError` when the server lacks GDS."""
    from hsg.db.connection import open_gds

    gds = open_gds(settings)
    gds.set_show_progress(False)  # the CLI reports progress per label itself
    try:
        yield AnalysisSession(gds, settings)
    finally:
        gds.close()
