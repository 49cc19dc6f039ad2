"""The single place that turns settings into a driver or a GDS client.

Failures are translated into `DatabaseError` with a message that tells the user what to do,
because the raw driver exceptions (ServiceUnavailable, AuthError) do not.

Server notifications ("relationship type does not exist", "cartesian product", …) are off:
the driver logs each one as a multi-line warning, and a fresh database raises many of them
for queries that are correct. `HSG_LOG_LEVEL=DEBUG` (what `hsg --verbose` sets) asks the
server for all of them again; the driver logs them to the `neo4j.notifications` logger.
The GDS client gets the same driver, so it follows the same rule.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import neo4j
from neo4j import GraphDatabase
from neo4j.exceptions import AuthError, ClientError, DriverError, Neo4jError, ServiceUnavailable

from hsg.db.errors import DatabaseError
from hsg.db.settings import ConnectionSettings

if TYPE_CHECKING:
    from graphdatascience import GraphDataScience


LOG_LEVEL_ENV = "HSG_LOG_LEVEL"


def notifications_wanted() -> bool:
    """Whether the server's notifications are asked for: only at `HSG_LOG_LEVEL=DEBUG`."""
    return os.environ.get(LOG_LEVEL_ENV, "").strip().upper() == "DEBUG"


def driver_config() -> dict[str, Any]:
    """Keyword arguments for `GraphDatabase.driver`, read from the environment at each call."""
    if notifications_wanted():
        return {}  # the server's default: every notification, logged by the driver
    return {"notifications_min_severity": "OFF"}


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
            "Start the local one with `hsg db start`, or name it with --uri/NEO4J_URI "
            "or --bolt-port/HSG_BOLT_PORT."
        )
    if isinstance(exc, ClientError) and "DatabaseNotFound" in (exc.code or ""):
        return DatabaseError(f"database {settings.database!r} does not exist on {settings.uri}")
    return DatabaseError(f"Neo4j error on {settings.describe()}: {exc}")


def open_driver(settings: ConnectionSettings, verify: bool = True) -> neo4j.Driver:
    """A driver for `settings`, checked by one round trip unless `verify` is false.

    The check covers the server, the credentials and the database; each failure is a
    `DatabaseError` that says which, and names the databases there are when it is the last.
    """
    driver = GraphDatabase.driver(settings.uri, auth=_auth(settings), **driver_config())
    if verify:
        try:
            # db.ping answers on every database, the system one included; an auto-commit
            # query, because execute_query would retry an unreachable server for 30 s
            with driver.session(database=settings.database) as session:
                session.run("CALL db.ping()").consume()
        except ClientError as exc:  # AuthError included
            if "DatabaseNotFound" in (exc.code or ""):
                error = DatabaseError(_missing_database(driver, settings))
            else:
                error = translate(exc, settings)
            driver.close()
            raise error from exc
        except ServiceUnavailable as exc:
            driver.close()
            raise translate(exc, settings) from exc
        except OSError as exc:
            driver.close()
            raise DatabaseError(f"cannot connect to {settings.uri}: {exc}") from exc
    return driver


def _missing_database(driver: neo4j.Driver, settings: ConnectionSettings) -> str:
    message = f"database {settings.database!r} does not exist on {settings.uri}"
    try:
        names = [
            r["name"]
            for r in driver.execute_query(
                "SHOW DATABASES YIELD name WHERE name <> 'system' RETURN DISTINCT name "
                "ORDER BY name",
                database_="system",
            ).records
        ]
    except (Neo4jError, DriverError):
        return f"{message}; choose another with --database or NEO4J_DATABASE"
    listed = ", ".join(repr(n) for n in names) or "none but 'system'"
    return f"{message}; it has: {listed}. Choose one with --database or NEO4J_DATABASE."


def password_accepted(uri: str, user: str, password: str) -> bool:
    """Whether the server at `uri` accepts this user and password (it must be reachable)."""
    settings = ConnectionSettings(uri, user, password)
    with GraphDatabase.driver(uri, auth=(user, password), **driver_config()) as driver:
        try:
            return driver.verify_authentication()
        except (ServiceUnavailable, OSError) as exc:
            raise translate(exc, settings) from exc


@contextmanager
def driver_session(settings: ConnectionSettings) -> Iterator[neo4j.Driver]:
    driver = open_driver(settings)
    try:
        yield driver
    finally:
        driver.close()


def open_gds(settings: ConnectionSettings) -> GraphDataScience:
    """A GDS client; fails clearly when the server lacks the plugin.

    The client runs on a driver from `open_driver` (so notifications follow `HSG_LOG_LEVEL`
    there too) and owns it: `gds.close()` closes the driver as well.
    """
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
    try:
        gds = GraphDataScience(driver, database=settings.database, arrow=False)
    except BaseException:
        driver.close()
        raise
    # Given a driver, the client leaves closing it to its owner; this client is its owner.
    close_client = gds.close

    def close() -> None:
        try:
            close_client()
        finally:
            driver.close()

    gds.close = close  # type: ignore[method-assign]
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
