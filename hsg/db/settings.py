"""Connection settings, read in one place.

Precedence: explicit CLI options, then `NEO4J_URI` / `NEO4J_USER` / `NEO4J_PASSWORD` /
`NEO4J_DATABASE`, then the local server that `hsg db start` runs (`HSG_BOLT_PORT`, its home
`HSG_HOME` and the generated password file there), then Neo4j's defaults. This module is the
only reader of those variables: the CLI options pass only what was typed, so an option
always wins over the environment.

Which server: `resolve_uri` is the one rule every command and API function uses, so `hsg db
status`, `hsg analyze` and `hsg.api.connect()` can never name different servers:

    --uri  >  --bolt-port  >  NEO4J_URI  >  HSG_BOLT_PORT  >  bolt://127.0.0.1:7687

A port (option or variable) names the *local* server (127.0.0.1, where `hsg db start`
binds it). `--bolt-port` beats `NEO4J_URI` because a typed option is more explicit than the
environment; `NEO4J_URI` beats `HSG_BOLT_PORT` because it names the server fully.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from hsg.db.errors import DatabaseError
from hsg.paths import default_home

LOCAL_HOST = "127.0.0.1"
DEFAULT_BOLT_PORT = 7687
DEFAULT_URI = f"bolt://{LOCAL_HOST}:{DEFAULT_BOLT_PORT}"
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


def check_port(value: object, source: str) -> int:
    """`value` as a TCP port; else a one-line `DatabaseError` naming where it came from."""
    try:
        port = int(str(value).strip())
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise DatabaseError(f"bad Bolt port {value!r} ({source}): expected a number 1-65535")
    return port


def env_bolt_port() -> int | None:
    """`HSG_BOLT_PORT` as a checked port, or None when unset or empty."""
    value = os.environ.get("HSG_BOLT_PORT")
    return check_port(value, "HSG_BOLT_PORT") if value else None


def local_bolt_uri(port: int | None = None) -> str:
    """The Bolt URI of the local server on `port` (default: `HSG_BOLT_PORT`, else 7687)."""
    if port is None:
        port = env_bolt_port() or DEFAULT_BOLT_PORT
    return f"bolt://{LOCAL_HOST}:{check_port(port, '--bolt-port')}"


def resolve_uri(uri: str | None = None, bolt_port: int | None = None) -> str:
    """Which server to talk to, from what was typed and the environment (see module doc)."""
    if uri:
        return uri
    if bolt_port is not None:
        return local_bolt_uri(bolt_port)
    return os.environ.get("NEO4J_URI") or local_bolt_uri()


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
        bolt_port: int | None = None,
    ) -> ConnectionSettings:
        """Arguments are the options given explicitly (None: not given); `home` is the local
        server's home, whose password file is the last resort (default `HSG_HOME`)."""
        env = os.environ
        resolved = cls(
            uri=resolve_uri(uri, bolt_port),
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
