"""Click options shared by every command that talks to Neo4j."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import click

from hsg.db.settings import ConnectionSettings


def connection_options(func: Callable) -> Callable:
    """Adds --uri/--user/--password/--database and passes `settings: ConnectionSettings`."""

    @click.option(
        "--uri", envvar="NEO4J_URI", help="Bolt URI [env NEO4J_URI; default bolt://127.0.0.1:7687]."
    )
    @click.option("--user", envvar="NEO4J_USER", help="User [env NEO4J_USER; default neo4j].")
    @click.option(
        "--password",
        envvar="NEO4J_PASSWORD",
        help="Password [env NEO4J_PASSWORD; default: the local server's generated one].",
    )
    @click.option(
        "--database", envvar="NEO4J_DATABASE", help="Database [env NEO4J_DATABASE; default neo4j]."
    )
    @click.option(
        "--home",
        type=click.Path(path_type=Path, file_okay=False),
        envvar="HSG_HOME",
        help="Local server home, where its password is kept [env HSG_HOME; default ./.hsg/neo4j].",
    )
    @functools.wraps(func)
    def wrapper(*args, uri, user, password, database, home, **kwargs):
        settings = ConnectionSettings.from_env(uri, user, password, database, home=home)
        return func(*args, settings=settings, **kwargs)

    return wrapper
