"""Applying `schema/*.cypher`: constraints first, then indexes, idempotently."""

from __future__ import annotations

from pathlib import Path

import neo4j
from neo4j.exceptions import Neo4jError

from hsg.db.cypher import split_statements
from hsg.db.errors import DatabaseError
from hsg.paths import schema_dir


def schema_statements(directory: Path | None = None) -> list[tuple[Path, str]]:
    directory = directory or schema_dir()
    files = sorted(directory.glob("*.cypher"))
    if not files:
        raise DatabaseError(f"no schema files (*.cypher) in {directory}")
    return [(path, stmt) for path in files for stmt in split_statements(path.read_text())]


def apply_schema(driver: neo4j.Driver, database: str, directory: Path | None = None) -> int:
    """Run every schema statement; returns how many ran.

    Constraint creation fails when existing data already breaks it (two Sequence nodes with
    one id, say); that is reported with the query that finds the offenders, since the user
    must decide which copy to keep.
    """
    count = 0
    for path, statement in schema_statements(directory):
        try:
            driver.execute_query(statement, database_=database)
        except Neo4jError as exc:
            if "ConstraintCreationFailed" in (exc.code or "") or "already exists" in str(exc):
                raise DatabaseError(
                    f"cannot apply {path.name}: the database holds data that conflicts with "
                    f"it.\n  statement: {statement}\n  server: {exc.message}\n"
                    "Find the duplicates, e.g. `MATCH (n:Sequence) WITH n.id AS id, count(*) "
                    "AS c WHERE c > 1 RETURN id, c`, merge or delete them, then run "
                    "`hsg db init` again."
                ) from exc
            raise DatabaseError(f"{path.name}: {exc.message}\n  statement: {statement}") from exc
        count += 1
    return count
