"""`hsg db`: the local Neo4j + GDS server and the schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from hsg.cli.db_options import connection_options, settings_or_exit
from hsg.db import server
from hsg.db.connection import driver_session, server_versions
from hsg.db.errors import DatabaseError
from hsg.db.runs import STALE, running_ingest_runs
from hsg.db.schema import apply_schema
from hsg.db.settings import ConnectionSettings


def _server_options(func):
    func = click.option(
        "--home",
        type=click.Path(path_type=Path, file_okay=False),
        envvar="HSG_HOME",
        help="Neo4j home directory [env HSG_HOME; default ./.hsg/neo4j].",
    )(func)
    func = click.option(
        "--bolt-port", type=int, help="Bolt port [env HSG_BOLT_PORT; default 7687]."
    )(func)
    func = click.option(
        "--http-port", type=int, help="HTTP/Browser port [env HSG_HTTP_PORT; default 7474]."
    )(func)
    func = click.option("--heap", help="JVM heap, e.g. 1g [env HSG_HEAP; default 1g].")(func)
    func = click.option("--pagecache", help="Page cache size, e.g. 512m [env HSG_PAGECACHE].")(func)
    func = click.option(
        "--tx-log-retention",
        help="Transaction logs kept beyond the newest, by size, e.g. 1g; applied at start "
        f"[env HSG_TX_LOG_RETENTION; default {server.DEFAULT_TX_LOG_RETENTION}].",
    )(func)
    return func


def _config(home, bolt_port, http_port, heap, pagecache, tx_log_retention) -> server.ServerConfig:
    try:
        return server.ServerConfig.from_env(
            home=home,
            bolt_port=bolt_port,
            http_port=http_port,
            heap=heap,
            pagecache=pagecache,
            tx_log_retention=tx_log_retention,
        )
    except DatabaseError as exc:
        raise click.ClickException(str(exc)) from exc


def _fail(exc: DatabaseError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


def _log(msg: str) -> None:
    click.echo(msg, err=True)


@click.group()
def db() -> None:
    """Run a local Neo4j Community + Graph Data Science + Browser server, without Docker.

    The server is assembled from Maven Central into a normal Neo4j home (default
    ./.hsg/neo4j), bound to 127.0.0.1, with authentication on. Docker users can run
    docker/compose.yaml instead and point NEO4J_URI / NEO4J_PASSWORD at it.
    """


@db.command()
@_server_options
@click.option("--force", is_flag=True, help="Resolve and lay out the jars again.")
def install(force, **opts) -> None:
    """Fetch Neo4j, GDS and Browser jars from Maven Central and lay out the home (needs mvn)."""
    try:
        manifest = server.install(_config(**opts), force=force, log=_log)
    except DatabaseError as exc:
        _fail(exc)
    click.echo(json.dumps(manifest, indent=2))


@db.command()
@_server_options
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait for Bolt.")
def start(timeout, **opts) -> None:
    """Start the server in the background (installs it first if needed) and wait for Bolt.

    The password is NEO4J_PASSWORD, or one generated on first start and kept in
    <home>/conf/hsg-password, readable only by you.
    """
    try:
        server.start(_config(**opts), timeout=timeout, log=_log)
    except DatabaseError as exc:
        _fail(exc)


@db.command()
@_server_options
def stop(**opts) -> None:
    """Stop the server gracefully; data stays in <home>/data."""
    cfg = _config(**opts)
    if server.stop(cfg, log=_log):
        click.echo(f"Neo4j stopped ({cfg.home})")
    else:
        click.echo(f"Neo4j was not running ({cfg.home})")


@db.command()
@_server_options
@click.option(
    "--uri",
    help="Bolt URI of the server to query [env NEO4J_URI; default: the one of --bolt-port].",
)
@click.option("--user", help="User [env NEO4J_USER; default neo4j].")
@click.option("--password", help="Password [env NEO4J_PASSWORD; default: the home's].")
@click.option("--database", help="Database [env NEO4J_DATABASE; default neo4j].")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def status(uri, user, password, database, as_json, **opts) -> None:
    """Say whether the server runs, and print its Neo4j and GDS versions.

    Also lists the ingest runs still marked running, and calls a run stale when its process
    is gone. Exits 1 when the server cannot be reached.
    """
    cfg = _config(**opts)
    # the one rule of hsg.db.settings.resolve_uri, as every other command
    settings = settings_or_exit(
        uri=uri,
        bolt_port=opts["bolt_port"],
        user=user,
        password=password,
        database=database,
        home=cfg.home,
    )
    info: dict = {"home": str(cfg.home), "pid": server.running_pid(cfg), "uri": settings.uri}
    info["disk"] = server.disk_usage(cfg)
    try:
        with driver_session(settings) as driver:
            info.update(server_versions(driver, settings.database))
            info["nodes"] = driver.execute_query(
                "MATCH (n) RETURN count(n) AS c", database_=settings.database
            ).records[0]["c"]
            info["running_ingest_runs"] = running_ingest_runs(driver, settings.database)
    except DatabaseError as exc:
        info["error"] = str(exc)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        pid = info["pid"]
        click.echo(f"home:     {info['home']}")
        click.echo(f"process:  {'running, pid ' + str(pid) if pid else 'no local server process'}")
        if "error" in info:
            click.echo(f"bolt:     {settings.uri} — failed")
            click.echo(f"error: {info['error']}", err=True)
        else:
            click.echo(f"bolt:     {settings.uri} — up")
            click.echo(f"neo4j:    {info['neo4j']} ({info['edition']})")
            click.echo(f"gds:      {info['gds'] or 'NOT INSTALLED'}")
            click.echo(f"browser:  {cfg.browser_url}")
            click.echo(f"nodes:    {info['nodes']}")
            _echo_runs(info["running_ingest_runs"])
        _echo_disk(info["disk"])
    if "error" in info:
        sys.exit(1)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _echo_disk(disk: dict) -> None:
    click.echo(
        f"disk:     store {_size(disk['store_bytes'])}, transaction logs "
        f"{_size(disk['tx_log_bytes'])} (kept: {disk['tx_log_retention']}), server logs "
        f"{_size(disk['server_log_bytes'])}; home {_size(disk['home_bytes'])}"
    )


def _echo_runs(runs: list[dict]) -> None:
    if not runs:
        return
    stale = sum(run["state"] == STALE for run in runs)
    click.echo(
        f"ingest:   {len(runs)} run(s) marked running"
        + (f", {stale} stale (their process is gone)" if stale else "")
    )
    for run in runs:
        where = (
            f"pid {run['pid']} on {run['host']}"
            if run["pid"] is not None
            else "no process recorded"
        )
        click.echo(
            f"  {run['id']}  started {run['started']}  input {run['input']}  "
            f"[{run['state']}: {where}]"
        )


@db.command()
@connection_options
def init(settings: ConnectionSettings) -> None:
    """Apply schema/*.cypher (constraints, indexes) and backfill what graphs ingested by
    older versions lack (HAS_FEATURE, the Label_/SAE_ node labels PageRank projects by);
    safe to run repeatedly."""
    from hsg.graph.has_feature import backfill_has_feature, backfill_node_labels

    try:
        with driver_session(settings) as driver:
            n = apply_schema(driver, settings.database)
            backfilled = backfill_has_feature(driver, settings.database)
            labelled = backfill_node_labels(driver, settings.database)
    except DatabaseError as exc:
        _fail(exc)
    click.echo(f"schema applied: {n} statements on {settings.describe()}")
    if backfilled:
        click.echo(f"HAS_FEATURE backfilled for {backfilled} encoded sequences")
    if labelled:
        click.echo(f"Label_/SAE_ node labels added to {labelled} nodes")


@db.command()
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print every check as JSON.")
def check(settings: ConnectionSettings, as_json: bool) -> None:
    """Check the graph against what hsg's writer promises; exit 1 when anything is off.

    Reports duplicate node keys, two Features for one (SAE, index), incomplete SAE
    dictionaries, Features outside their SAE, sequences encoded twice for one SAE,
    activations pointing outside their SAE, sequences whose activations differ from their
    ENCODED_BY mark, HAS_FEATURE pairs that disagree with their activations, Label_/SAE_
    node labels that disagree with HAS_LABEL or Feature.sae, and ingest runs left
    "running". Read-only.
    """
    from dataclasses import asdict

    from hsg import api

    try:
        with api.connection_for(settings) as graph:
            findings = graph.check()
    except DatabaseError as exc:
        _fail(exc)
    problems = [f for f in findings if not f.ok]
    if as_json:
        click.echo(json.dumps([asdict(f) | {"ok": f.ok} for f in findings], indent=2))
    else:
        for f in findings:
            mark = "ok " if f.ok else "BAD"
            line = f"{mark} {f.name}: {f.count}"
            if not f.ok:
                line += f" — {f.description}; e.g. {', '.join(f.examples)}"
            click.echo(line)
        click.echo(
            f"{len(problems)} problem(s) found on {settings.describe()}"
            if problems
            else f"the graph on {settings.describe()} is consistent"
        )
    if problems:
        sys.exit(1)
