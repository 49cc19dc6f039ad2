"""Applying `schema/*.cypher`: constraints first, then indexes, idempotently."""

from __future__ import annotations

import re
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


_CONSTRAINT = re.compile(r"CREATE\s+CONSTRAINT\s+(\w+)\s+IF\s+NOT\s+EXISTS", re.IGNORECASE)


def declared_constraints(directory: Path | None = None) -> list[str]:
    """Names of the constraints the schema files create."""
    return [
        m.group(1)
        for _path, statement in schema_statements(directory)
        if (m := _CONSTRAINT.search(statement))
    ]


def missing_constraints(driver: neo4j.Driver, database: str) -> list[str]:
    rows = driver.execute_query("SHOW CONSTRAINTS YIELD name", database_=database).records
    present = {r["name"] for r in rows}
    return [name for name in declared_constraints() if name not in present]


def ensure_schema(driver: neo4j.Driver, database: str) -> bool:
    """Apply the schema unless every constraint it declares is there; True when applied.

    Every command that writes calls this first: without the uniqueness constraints, two
    concurrent MERGEs of one key both create a node (two Feature nodes for one latent, two
    SAE nodes …), and nothing afterwards can tell which is right. Two processes applying it
    at once is fine: a statement that loses the race is re-checked, not reported.
    """
    if not missing_constraints(driver, database):
        return False
    try:
        apply_schema(driver, database)
    except DatabaseError:
        if missing_constraints(driver, database):
            raise
    return True
