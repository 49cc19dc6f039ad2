"""The `hsg` command line.

Sub-commands are imported only when invoked, so `hsg --help` and `hsg db status` stay
fast and do not pay for importing torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys

import click

from hsg import __version__

# name -> (module, attribute, one-line help shown in `hsg --help`)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "db": ("hsg.cli.db", "db", "Run the local Neo4j + GDS server and apply the schema."),
    "models": ("hsg.cli.models", "models", "Nucleotide Transformer encoders: embed, make-tiny."),
    "sae": ("hsg.cli.sae", "sae", "Train and evaluate sparse autoencoders."),
    "ingest": ("hsg.cli.ingest", "ingest", "Encode regions and write them into Neo4j."),
    "load": (
        "hsg.cli.load",
        "load",
        "Activation shards into Neo4j: --online or --bulk (neo4j-admin import).",
    ),
    "analyze": ("hsg.cli.analysis", "analyze", "GDS PageRank per label and graph topology."),
    "targets": (
        "hsg.cli.analysis",
        "targets",
        "Features by differential centrality → targets.json.",
    ),
    "classifier": (
        "hsg.cli.steer",
        "classifier",
        "Train and evaluate the downstream classifier head.",
    ),
    "steer": ("hsg.cli.steer", "steer", "Intervene on SAE features from targets.json; report."),
    "depmap": ("hsg.cli.steer", "depmap", "In-silico mutagenesis dependency map of a feature."),
    "correlate": (
        "hsg.cli.correlate",
        "correlate",
        "Feature activity vs regulatory tracks, per layer.",
    ),
    "concepts": (
        "hsg.cli.concepts",
        "concepts",
        "Precision/recall/F1 of features against annotation concepts.",
    ),
    "motifs": ("hsg.cli.concepts", "motifs", "Feature motifs (seqlets → PWM) against JASPAR."),
    "atlas": ("hsg.cli.concepts", "atlas", "A static offline HTML atlas of the features."),
    "demo": ("hsg.cli.demo", "demo", "Run the whole pipeline offline on a built-in dataset."),
    "serve": ("hsg.cli.serve", "serve", "HTTP ingestion service: models loaded once, jobs queued."),
}


def _available(module: str) -> bool:
    """Whether a command's module exists in this checkout, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        available = {n for n, (m, _, _) in _COMMANDS.items() if _available(m)}
        return sorted(set(super().list_commands(ctx)) | available)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _COMMANDS:
            module_name, attr, _ = _COMMANDS[cmd_name]
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name and exc.name.startswith("hsg"):
                    return None  # not built yet in this checkout
                raise
            return getattr(module, attr)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [
            (name, help_)
            for name, (module, _, help_) in sorted(_COMMANDS.items())
            if _available(module)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


LOG_LEVEL_ENV = "HSG_LOG_LEVEL"  # read by hsg.db.connection too (server notifications)


class _StderrHandler(logging.StreamHandler):
    """Writes to `sys.stderr` as it is at each record, like click.echo: a handler holding the
    stream of the moment would write into a closed one once click's test runner restores it."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging() -> None:
    """Log hsg's messages (and, at DEBUG, the Neo4j server's notifications) to stderr at the
    level in `HSG_LOG_LEVEL`; unset, logging is left as Python's default (warnings only).

    The driver's own DEBUG chatter (every Bolt message) stays off: only the
    `neo4j.notifications` logger is opened up.
    """
    name = os.environ.get(LOG_LEVEL_ENV, "").strip().upper()
    if not name:
        return
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        click.echo(f"hsg: ignoring {LOG_LEVEL_ENV}={name!r}: not a logging level", err=True)
        return
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    logging.getLogger("hsg").setLevel(level)
    if level <= logging.DEBUG:
        logging.getLogger("neo4j.notifications").setLevel(logging.DEBUG)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hsg")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help=f"Debug logging, including the Neo4j server's notifications (same as {LOG_LEVEL_ENV}=DEBUG).",
)
def cli(verbose: bool) -> None:
    """hsg — read what genomic language models learned, as a Neo4j knowledge graph.

    Typical session: `hsg db start`, `hsg db init`, `hsg ingest regions.tsv --model …
    --sae …`, then explore in Neo4j Browser at http://127.0.0.1:7474/browser/.
    """
    if verbose:
        os.environ[LOG_LEVEL_ENV] = "DEBUG"  # also for the commands `hsg demo` runs
    configure_logging()


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
