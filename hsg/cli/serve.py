"""`hsg serve`: the ingestion service (FastAPI on uvicorn) over `hsg.service`."""

from __future__ import annotations

from pathlib import Path

import click

from hsg.cli.db_options import connection_options, settings_or_exit
from hsg.cli.options import DEVICE_HELP, resolve_device_name
from hsg.db.settings import ConnectionSettings


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Service config (JSON: pairs, references, host, port, device, dtype, neo4j …); options given here win.",
)
@click.option(
    "--model", help="Encoder of the one pair served (with --sae), added to the config's pairs."
)
@click.option(
    "--sae", type=click.Path(exists=True, file_okay=False), help="SAE directory of that pair."
)
@click.option("--name", help="Name clients give for that pair [default: the SAE directory's name].")
@click.option("--layer", type=int, help="Encoder layer of that pair [default: the SAE's].")
@click.option(
    "--reference",
    "references",
    multiple=True,
    metavar="NAME=FASTA",
    help="A reference FASTA BED jobs may name (repeatable).",
)
@click.option("--host", help="Bind address [default 127.0.0.1: this machine only].")
@click.option("--port", type=int, help="Port [default 8765].")
@click.option("--device", help=DEVICE_HELP)
@click.option("--dtype", help="Encoder dtype, e.g. bf16 on a GPU [default: float32].")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    help="Token, service id and uploads of unfinished jobs [default .hsg/service].",
)
@click.option(
    "--max-encode", type=click.IntRange(min=1), help="Most sequences per POST /encode [default 64]."
)
@click.option("--max-upload-mb", type=float, help="Largest upload accepted [default 1024].")
@connection_options
def serve(settings: ConnectionSettings, config_path, model, sae, name, layer, references, host,
          port, device, dtype, state_dir, max_encode, max_upload_mb) -> None:  # fmt: skip
    """Serve ingest jobs over HTTP with the models loaded once (OpenAPI docs at /docs).

    Every endpoint but /health needs `Authorization: Bearer TOKEN`; the token is
    HSG_SERVICE_TOKEN, else the file STATE_DIR/token made (0600) on first start. Jobs
    interrupted by a restart resume where they stopped. Submit with
    `hsg ingest --server http://HOST:PORT FILE …`.
    """
    import uvicorn

    from hsg import api
    from hsg.cli.errors import user_errors
    from hsg.service.app import create_app
    from hsg.service.auth import token_path
    from hsg.service.config import PairConfig, ServiceConfig
    from hsg.service.core import Service

    with user_errors():
        cfg = ServiceConfig.load(config_path) if config_path else ServiceConfig()
        if model or sae:
            if not (model and sae):
                raise click.UsageError("--model and --sae go together")
            cfg.pairs.append(PairConfig(name=name or Path(sae).name, model=model, sae=sae,
                                        layer=layer))  # fmt: skip
        for item in references:
            key, sep, value = item.partition("=")
            if not sep or not key or not Path(value).is_file():
                raise click.BadParameter(f"{item!r}: expected NAME=FASTA (an existing file)",
                                         param_hint="--reference")  # fmt: skip
            cfg.references[key] = value
        for attr, value in (("host", host), ("port", port), ("device", device), ("dtype", dtype),
                            ("state_dir", state_dir), ("max_encode_sequences", max_encode),
                            ("max_upload_mb", max_upload_mb)):  # fmt: skip
            if value is not None:
                setattr(cfg, attr, value)
        try:
            cfg.device = resolve_device_name(cfg.device)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--device") from exc
        cfg.check()
        if not cfg.pairs:
            raise click.UsageError("nothing to serve: give --model and --sae, or --config")
        if cfg.neo4j:  # the config file's connection, under what was typed
            typed = {k: v for k, v in click.get_current_context().params.items()
                     if k in ("uri", "user", "password", "database", "home") and v is not None}  # fmt: skip
            merged = {**cfg.neo4j, **typed}
            if "home" in merged:
                merged["home"] = Path(merged["home"])
            settings = settings_or_exit(**merged)
        connection = api.connection_for(settings)
        service = Service(cfg, connection)
        service.load(log_fn=lambda m: click.echo(m, err=True))
        resumed = service.recover()
    if resumed:
        click.echo(f"resuming {resumed} interrupted job(s)", err=True)
    where = "HSG_SERVICE_TOKEN" if _env_token() else str(token_path(cfg.state_dir))
    click.echo(f"hsg serve on http://{cfg.host}:{cfg.port} (docs at /docs); token: {where}",
               err=True)  # fmt: skip
    try:
        uvicorn.run(create_app(service), host=cfg.host, port=cfg.port, log_level="warning")
    finally:
        connection.close()


def _env_token() -> bool:
    import os

    from hsg.service.auth import TOKEN_ENV

    return bool(os.environ.get(TOKEN_ENV, "").strip())
