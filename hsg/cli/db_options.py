"""Click options shared by every command that talks to Neo4j.

The options carry only what was typed: `ConnectionSettings.from_env` is the one place that
reads `NEO4J_*` / `HSG_BOLT_PORT` / `HSG_HOME` and decides what wins (an option over the
environment over the defaults; `hsg.db.settings.resolve_uri` names the server).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import click

from hsg.db.errors import DatabaseError
from hsg.db.settings import ConnectionSettings


def settings_or_exit(**kwargs) -> ConnectionSettings:
    """`ConnectionSettings.from_env(**kwargs)`; a bad value is a one-line error, exit 1."""
    try:
        return ConnectionSettings.from_env(**kwargs)
    except DatabaseError as exc:
        raise click.ClickException(str(exc)) from exc


def connection_options(func: Callable) -> Callable:
    """Adds --uri/--user/--password/--database and passes `settings: ConnectionSettings`."""

    @click.option("--uri", help="Bolt URI [env NEO4J_URI; default bolt://127.0.0.1:7687].")
    @click.option("--user", help="User [env NEO4J_USER; default neo4j].")
    @click.option(
        "--password",
        help="Password [env NEO4J_PASSWORD; default: the local server's generated one].",
    )
    @click.option("--database", help="Database [env NEO4J_DATABASE; default neo4j].")
    @click.option(
        "--bolt-port",
        type=int,
        help="Bolt port of the local server (127.0.0.1), when no --uri "
        "[env HSG_BOLT_PORT, after NEO4J_URI; default 7687].",
    )
    @click.option(
        "--home",
        type=click.Path(path_type=Path, file_okay=False),
        envvar="HSG_HOME",
        help="Local server home, where its password is kept [env HSG_HOME; default ./.hsg/neo4j].",
    )
    @functools.wraps(func)
    def wrapper(*args, uri, user, password, database, bolt_port, home, **kwargs):
        settings = settings_or_exit(
            uri=uri,
            user=user,
            password=password,
            database=database,
            home=home,
            bolt_port=bolt_port,
        )
        return func(*args, settings=settings, **kwargs)

    return wrapper
