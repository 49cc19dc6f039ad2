"""`hsg ingest`: regions in, knowledge graph out."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from hsg.cli.db_options import connection_options
from hsg.cli.options import (
    allow_mismatch_option,
    device_option,
    reference_option,
)
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
        + (
            f"   repeated ids merged: {summary.duplicates}"  # same sequence, labels combined
            if summary.duplicates
            else ""
        )
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
@click.option(
    "--model",
    "model_dir",
    help="Nucleotide Transformer: a local Hugging Face directory (or a cached hub id). Required unless --server.",
)
@click.option(
    "--sae",
    "sae_dir",
    type=click.Path(exists=True, file_okay=False),
    help="SAE directory (cfg.json + sae.safetensors). Required unless --server.",
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
@click.option(
    "--window",
    type=click.IntRange(min=1),
    help="Tile regions longer than SIZE bases into windows of SIZE (each its own Sequence, id and coordinates); shorter regions are kept whole.",
)
@click.option(
    "--stride",
    type=click.IntRange(min=1),
    help="Bases between window starts with --window [default: SIZE, no overlap]; the last window ends at the region's end.",
)
@device_option
@click.option("--dry-run", is_flag=True, help="Read, encode and annotate, but write nothing.")
@click.option(
    "--no-validate",
    is_flag=True,
    help="Skip the validation pass over the whole input before writing.",
)
@allow_mismatch_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--server",
    metavar="URL",
    help="Submit to an `hsg serve` service (e.g. http://gpu-box:8765) instead of running here; INPUT and --annotations are uploaded.",
)
@click.option(
    "--token",
    envvar="HSG_SERVICE_TOKEN",
    help="The service's bearer token [env HSG_SERVICE_TOKEN].",
)
@click.option(
    "--pair", help="With --server: the service's encoder/SAE pair by name [default: its first]."
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="ray: encode with Ray Data (an actor pool holding the model + SAE, one GPU per actor when there are GPUs) into activation shards (--shards), then load them with `hsg load --online`'s writer. See docs/scale-out.md.",
)
@click.option(
    "--address",
    help="With --engine ray: a running Ray cluster (e.g. auto, ray://head:10001) [default: start a local Ray sized to this machine].",
)
@click.option(
    "--shards",
    "shards_dir",
    type=click.Path(file_okay=False),
    help="Keep the activation shards in DIR (implies --engine ray); re-running resumes, complete shards are kept. Load them later with `hsg load DIR [--bulk]`.",
)
@click.option(
    "--actors",
    type=click.IntRange(min=1),
    help="With --engine ray: encoder actors [default: one per GPU, else one per CPU].",
)
@click.option(
    "--shard-size",
    default=2048,
    show_default=True,
    type=click.IntRange(min=1),
    help="With --engine ray: input records per shard (the unit of resumption).",
)
@click.option(
    "--no-load",
    is_flag=True,
    help="With --engine ray: write the shards only; load them with `hsg load`.",
)
@connection_options
def ingest(
    settings: ConnectionSettings,
    input_path,
    server,
    token,
    pair,
    engine,
    address,
    shards_dir,
    actors,
    shard_size,
    no_load,
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
    window,
    stride,
    device,
    dry_run,
    no_validate,
    allow_model_mismatch,
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
    from hsg import api
    from hsg.cli.errors import Bars, user_errors

    if top_k < 1 or batch_size < 1 or write_batch < 1:
        raise click.UsageError("--top-k, --batch-size and --write-batch must be at least 1")
    if stride is not None and window is None:
        raise click.UsageError("--stride needs --window")
    if server:
        if dry_run or layer is not None or model_dir or sae_dir or allow_model_mismatch:
            raise click.UsageError(
                "--server runs the service's own pairs (choose one with --pair): "
                "--model, --sae, --layer, --dry-run and --allow-model-mismatch are local options"
            )
        with user_errors(), Bars(disable=as_json) as bars:
            summary = api.remote_ingest(
                server, input_path, token=token, progress=bars, sae=pair, fmt=fmt,
                reference=Path(reference).name if reference else None, label=label,
                label_column=label_column, annotations=list(annotations), g4=g4, jaspar=jaspar,
                jaspar_pvalue=jaspar_pvalue, top_k=top_k, min_activation=min_activation,
                batch_size=batch_size, write_batch=write_batch, window=window, stride=stride,
            )  # fmt: skip
        _echo_summary(summary, as_json)
        return
    if not model_dir or not sae_dir:
        raise click.UsageError("Missing option '--model' or '--sae' (or submit with --server URL)")
    if engine == "ray" or shards_dir:
        from hsg.cli.load import ingest_with_ray

        ingest_with_ray(
            settings, input_path, model_dir, sae_dir, shards_dir=shards_dir, address=address,
            actors=actors, shard_size=shard_size, load=not (no_load or dry_run),
            write_batch=write_batch, as_json=as_json, layer=layer, fmt=fmt, reference=reference,
            label=label, label_column=label_column, annotations=list(annotations), g4=g4,
            jaspar=jaspar, jaspar_pvalue=jaspar_pvalue, top_k=top_k,
            min_activation=min_activation, batch_size=batch_size, window=window, stride=stride,
            allow_model_mismatch=allow_model_mismatch,
        )  # fmt: skip
        return
    with user_errors(), Bars(disable=as_json) as bars:
        connection = None if dry_run else api.connection_for(settings)
        try:
            summary = api.ingest(
                input_path,
                model_dir,
                sae_dir,
                connection=connection,
                dry_run=dry_run,
                layer=layer,
                fmt=fmt,
                reference=reference,
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
                window=window,
                stride=stride,
                device=device,
                validate=not no_validate,
                allow_model_mismatch=allow_model_mismatch,
                progress=bars,
            )
        finally:
            if connection is not None:
                connection.close()
    _echo_summary(summary, as_json)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(ingest())
