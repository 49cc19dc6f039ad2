"""The driver's errors as the `DatabaseError`s every command reports, in one place.

Commands tell a lost server (`connection_lost`: running the same command again resumes) from
a statement the server refused (a constraint, a bad value). Each caller says in its own words
what it was doing and what is kept; the translation is the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from neo4j.exceptions import Neo4jError, ServiceUnavailable

from hsg.db.errors import DatabaseError


@contextmanager
def driver_errors(doing: str = "", kept: str = "", refused: str | None = None) -> Iterator[None]:
    """Lost server: "lost the connection to Neo4j[ while <doing>]: <reason>[. <kept>]".
    Refusal: "Neo4j refused <refused>: <message>"; with `refused` None it passes unchanged."""
    try:
        yield
    except ServiceUnavailable as exc:
        text = "lost the connection to Neo4j" + (f" while {doing}" if doing else "")
        text += f": {exc}" + (f". {kept}" if kept else "")
        raise DatabaseError(text, connection_lost=True) from exc
    except Neo4jError as exc:
        if refused is None:
            raise
        raise DatabaseError(f"Neo4j refused {refused}: {exc.message}") from exc
