"""`hsg load SHARDS`: activation shards into Neo4j, online or with the bulk importer; and the
`hsg ingest --engine ray` adapter. Thin: the work is `hsg.api.encode_to_shards/load_shards`."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import click

from hsg.cli.db_options import connection_options
from hsg.db.settings import ConnectionSettings


def _echo_load(summary, as_json: bool) -> None:
    if as_json:
        data = asdict(summary)
        data["relationships_per_second"] = round(summary.relationships_per_second, 1)
        click.echo(json.dumps(data, indent=2))
        return
    how = "bulk import" if summary.mode == "bulk" else f"online, {summary.threads} writer threads"
    click.echo(
        f"run {summary.run_id} ({how}): {summary.sequences_encoded} sequences encoded "
        f"({summary.sequences_skipped} already present, skipped) from {summary.shards} shards "
        f"in {summary.seconds:.1f} s"
    )
    click.echo(
        f"  created: {summary.nodes_created} nodes, {summary.relationships_created} "
        f"relationships ({summary.relationships_per_second:.0f} relationships/s"
        + (f"; the importer alone {summary.import_seconds:.1f} s" if summary.import_seconds else "")
        + ")"
    )
    if summary.counts_after:
        click.echo("  graph now: " + ", ".join(f"{k} {v}" for k, v in summary.counts_after.items()))


def _echo_shards(summary, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(asdict(summary), indent=2))
        return
    click.echo(
        f"shards {summary.directory}: {summary.shards_written} written, "
        f"{summary.shards_skipped} already complete (of {summary.shards}); "
        f"{summary.sequences} sequences, {summary.activations} activations, "
        f"{summary.annotation_links} annotation links; {summary.actors} actors "
        f"in {summary.seconds:.1f} s ({summary.sequences_per_second:.0f} sequences/s)"
    )


def ingest_with_ray(
    settings: ConnectionSettings,
    input_path,
    model_dir,
    sae_dir,
    *,
    shards_dir,
    address,
    actors,
    shard_size,
    load: bool,
    write_batch: int,
    as_json: bool,
    **options,
) -> None:
    """`hsg ingest --engine ray`: shards (kept in --shards DIR, else a temporary folder),
    then the online load unless --no-load/--dry-run."""
    from hsg import api
    from hsg.cli.errors import Bars, user_errors

    if shards_dir is None and not load:
        raise click.UsageError("--no-load/--dry-run with --engine ray need --shards DIR to keep")
    folder = Path(shards_dir) if shards_dir else Path(tempfile.mkdtemp(prefix="hsg-shards-"))
    try:
        with user_errors(), Bars(disable=as_json) as bars:
            shards = api.encode_to_shards(
                input_path, model_dir, sae_dir, folder, address=address, actors=actors,
                shard_size=shard_size, progress=bars, **options,
            )  # fmt: skip
        if not as_json or not load:
            _echo_shards(shards, as_json)
        if load:
            with user_errors(), Bars(disable=as_json) as bars:
                connection = api.connection_for(settings)
                try:
                    summary = api.load_shards(
                        folder, connection=connection, write_batch=write_batch, progress=bars
                    )
                finally:
                    connection.close()
            _echo_load(summary, as_json)
    finally:
        if shards_dir is None:
            shutil.rmtree(folder, ignore_errors=True)


@click.command()
@click.argument("shards", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--online/--bulk",
    default=True,
    show_default=True,
    help="online: into the running database, several writer threads; bulk: neo4j-admin database import full into the local server's database (stopped and restarted by hsg), the fastest first load.",
)
@click.option(
    "--threads",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="--online: writer threads, on disjoint shards.",
)
@click.option(
    "--write-batch",
    default=256,
    show_default=True,
    type=click.IntRange(min=1),
    help="--online: sequences per transaction.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="--bulk: replace the database when it already holds nodes (its data is lost).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@connection_options
def load(settings: ConnectionSettings, shards, online, threads, write_batch, overwrite, as_json):
    """Write the activation shards in SHARDS (from `hsg ingest --engine ray --shards DIR`)
    into Neo4j; the graph is the one `hsg ingest` makes from the same input.

    The whole set is checked first (manifest, every shard complete, hashes, schema): a
    corrupt, incomplete or mixed set is refused before anything is written. --online is
    resumable and idempotent like `hsg ingest`. --bulk replaces (or creates) the local
    server's database: hsg stops the server, runs Neo4j's importer, starts it again and
    applies the schema.
    """
    from hsg import api
    from hsg.cli.errors import Bars, user_errors

    with user_errors(), Bars(disable=as_json) as bars:
        if online:
            connection = api.connection_for(settings)
            try:
                summary = api.load_shards(
                    shards, connection=connection, threads=threads, write_batch=write_batch,
                    progress=bars,
                )  # fmt: skip
            finally:
                connection.close()
        else:
            from hsg.db.server import ServerConfig, running_pid

            home = click.get_current_context().params.get("home")
            cfg = ServerConfig.from_env(home=home, bolt_port=_bolt_port(settings))
            connection = api.connection_for(settings) if running_pid(cfg) else None
            try:
                summary = api.load_shards(
                    shards, mode="bulk", overwrite=overwrite, server=cfg, progress=bars,
                    connection=connection, database=settings.database,
                    log=lambda msg: click.echo(msg, err=True),
                )  # fmt: skip
            finally:
                if connection is not None:
                    connection.close()
    _echo_load(summary, as_json)


def _bolt_port(settings: ConnectionSettings) -> int | None:
    from urllib.parse import urlparse

    try:
        return urlparse(settings.uri).port
    except ValueError:
        return None
