"""`hsg analyze pagerank|topology` and `hsg targets`.

Progress goes to stderr and results (JSON or TSV) to stdout or `--out`, so the output can
be piped. Every failure the user can fix — unknown SAE or label, a label without
activations, no GDS plugin, no scores yet — exits 1 with one message, and leaves the stored
scores as they were.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from hsg.cli.db_options import connection_options


def _progress(message: str) -> None:
    click.echo(message, err=True)


@contextmanager
def _errors() -> Iterator[None]:
    """The API's errors (and bad option values) as one-line click errors."""
    from hsg.cli.errors import user_errors
    from hsg.config import ConfigError

    try:
        with user_errors():
            yield
    except click.ClickException as exc:
        if isinstance(exc.__cause__, ConfigError):
            raise click.UsageError(str(exc.__cause__)) from exc
        raise


def _emit(text: str, out: Path | None) -> None:
    if out is None or str(out) == "-":
        click.echo(text, nl=False)
    else:
        from hsg.fileio import atomic_write_text

        with _errors():
            atomic_write_text(out, text)
        _progress(f"wrote {out}")


def _check_out(out: Path | None, directory: bool = False) -> None:
    """Fail on an unwritable output before the work (PageRank replaces stored scores)."""
    if out is None or str(out) == "-":
        return
    from hsg.fileio import ensure_writable

    with _errors():
        ensure_writable(out, directory=directory)


def _pagerank_options(func):
    func = click.option(
        "--tolerance",
        type=float,
        default=1e-7,
        show_default=True,
        help="GDS convergence tolerance.",
    )(func)
    func = click.option(
        "--max-iterations",
        type=click.IntRange(min=1),
        default=100,
        show_default=True,
        help="PageRank iterations at most (bipartite graphs need ~100 at damping 0.85).",
    )(func)
    func = click.option(
        "--weight",
        type=click.Choice(["count", "none", "activation"]),
        default="count",
        show_default=True,
        help="Pair weight: number of activations, 1, or summed activation values.",
    )(func)
    func = click.option(
        "--damping", type=float, default=0.85, show_default=True, help="PageRank damping factor."
    )(func)
    func = click.option(
        "--label",
        "labels",
        multiple=True,
        required=True,
        help="A label (phenotype); repeat for several.",
    )(func)
    func = click.option(
        "--sae", help="SAE id; may be left out when the database holds exactly one SAE."
    )(func)
    return func


@click.group()
def analyze() -> None:
    """Graph Data Science analyses of the sequence–feature graph, per label."""


@analyze.command()
@connection_options
@_pagerank_options
@click.option(
    "--orientation",
    type=click.Choice(["undirected", "natural"]),
    default="undirected",
    show_default=True,
    help="undirected: sequence <-> feature walk; natural: sequence -> feature only.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write every feature score as JSON here.",
)
@click.option(
    "--show",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Top features per label in the JSON printed to stdout.",
)
def pagerank(
    settings, sae, labels, damping, weight, orientation, max_iterations, tolerance, out, show
) -> None:
    """PageRank of each label's features; stored as (:Feature)-[:CENTRALITY]->(:Label).

    Re-running replaces the scores of these labels (one transaction for all of them).
    """
    from hsg import api

    _check_out(out)
    with _errors():
        run = api.pagerank(
            labels,
            connection=settings,
            sae=sae,
            damping=damping,
            weight=weight,
            orientation=orientation,
            max_iterations=max_iterations,
            tolerance=tolerance,
            log=_progress,
        )
    for result in run.labels:
        if not result.converged:
            _progress(
                f"warning: PageRank for {result.label!r} did not converge in "
                f"{result.iterations} iterations; raise --max-iterations"
            )
    if out is not None:
        _emit(json.dumps(run.to_dict(), indent=2) + "\n", out)
    click.echo(json.dumps(run.to_dict(top=show), indent=2))


@analyze.command()
@connection_options
@_pagerank_options
@click.option(
    "--max-fraction",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.5,
    show_default=True,
    help="Largest share of top-PageRank features removed.",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Removal steps between 0 and --max-fraction.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Directory for topology.json and fragmentation.png.",
)
def topology(
    settings, sae, labels, damping, weight, max_iterations, tolerance, max_fraction, steps, out_dir
) -> None:
    """Counts, density, components, k-core and the fragmentation curve of each label."""
    from hsg import api
    from hsg.analysis.plots import plot_fragmentation

    _check_out(out_dir, directory=True)
    with _errors():
        report = api.topology(
            labels,
            connection=settings,
            sae=sae,
            max_fraction=max_fraction,
            steps=steps,
            damping=damping,
            weight=weight,
            max_iterations=max_iterations,
            tolerance=tolerance,
            log=_progress,
        ).to_dict()
    out_dir.mkdir(parents=True, exist_ok=True)
    _emit(json.dumps(report, indent=2) + "\n", out_dir / "topology.json")
    _progress(f"wrote {plot_fragmentation(report, out_dir / 'fragmentation.png')}")
    click.echo(json.dumps(report, indent=2))


@click.command()
@connection_options
@click.option(
    "--up", required=True, help="Label whose central features are wanted (e.g. cisplatin_binding)."
)
@click.option("--down", required=True, help="Label to compare against (e.g. non_binding).")
@click.option("--sae", help="SAE id; may be left out when the database holds exactly one SAE.")
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Targets to return; more than the candidates returns all with a warning.",
)
@click.option(
    "--min-support",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Candidates need this many activating sequences in at least one label.",
)
@click.option(
    "--pseudo-count",
    type=float,
    default=1e-6,
    show_default=True,
    help="Added to both normalised scores before the log2 ratio.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["json", "tsv"]), default="json", show_default=True
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    default="-",
    show_default=True,
    help="Output file; - for stdout.",
)
def targets(settings, up, down, sae, top, min_support, pseudo_count, fmt, out) -> None:
    """Features ranked by log2 fold change of normalised PageRank, up vs down → targets.json.

    Needs the scores of `hsg analyze pagerank` for both labels.
    """
    from hsg import api

    _check_out(out)
    with _errors():
        report = api.targets(
            up,
            down,
            connection=settings,
            sae=sae,
            top=top,
            min_support=min_support,
            pseudo_count=pseudo_count,
        )
    for warning in report.warnings:
        _progress(f"warning: {warning}")
    _emit(report.to_json() if fmt == "json" else report.to_tsv(), out)
