"""Connection settings, read in one place.

Precedence: explicit CLI options, then `NEO4J_URI` / `NEO4J_USER` / `NEO4J_PASSWORD` /
`NEO4J_DATABASE`, then the local server that `hsg db start` runs (its generated password
file), then Neo4j's defaults. This module is the only reader of those variables: the CLI
options pass only what was typed, so an option always wins over the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from hsg.db.errors import DatabaseError
from hsg.paths import default_home

DEFAULT_URI = "bolt://127.0.0.1:7687"
DEFAULT_USER = "neo4j"
DEFAULT_DATABASE = "neo4j"
PASSWORD_FILE = "hsg-password"
# The Bolt schemes; the driver's http(s) Query API is not what hsg speaks.
URI_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")


def check_uri(uri: str) -> str:
    """`uri` if it is a Bolt URI with a host; else a one-line `DatabaseError` naming it."""
    problem = None
    try:
        parts = urlsplit(uri)
        if parts.scheme not in URI_SCHEMES:
            problem = f"its scheme must be one of {', '.join(URI_SCHEMES)}"
        elif not parts.hostname:
            problem = "it names no host"
        else:
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        problem = str(exc)
    if problem:
        raise DatabaseError(
            f"bad Neo4j URI {uri!r} (NEO4J_URI or --uri): {problem}; for example {DEFAULT_URI}"
        )
    return uri


@dataclass(frozen=True)
class ConnectionSettings:
    uri: str = DEFAULT_URI
    user: str = DEFAULT_USER
    password: str | None = None
    database: str = DEFAULT_DATABASE

    def __post_init__(self) -> None:
        check_uri(self.uri)

    @classmethod
    def from_env(
        cls,
        uri: str | None = None,
        user: str | None = None,
        password: str | None = None,
        database: str | None = None,
        home: Path | None = None,
        default_uri: str = DEFAULT_URI,
    ) -> ConnectionSettings:
        """Arguments are the options given explicitly; `default_uri` is used without any."""
        env = os.environ
        resolved = cls(
            uri=uri or env.get("NEO4J_URI") or default_uri,
            user=user or env.get("NEO4J_USER") or DEFAULT_USER,
            password=password if password is not None else env.get("NEO4J_PASSWORD"),
            database=database or env.get("NEO4J_DATABASE") or DEFAULT_DATABASE,
        )
        if resolved.password is None:
            stored = read_password_file(home or default_home())
            if stored is not None:
                resolved = replace(resolved, password=stored)
        return resolved

    def describe(self) -> str:
        """For messages: never prints the password."""
        return f"{self.user}@{self.uri} (database {self.database!r})"


def password_path(home: Path) -> Path:
    return home / "conf" / PASSWORD_FILE


def read_password_file(home: Path) -> str | None:
    path = password_path(home)
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, PermissionError):
        return None
