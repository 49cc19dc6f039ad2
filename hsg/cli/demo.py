"""`hsg demo`: the whole path, offline, on a built-in default.

It runs the same commands a user would type, in order, and prints each one first, so the
demo doubles as a worked example: start the local database, build a tiny Nucleotide
Transformer, train a small SAE on its activations, ingest labelled sequences, and show
what was stored. With `--data` it runs on real windows instead (for example
../shared/data/cisplatin/loci.tsv).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click

DEFAULT_WORK = Path(".hsg") / "demo"


def _run(args: list[str]) -> None:
    from hsg.cli import cli

    click.secho("\n$ hsg " + shlex.join(args), fg="cyan", err=True)
    try:
        cli.main(args=args, prog_name="hsg", standalone_mode=False)
    except click.exceptions.Exit as exc:
        if exc.exit_code:
            raise click.ClickException(f"`hsg {shlex.join(args)}` failed") from exc


@click.command()
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False),
    help="Labelled windows (TSV/FASTA/BED) instead of the built-in synthetic set.",
)
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_WORK,
    show_default=True,
    help="Where the model, SAE and caches go.",
)
@click.option(
    "-n",
    "--sequences",
    default=400,
    show_default=True,
    help="Size of the built-in synthetic dataset.",
)
@click.option(
    "--annotations",
    type=click.Path(exists=True, dir_okay=False),
    help="BED of functional elements to link by overlap.",
)
@click.option("--d-sae", default=128, show_default=True, help="SAE latents.")
@click.option("--epochs", default=5, show_default=True, help="SAE training epochs.")
@click.option(
    "--no-start",
    is_flag=True,
    help="Use the server at NEO4J_URI instead of starting the local one.",
)
@click.option(
    "--analyse/--no-analyse",
    default=True,
    show_default=True,
    help="Also run PageRank per label, targets, a classifier and steering.",
)
def demo(data, work: Path, sequences, annotations, d_sae, epochs, no_start, analyse) -> None:
    """Run the whole pipeline offline on a built-in dataset (or --data) and show the graph.

    Steps: hsg db start → hsg db init → hsg models make-tiny → hsg sae train → hsg ingest →
    summary queries → hsg analyze pagerank → hsg targets → hsg classifier train → hsg steer.
    Safe to run again: finished steps are reused, the ingest is idempotent, scores are
    replaced.
    """
    from hsg.regions.synthetic import make_synthetic_dataset, write_tsv

    work.mkdir(parents=True, exist_ok=True)
    if not no_start:
        _run(["db", "start"])
    _run(["db", "init"])

    model = work / "nt-v2-tiny"
    if not (model / "config.json").exists():
        _run(["models", "make-tiny", "--version", "v2", str(model)])
    if data is None:
        data_path = work / f"synthetic-{sequences}.tsv"
        if not data_path.exists():
            write_tsv(make_synthetic_dataset(n=sequences, seed=0), data_path)
            click.echo(f"wrote {sequences} synthetic labelled sequences to {data_path}", err=True)
    else:
        data_path = Path(data)
    tag = data_path.stem
    sae = work / f"sae-{tag}"
    if not (sae / "cfg.json").exists():
        _run(
            [
                "sae",
                "train",
                "--data",
                str(data_path),
                "--model",
                str(model),
                "--layer",
                "1",
                "--cache",
                str(work / f"cache-{tag}"),
                "--out",
                str(sae),
                "--d-sae",
                str(d_sae),
                "--epochs",
                str(epochs),
                "--l1-warmup",
                "200",
                "--lr",
                "1e-3",
                "--batch-size",
                "512",
            ]
        )
    ingest = ["ingest", str(data_path), "--model", str(model), "--sae", str(sae)]
    if annotations:
        ingest += ["--annotations", str(annotations)]
    _run(ingest)
    _show_graph(local=not no_start)
    if not analyse:
        return

    labels = _labels(data_path)
    if len(labels) != 2:
        click.echo(
            f"\n{len(labels)} labels in {data_path}: PageRank/targets/steering need two; done."
        )
        return
    up, down = labels
    _run(["analyze", "pagerank", "--label", up, "--label", down, "--show", "5"])
    targets = work / f"targets-{tag}.json"
    _run(
        [
            "targets",
            "--up",
            up,
            "--down",
            down,
            "--top",
            "3",
            "--min-support",
            "2",
            "--out",
            str(targets),
        ]
    )
    classifier = work / f"classifier-{tag}"
    if not (classifier / "classifier.json").exists():
        _run(
            [
                "classifier",
                "train",
                "--data",
                str(data_path),
                "--model",
                str(model),
                "--layer",
                "1",
                "--positive",
                up,
                "--epochs",
                str(max(epochs, 5) * 4),
                "--out",
                str(classifier),
            ]
        )
    report = work / f"steer-{tag}"
    _run(
        [
            "steer",
            "--targets",
            str(targets),
            "--classifier",
            str(classifier),
            "--sae",
            str(sae),
            "--model",
            str(model),
            "--data",
            str(data_path),
            "--out",
            str(report),
        ]
    )
    click.echo(f"\nsteering report: {report / 'report.md'}")


def _labels(path: Path) -> list[str]:
    """The input's labels, positive-looking first (binding / positive), for up vs down."""
    from hsg.regions.readers import read_records

    names = sorted({name for r in read_records(path) for name in r.labels})
    return sorted(names, key=lambda n: ("non" in n or "negative" in n, n))


def _named(driver, database: str, name: str, **params) -> list:
    """Rows of a query of the `queries/` library, with exactly its own parameters."""
    from hsg.db.cypher import load_query

    query = load_query(name)
    query.check_params(params)
    return driver.execute_query(query.text, parameters_=params, database_=database).records


def _show_graph(local: bool) -> None:
    """What a user would look at first in Neo4j Browser, printed."""
    from hsg.db.connection import driver_session
    from hsg.db.settings import ConnectionSettings

    settings = ConnectionSettings.from_env()
    with driver_session(settings) as driver:
        rows = _named(driver, settings.database, "label_summary")
        click.secho("\nstored per label:", bold=True)
        for r in rows:
            click.echo(
                f"  {r['label']:<20} {r['sequences']:>6} sequences  "
                f"{r['activations']:>8} activations  {r['features']:>5} features"
            )
        top = _named(driver, settings.database, "most_shared_features", limit=3)
        click.secho("most shared features per label:", bold=True)
        for r in top:
            shown = ", ".join(f"{t['feature']} ({t['sequences']})" for t in r["top"])
            click.echo(f"  {r['label']:<20} {shown}")
    query = "MATCH (f:Feature)<-[a:ACTIVATES]-(s:Sequence)-[:HAS_LABEL]->(l:Label) "
    query += "RETURN f, s, l LIMIT 100"
    if local:  # the server this demo started: its own port and password file (HSG_HOME …)
        from hsg.db.server import ServerConfig
        from hsg.db.settings import PASSWORD_FILE

        cfg = ServerConfig.from_env()
        where = (
            f": http://127.0.0.1:{cfg.http_port}/browser/ (user neo4j, password in "
            f"{cfg.home / 'conf' / PASSWORD_FILE})"
        )
    else:
        where = f" connected to {settings.uri}"
    click.echo(f"\nExplore it in Neo4j Browser{where}, e.g.\n  {query}")
