"""`hsg concepts`, `hsg motifs`, `hsg atlas`: what features are, as tables, logos, the graph
and a static HTML atlas. Thin adapters over `hsg.api.concepts` / `motifs` / `atlas`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hsg.cli.db_options import connection_options


def _log(message: str) -> None:
    click.echo(message, err=True)


def _errors():
    from hsg.cli.errors import user_errors

    return user_errors()


def _thresholds(spec: str | None) -> list[float] | None:
    if not spec:
        return None
    try:
        return [float(x) for x in spec.split(",") if x.strip()]
    except ValueError as exc:
        raise click.UsageError(f"--thresholds {spec!r}: expected numbers like 0,0.25,0.5") from exc


def _fresh_options(func):
    func = click.option("--allow-model-mismatch", is_flag=True, help="Warn instead of refusing an SAE trained on another checkpoint.")(func)  # fmt: skip
    func = click.option("--device", help="Torch device for a fresh encoding [default: cpu].")(func)
    func = click.option("--sae-dir", type=click.Path(exists=True, file_okay=False), help="SAE directory for a fresh encoding (with --regions, --model).")(func)  # fmt: skip
    func = click.option("--model", type=click.Path(exists=True, file_okay=False), help="Model directory for a fresh encoding (with --regions, --sae-dir).")(func)  # fmt: skip
    func = click.option("--shards", type=click.Path(exists=True, file_okay=False), help="Read activations and annotations from an activation shard set (hsg ingest --engine ray --shards) instead of the graph.")(func)  # fmt: skip
    func = click.option("--regions", type=click.Path(exists=True, dir_okay=False), help="Encode these regions afresh instead of reading ACTIVATES from the graph.")(func)  # fmt: skip
    return click.option("--sae-id", "sae", help="SAE in the graph [default: the graph's only SAE].")(func)  # fmt: skip


@click.command()
@connection_options
@_fresh_options
@click.option(
    "--bed",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="BED file of concepts (name column = concept); repeatable. Needs sequence coordinates.",
)
@click.option("--jaspar", is_flag=True, help="Add JASPAR CORE vertebrate motif scans as concepts.")
@click.option(
    "--jaspar-pvalue", type=float, default=1e-4, show_default=True, help="p-value of a JASPAR hit."
)
@click.option(
    "--no-graph-annotations",
    is_flag=True,
    help="Ignore the OVERLAPS / HAS_MOTIF annotations stored in the graph.",
)
@click.option(
    "--thresholds",
    help="Threshold grid as fractions of each feature's max activation [default: 0,0.1,…,0.9].",
)
@click.option(
    "--select-fraction",
    type=float,
    default=0.5,
    show_default=True,
    help="Fraction of sequences in the split that chooses thresholds (the rest is the test split).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sequence split.")
@click.option(
    "--top",
    type=int,
    default=5,
    show_default=True,
    help="Features per concept written as DETECTS (ranked by select-split F1).",
)
@click.option(
    "--min-f1",
    type=float,
    default=0.0,
    show_default=True,
    help="Leave out DETECTS below this test F1.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("concepts"),
    show_default=True,
    help="Folder for concepts.tsv/.parquet, concepts_best.*, concepts.png, concepts.json.",
)
@click.option("--no-plot", is_flag=True, help="Skip the summary plot.")
@click.option("--no-write-graph", is_flag=True, help="Do not replace DETECTS in the graph.")
def concepts(settings, sae, shards, regions, model, sae_dir, device, allow_model_mismatch, bed, jaspar, jaspar_pvalue, no_graph_annotations, thresholds, select_fraction, seed, top, min_f1, out, no_plot, no_write_graph) -> None:  # fmt: skip
    """Token-level precision/recall/F1 of every feature against every annotation concept.

    Thresholds are chosen on a select split of the sequences; scores are the test split's.
    """
    from hsg.api import concepts as run

    with _errors():
        result = run(
            connection=settings,
            sae=sae,
            bed=bed,
            jaspar=jaspar,
            jaspar_pvalue=jaspar_pvalue,
            graph_annotations=not no_graph_annotations,
            thresholds=_thresholds(thresholds),
            select_fraction=select_fraction,
            seed=seed,
            top=top,
            min_f1=min_f1,
            out=out,
            plot=not no_plot,
            write_graph=not no_write_graph,
            regions=regions,
            shards=shards,
            model=model,
            sae_dir=sae_dir,
            device=device,
            allow_model_mismatch=allow_model_mismatch,
            log=_log,
        )
    best = result.best.groupby("concept", sort=True).head(1)
    for row in best.sort_values("f1", ascending=False).head(20).itertuples():
        click.echo(f"{row.concept}\t{row.feature}\tF1 {row.f1:.3f}\t(select {row.select_f1:.3f})")
    click.echo(json.dumps(result.summary(), indent=2))


@click.command()
@connection_options
@_fresh_options
@click.option(
    "--targets",
    type=click.Path(exists=True, dir_okay=False),
    help="targets.json of `hsg targets`: its features.",
)
@click.option("--feature", "features", multiple=True, help="Feature id or index; repeatable.")
@click.option(
    "--min-activations",
    type=int,
    default=20,
    show_default=True,
    help="Without --targets/--feature: every feature with at least this many activations.",
)
@click.option(
    "--seqlets", type=int, default=100, show_default=True, help="Strongest activations per feature."
)
@click.option(
    "--flank", type=int, default=6, show_default=True, help="Bases added on each side of the token."
)
@click.option(
    "--max-qvalue",
    type=float,
    default=0.05,
    show_default=True,
    help="RESEMBLES only for matches at or below this q-value.",
)
@click.option("--release", help="JASPAR release bundled with pyjaspar [default: the latest].")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("motifs"),
    show_default=True,
    help="Folder for motifs.tsv/.parquet and logos/.",
)
@click.option("--no-logos", is_flag=True, help="Skip the PNG logos.")
@click.option("--no-write-graph", is_flag=True, help="Do not replace RESEMBLES in the graph.")
def motifs(settings, sae, shards, regions, model, sae_dir, device, allow_model_mismatch, targets, features, min_activations, seqlets, flank, max_qvalue, release, out, no_logos, no_write_graph) -> None:  # fmt: skip
    """Seqlets of each feature → PWM → Tomtom against JASPAR CORE; logos and RESEMBLES."""
    from hsg.api import motifs as run

    with _errors():
        result = run(
            connection=settings,
            sae=sae,
            features=features,
            targets=targets,
            min_activations=min_activations,
            seqlets=seqlets,
            flank=flank,
            max_qvalue=max_qvalue,
            release=release,
            out=out,
            logos=not no_logos,
            write_graph=not no_write_graph,
            regions=regions,
            shards=shards,
            model=model,
            sae_dir=sae_dir,
            device=device,
            allow_model_mismatch=allow_model_mismatch,
            log=_log,
        )
    for m in result.motifs:
        best = m.best
        match = (
            f"{best.name} {best.motif_id} p={best.pvalue:.2g} q={best.qvalue:.2g}" if best else "-"
        )
        click.echo(f"{m.feature}\t{m.consensus() or '-'}\t{match}")
    click.echo(json.dumps({"run": result.run_id, "release": result.release, "features": len(result.motifs), "resembles_written": result.written, "out": str(out)}, indent=2))  # fmt: skip


@click.command()
@connection_options
@click.option("--sae-id", "sae", help="SAE in the graph [default: the graph's only SAE].")
@click.option(
    "--top-sequences",
    type=int,
    default=5,
    show_default=True,
    help="Strongest activating sequences per card.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("atlas"),
    show_default=True,
    help="Folder of the atlas; open its index.html.",
)
@click.option("--steering", "steering", multiple=True, type=click.Path(path_type=Path), help="Results of `hsg steer` (its --out folder or metrics.json) for the same SAE; their numbers go on the targets' cards. Repeatable.")  # fmt: skip
def atlas(settings, sae, top_sequences, out, steering) -> None:
    """A static, offline HTML feature atlas from the graph."""
    from hsg.api import atlas as run
    from hsg.atlas.steering import SteeringResultsError

    with _errors():
        try:
            result = run(
                out,
                connection=settings,
                sae=sae,
                top_sequences=top_sequences,
                steering=steering,
                log=_log,
            )
        except SteeringResultsError as exc:
            raise click.UsageError(f"--steering: {exc}") from exc
    click.echo(f"{result.features} features, {result.logos} logos: open {result.index}")
