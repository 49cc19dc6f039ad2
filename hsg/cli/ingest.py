"""`hsg ingest`: regions in, knowledge graph out."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from hsg.cli.db_options import connection_options
from hsg.cli.options import device_option, model_option, reference_option
from hsg.db.errors import DatabaseError
from hsg.db.settings import ConnectionSettings


def _echo_summary(summary, as_json: bool) -> None:
    if as_json:
        from dataclasses import asdict

        data = asdict(summary)
        data["sequences_per_second"] = round(summary.sequences_per_second, 1)
        data["relationships_per_second"] = round(summary.relationships_per_second, 1)
        click.echo(json.dumps(data, indent=2))
        return
    verb = "would write" if summary.dry_run else "wrote"
    click.echo(
        f"run {summary.run_id}: {verb} {summary.sequences_encoded} sequences "
        f"({summary.sequences_skipped} already present, skipped) of "
        f"{summary.sequences_read} read in {summary.seconds:.1f} s "
        f"({summary.sequences_per_second:.0f} sequences/s)"
    )
    click.echo(
        f"  activations: {summary.activations}   annotation links: {summary.annotation_links}"
    )
    if not summary.dry_run:
        click.echo(
            f"  created: {summary.nodes_created} nodes, "
            f"{summary.relationships_created} relationships "
            f"({summary.relationships_per_second:.0f} relationships/s)"
        )
        before, after = summary.counts_before, summary.counts_after
        click.echo(
            "  graph now: "
            + ", ".join(
                f"{k} {after[k]}"
                + (f" (+{after[k] - before.get(k, 0)})" if after[k] != before.get(k, 0) else "")
                for k in after
            )
        )


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False))
@model_option("model_dir")
@click.option(
    "--sae",
    "sae_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="SAE directory (cfg.json + sae.safetensors).",
)
@click.option(
    "--layer",
    type=int,
    help="Encoder layer (0 = embeddings, i = output of block i). Default: the SAE's own layer; a different one is an error.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["bed", "fasta", "tsv"]),
    help="Input format (default: from the file extension).",
)
@reference_option
@click.option(
    "--label", help="Label every sequence of the input with this name (e.g. cisplatin_binding)."
)
@click.option(
    "--label-column",
    help="Take labels from this column (name or 0-based index; TSV default: 'label').",
)
@click.option(
    "--annotations",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="BED of functional elements linked by overlap (repeatable).",
)
@click.option("--g4/--no-g4", default=True, show_default=True, help="Scan G-quadruplex motifs.")
@click.option(
    "--jaspar/--no-jaspar",
    default=False,
    show_default=True,
    help="Scan JASPAR CORE vertebrate motifs (needs pyjaspar).",
)
@click.option(
    "--jaspar-pvalue", default=1e-4, show_default=True, help="p-value threshold of JASPAR hits."
)
@click.option(
    "--top-k",
    default=1,
    show_default=True,
    help="Features kept per token (1 = the study's argmax).",
)
@click.option(
    "--min-activation", default=0.0, show_default=True, help="Keep activations strictly above this."
)
@click.option(
    "--batch-size", default=64, show_default=True, help="Sequences per encoder forward pass."
)
@click.option(
    "--write-batch",
    default=256,
    show_default=True,
    help="Sequences per database transaction (256 measured fastest, see README).",
)
@device_option
@click.option("--dry-run", is_flag=True, help="Read, encode and annotate, but write nothing.")
@click.option(
    "--no-validate",
    is_flag=True,
    help="Skip the validation pass over the whole input before writing.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@connection_options
def ingest(
    settings: ConnectionSettings,
    input_path,
    model_dir,
    sae_dir,
    layer,
    fmt,
    reference,
    label,
    label_column,
    annotations,
    g4,
    jaspar,
    jaspar_pvalue,
    top_k,
    min_activation,
    batch_size,
    write_batch,
    device,
    dry_run,
    no_validate,
    as_json,
) -> None:
    """Encode the regions of INPUT and write them into Neo4j.

    INPUT is a BED file (with --reference), a FASTA file, or a TSV with columns
    `id chrom start end strand sequence label` (e.g. ../shared/data/cisplatin/loci.tsv).
    Each sequence runs through the encoder layer and the SAE; for every token its top-k
    features become (:Sequence)-[:ACTIVATES {position, token, activation, rank}]->(:Feature).

    Re-running is safe: sequences already stored for this SAE are skipped (new labels are
    still added), and a killed run resumes where it stopped. The whole input is validated
    before the first write, so bad input stores nothing.
    """
    from tqdm import tqdm

    from hsg.ingest.pipeline import IngestConfig, run_ingest
    from hsg.regions.readers import read_records
    from hsg.regions.records import InputError

    cfg = IngestConfig(
        input=input_path,
        model=model_dir,
        sae=sae_dir,
        layer=layer,
        fmt=fmt,
        reference=str(reference) if reference else None,
        label=label,
        label_column=label_column,
        annotations=list(annotations),
        g4=g4,
        jaspar=jaspar,
        jaspar_pvalue=jaspar_pvalue,
        top_k=top_k,
        min_activation=min_activation,
        batch_size=batch_size,
        write_batch=write_batch,
        device=device,
        dry_run=dry_run,
    )
    if top_k < 1 or batch_size < 1 or write_batch < 1:
        raise click.UsageError("--top-k, --batch-size and --write-batch must be at least 1")
    column: int | str | None = label_column
    if label_column is not None and label_column.isdigit():
        column = int(label_column)

    def records():
        return read_records(
            input_path, fmt=fmt, reference=reference, label=label, label_column=column
        )

    driver = None
    try:
        encoder, sae = load_models(model_dir, sae_dir, layer, device)
        total = None
        if not no_validate:
            total = validate(records(), encoder, input_path, quiet=as_json)
        if not dry_run:
            from hsg.db.connection import open_driver

            driver = open_driver(settings)
        with tqdm(total=total, desc="ingesting", unit="seq", disable=as_json) as bar:
            summary = run_ingest(
                cfg,
                records(),
                encoder,
                sae,
                driver=driver,
                database=settings.database,
                progress=bar.update,
            )
    except InputError as exc:
        raise click.ClickException(f"bad input: {exc}") from exc
    except DatabaseError as exc:
        raise click.ClickException(str(exc)) from exc
    except ValueError as exc:  # the tokenizer's verdict on a sequence, with --no-validate
        raise click.ClickException(f"bad input in {input_path}: {exc}") from exc
    finally:
        if driver is not None:
            driver.close()
    _echo_summary(summary, as_json)


def validate(records, encoder, input_path: str, quiet: bool = False) -> int:
    """Read and tokenize the whole input before anything is written; returns its size.

    Reading checks format, coordinates and bases; tokenizing checks that every sequence fits
    the model, so a too-long window fails here instead of after earlier batches were stored.
    """
    from tqdm import tqdm

    from hsg.models.errors import SequenceTooLongError

    n = 0
    for record in tqdm(records, desc="validating", unit="seq", disable=quiet, leave=False):
        try:
            encoder.tokenizer.encode(record.sequence, name=record.id)
        except SequenceTooLongError as exc:
            raise click.ClickException(
                f"bad input: {input_path}: sequence {record.id!r} is too long for "
                f"{encoder.model_id} ({exc}); split it into windows first"
            ) from exc
        n += 1
    return n


def load_models(model_dir: str, sae_dir: str, layer: int | None, device: str):
    """Encoder and SAE, checked against each other before anything is read or written.

    ``device`` is already resolved by ``--device`` (`hsg.cli.options`)."""
    from hsg.models.encoder import load_encoder
    from hsg.sae.model import SparseAutoencoder

    try:
        sae = SparseAutoencoder.load(Path(sae_dir), device=device)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise click.ClickException(f"cannot load the SAE from {sae_dir}: {exc}") from exc
    try:
        encoder = load_encoder(model_dir, device=device)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise click.ClickException(f"cannot load the model {model_dir}: {exc}") from exc
    sae_layer = sae.cfg.layer
    if layer is not None and sae_layer is not None and layer != sae_layer:
        raise click.ClickException(
            f"the SAE in {sae_dir} was trained on layer {sae_layer}, not --layer {layer}"
        )
    if layer is None and sae_layer is None:
        raise click.ClickException(f"the SAE in {sae_dir} records no layer: pass --layer")
    use_layer = layer if layer is not None else sae_layer
    if not 0 <= use_layer <= encoder.num_layers:
        raise click.ClickException(
            f"layer {use_layer} does not exist: {model_dir} has layers 0..{encoder.num_layers}"
        )
    try:
        sae.check_input(encoder.hidden_size)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    return encoder, sae


if __name__ == "__main__":  # pragma: no cover
    sys.exit(ingest())
