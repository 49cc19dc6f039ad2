"""The single place that turns settings into a driver or a GDS client.

Failures are translated into `DatabaseError` with a message that tells the user what to do,
because the raw driver exceptions (ServiceUnavailable, AuthError) do not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import neo4j
from neo4j import GraphDatabase
from neo4j.exceptions import AuthError, ClientError, ServiceUnavailable

from hsg.db.errors import DatabaseError
from hsg.db.settings import ConnectionSettings

if TYPE_CHECKING:
    from graphdatascience import GraphDataScience


def _auth(settings: ConnectionSettings) -> tuple[str, str]:
    if settings.password is None:
        raise DatabaseError(
            "no Neo4j password: set NEO4J_PASSWORD, pass --password, or start the local "
            "server with `hsg db start` (it generates one)"
        )
    return (settings.user, settings.password)


def translate(exc: Exception, settings: ConnectionSettings) -> DatabaseError:
    if isinstance(exc, AuthError):
        return DatabaseError(
            f"Neo4j rejected the credentials for {settings.describe()}: wrong user or "
            "password. Check NEO4J_USER / NEO4J_PASSWORD (the local server's password is in "
            "<home>/conf/hsg-password)."
        )
    if isinstance(exc, ServiceUnavailable):
        return DatabaseError(
            f"Neo4j is not reachable at {settings.uri}: is the server running? "
            "Start the local one with `hsg db start`, or set NEO4J_URI."
        )
    if isinstance(exc, ClientError) and "DatabaseNotFound" in (exc.code or ""):
        return DatabaseError(f"database {settings.database!r} does not exist on {settings.uri}")
    return DatabaseError(f"Neo4j error on {settings.describe()}: {exc}")


def open_driver(settings: ConnectionSettings, verify: bool = True) -> neo4j.Driver:
    driver = GraphDatabase.driver(settings.uri, auth=_auth(settings))
    if verify:
        try:
            driver.verify_connectivity()
            driver.verify_authentication()
        except (AuthError, ServiceUnavailable, ClientError) as exc:
            driver.close()
            raise translate(exc, settings) from exc
        except OSError as exc:
            driver.close()
            raise DatabaseError(f"cannot connect to {settings.uri}: {exc}") from exc
    return driver


@contextmanager
def driver_session(settings: ConnectionSettings) -> Iterator[neo4j.Driver]:
    driver = open_driver(settings)
    try:
        yield driver
    finally:
        driver.close()


def open_gds(settings: ConnectionSettings) -> GraphDataScience:
    """A GDS client; fails clearly when the server lacks the plugin."""
    from graphdatascience import GraphDataScience

    driver = open_driver(settings)
    try:
        version = driver.execute_query(
            "RETURN gds.version() AS v", database_=settings.database
        ).records[0]["v"]
    except ClientError as exc:
        driver.close()
        raise DatabaseError(
            f"the Graph Data Science plugin is not installed on {settings.uri} "
            f"(gds.version() failed: {exc.message}). The local server from `hsg db start` "
            "has it; for Docker use docker/compose.yaml."
        ) from exc
    driver.close()
    gds = GraphDataScience(
        settings.uri, auth=_auth(settings), database=settings.database, arrow=False
    )
    gds._hsg_server_gds_version = version  # noqa: SLF001 - kept for status messages
    return gds


def server_versions(driver: neo4j.Driver, database: str) -> dict[str, str | None]:
    """Neo4j and GDS versions, for `hsg db status` and provenance records."""
    rows = driver.execute_query(
        "CALL dbms.components() YIELD name, versions, edition "
        "RETURN name, versions[0] AS version, edition",
        database_=database,
    ).records
    info: dict[str, str | None] = {"neo4j": None, "edition": None, "gds": None}
    for row in rows:
        if row["name"] == "Neo4j Kernel":
            info["neo4j"] = row["version"]
            info["edition"] = row["edition"]
    try:
        info["gds"] = driver.execute_query("RETURN gds.version() AS v", database_=database).records[
            0
        ]["v"]
    except ClientError:
        info["gds"] = None
    return info
