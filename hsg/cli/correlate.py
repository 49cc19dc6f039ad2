"""`hsg correlate`: the per-layer track-correlation baseline, as tables, a plot and the graph.

Every input problem (empty track file, no track on the regions' chromosomes, an SAE missing
for a requested layer, an unreachable database) becomes a `click.ClickException`: one line,
exit status 1, no traceback. Warnings go to stderr and do not stop the run.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from hsg.cli.db_options import connection_options
from hsg.cli.options import (
    allow_mismatch_option,
    device_option,
    model_option,
    reference_option,
)
from hsg.db.settings import ConnectionSettings


def _warn(msg: str) -> None:
    click.echo(f"warning: {msg}", err=True)


@click.command()
@click.option(
    "--regions",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Regions: TSV with chrom/start/end/strand/sequence, FASTA named chrom:start-end(strand), or BED with --reference.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["bed", "fasta", "tsv"]),
    help="Format of --regions [default: from the extension].",
)
@reference_option
@click.option(
    "--tracks",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="BED file of tracks; the name column (4) groups intervals into tracks.",
)
@model_option("model_dir")
@click.option(
    "--sae-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="One SAE per layer: sub-directories with cfg.json (its `layer` field, else a layer_<i> name).",
)
@click.option(
    "--layers",
    help="Layers, e.g. 0-23 or 3,6,9 [default: every layer with an SAE]. 0 = embeddings, i = output of block i.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("correlate_out"),
    show_default=True,
    help="Output directory.",
)
@click.option(
    "--max-lag",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="NCC searches lags -L..L tokens within each region.",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Best features kept per track and layer.",
)
@click.option(
    "--rank-by",
    type=click.Choice(["pearson", "ncc"]),
    default="pearson",
    show_default=True,
    help="Score that picks the best features.",
)
@click.option(
    "--subset",
    "subsets",
    multiple=True,
    metavar="NAME=REGEX",
    help="A named group of tracks whose name matches REGEX (re.search), e.g. LINE=LINE or bind=protein_bind; repeatable.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Regions per encoder forward pass.",
)
@click.option(
    "--precision",
    type=click.Choice(["float64", "float32"]),
    default="float64",
    show_default=True,
    help="Arithmetic of each batch's correlation products. float32 halves the time of that step (not of the encoder) and agrees with float64 to ~1e-6 in r; the running sums are float64 either way.",
)
@device_option
@allow_mismatch_option
@click.option("--no-plot", is_flag=True, help="Skip the PNG.")
@click.option(
    "--write-graph",
    is_flag=True,
    help="Also MERGE (:Feature)-[:CORRELATES]->(:Annotation) for the best features. Features must already be in the graph (hsg ingest with the SAE); rows of missing features are counted and skipped.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the per-layer summary as JSON.")
@connection_options
def correlate(
    regions: str,
    fmt: str | None,
    reference: Path | None,
    tracks: str,
    model_dir: str,
    sae_dir: str,
    layers: str | None,
    out_dir: Path,
    max_lag: int,
    top: int,
    rank_by: str,
    subsets: tuple[str, ...],
    batch_size: int,
    precision: str,
    device: str | None,
    allow_model_mismatch: bool,
    no_plot: bool,
    write_graph: bool,
    as_json: bool,
    settings: ConnectionSettings,
) -> None:
    """Correlate SAE feature activity with BED tracks, layer by layer (the study's baseline).

    Per token: feature activations (content tokens only) and, per track, the fraction of the
    token's bases covered by the track (mirrored for '-' regions). Scores: Pearson r and the
    centred, normalised cross-correlation, maximised over lags -L..L within each region.
    Writes best_features.tsv (+ .parquet), layer_summary.tsv/.json, tracks.tsv and
    best_scores_by_layer.png into --out.
    """
    from hsg import api
    from hsg.cli.errors import Bars
    from hsg.correlate.run import CorrelateError, parse_layers, parse_subsets
    from hsg.db.errors import DatabaseError
    from hsg.sae.compat import IncompatibleError
    from hsg.sae.model import SAELoadError

    connection = None
    try:
        parsed = parse_subsets(subsets)
        if write_graph:  # fail before the encoding, not after it
            connection = api.connection_for(settings)
        with Bars(disable=as_json, unit="region") as bars:
            result = api.correlate(
                regions,
                tracks,
                model_dir,
                sae_dir,
                out=out_dir,
                layers=parse_layers(layers) if layers else None,
                max_lag=max_lag,
                top=top,
                rank_by=rank_by,
                subsets={name: p.pattern for name, p in parsed.items()},
                batch_size=batch_size,
                precision=precision,
                fmt=fmt,
                reference=reference,
                device=device,
                allow_model_mismatch=allow_model_mismatch,
                plot=not no_plot,
                connection=connection,
                warn=_warn,
                progress=bars,
            )
    except (CorrelateError, SAELoadError, DatabaseError, IncompatibleError) as exc:
        raise click.ClickException(str(exc)) from exc
    except (ValueError, FileNotFoundError) as exc:  # InputError, model errors
        raise click.ClickException(f"bad input: {exc}") from exc
    finally:
        if connection is not None:
            connection.close()
    _report(result, result.graph, as_json)


def _report(result, written, as_json: bool) -> None:
    """`written`: the `CorrelationWrite` of --write-graph, or None."""
    all_rows = [r for r in result.summary if r["subset"] == "all"]
    if written is not None and written.missing:
        examples = ", ".join(written.missing_features)
        _warn(
            f"{written.missing} best-feature row(s) not written to the graph: their feature is "
            f"not in the graph under its SAE (e.g. {examples}); ingest sequences with that "
            "SAE first (hsg ingest --sae …), then run again"
        )
    if as_json:
        document = {
            "layers": result.summary,
            "graph_relationships": written.written if written is not None else None,
            "graph_missing_features": written.missing if written is not None else None,
        }
        click.echo(json.dumps(document, indent=2, default=str))
        return
    click.echo(f"{len(result.track_names)} tracks scored on {len(all_rows)} layer(s)")
    click.echo("layer  tokens   live/features  median best r  max best r  median best ncc")
    for r in all_rows:
        click.echo(
            f"{r['layer']:>5}  {r['tokens']:>7}  {r['live_features']:>6}/{r['features']:<6}  "
            f"{_fmt(r['best_pearson_median']):>13}  {_fmt(r['best_pearson_max']):>10}  "
            f"{_fmt(r['best_ncc_median']):>15}"
        )
    if result.outputs is not None:
        o = result.outputs
        paths = [o.best, o.parquet, o.summary_tsv, o.summary_json, o.tracks, o.plot]
        click.echo("wrote " + ", ".join(str(p) for p in paths if p is not None))
    if written is not None:
        click.echo(f"graph: {written.written} CORRELATES relationships written")


def _fmt(value: float | None) -> str:
    return "NA" if value is None else f"{value:.3f}"
