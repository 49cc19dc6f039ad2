"""`hsg sae`: cache activations, train, evaluate and inspect sparse autoencoders.

Every failure a user can cause (missing files, a tampered weight file, an SAE of the wrong
width for a layer) is turned into a `click.ClickException`: one line naming the file, exit
status 1, no traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from hsg.cli.options import allow_mismatch_option, device_option, reference_option
from hsg.sae.architectures import architecture_names

F = TypeVar("F", bound=Callable[..., Any])


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


def _user_errors():
    from hsg.cli.errors import user_errors

    return user_errors(prefix_input=False)


def _data_options(func: F) -> F:
    opts = [
        click.option(
            "--activations",
            type=click.Path(path_type=Path),
            help="Activations to read: an [N,d] .npy/.safetensors (each row its own sequence "
            "for the split), a `hsg models embed` output (.safetensors or npy directory), or an "
            "activation cache directory.",
        ),
        click.option(
            "--data",
            type=click.Path(path_type=Path),
            help="Regions to encode (TSV with sequence, FASTA, or BED with --reference).",
        ),
        reference_option,
        click.option(
            "--model",
            "model_dir",
            type=click.Path(path_type=Path),
            help="Nucleotide Transformer for --data: a local Hugging Face directory (or a "
            "cached hub id).",
        ),
        click.option("--layer", type=int, help="Layer: 0 = embeddings, i = output of block i."),
        click.option(
            "--cache",
            type=click.Path(path_type=Path, file_okay=False),
            help="Activation cache directory for --data; reused when model, layer and input "
            "are unchanged.",
        ),
        click.option(
            "--shard-size",
            type=click.IntRange(min=1),
            default=16384,
            show_default=True,
            help="Tokens per activation shard (bounds training memory).",
        ),
        click.option(
            "--embed-batch-size",
            type=click.IntRange(min=1),
            default=32,
            show_default=True,
            help="Sequences per encoder forward pass while caching.",
        ),
        click.option(
            "--include-cls",
            is_flag=True,
            help="Keep the <cls> row (excluded by default: it makes one feature touch every "
            "sequence).",
        ),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _check_sources(activations, data, model_dir, layer, cache, needs_layer: bool = True) -> None:
    if (activations is None) == (data is None):
        raise click.UsageError("give exactly one of --activations FILE or --data FILE")
    if data is not None and needs_layer and (model_dir is None or layer is None or cache is None):
        raise click.UsageError("--data needs --model, --layer and --cache")
    if data is not None and model_dir is None:
        raise click.UsageError("--data needs --model")


@click.group()
def sae() -> None:
    """Train and evaluate sparse autoencoders on one layer of an encoder.

    Typical use: `hsg sae train --data loci.tsv --model MODEL --layer 6 --cache CACHE --out
    SAE`, then `hsg sae eval --sae SAE --activations CACHE`. An SAE directory holds cfg.json
    (config, provenance and the sha256 of the weights) and sae.safetensors.
    """


@sae.command()
@_data_options
@device_option
def cache(
    activations,
    data,
    reference,
    model_dir,
    layer,
    cache,
    shard_size,
    embed_batch_size,
    include_cls,
    device,
) -> None:
    """Encode --data with --model at --layer into the activation cache --cache."""
    if activations is not None:
        raise click.UsageError("`cache` reads --data; --activations is already cached")
    from hsg import api

    if data is None or model_dir is None or layer is None or cache is None:
        raise click.UsageError("`cache` needs --data, --model, --layer and --cache")
    with _user_errors():
        store = api.cache_activations(
            data,
            model_dir,
            layer,
            cache,
            reference=reference,
            shard_size=shard_size,
            batch_size=embed_batch_size,
            include_cls=include_cls,
            device=device,
            progress=True,
            log=_echo_err,
        )
        m = store.manifest
        click.echo(
            json.dumps(
                {
                    "cache": str(cache),
                    "model_id": m.model_id,
                    "layer": m.layer,
                    "d_in": m.d_in,
                    "n_tokens": m.n_tokens,
                    "n_sequences": m.n_sequences,
                    "n_shards": len(m.shards),
                },
                indent=2,
            )
        )


# click option name -> the API's hyper-parameter name (hsg.api.TRAIN_DEFAULTS)
_TRAIN_KEYS = {
    "arch": "architecture",
    "d_sae": "d_sae",
    "k": "k",
    "l1": "l1",
    "l1_warmup": "l1_warmup",
    "lr": "lr",
    "seed": "seed",
    "dtype": "dtype",
    "batch_size": "batch_size",
    "epochs": "epochs",
    "patience": "patience",
    "val_fraction": "val_fraction",
    "shuffle_buffer": "shuffle_buffer",
}


@sae.command()
@_data_options
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Output directory: best SAE, metrics.jsonl, train_state/.",
)
@click.option("--arch", type=click.Choice(architecture_names()), default="relu", show_default=True)
@click.option("--d-sae", type=click.IntRange(min=1), help="Latents [default: 8 x d_in].")
@click.option(
    "--k",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Active latents per token (topk).",
)
@click.option(
    "--l1",
    type=click.FloatRange(min=0),
    default=1e-3,
    show_default=True,
    help="λ of MSE + λ·L1 (relu); see README for the normalisation.",
)
@click.option(
    "--l1-warmup",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Steps over which λ rises linearly from 0.",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-4,
    show_default=True,
    help="Adam learning rate.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Tokens per optimizer step.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Stop after this many epochs without a better validation loss.",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.1,
    show_default=True,
    help="Fraction of sequences held out (by sequence id hash).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--shuffle-buffer",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Shards shuffled together; memory is about this x --shard-size rows.",
)
@click.option(
    "--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True
)
@device_option
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --out after its last finished epoch; options not given "
    "again are taken from that run.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def train(
    ctx: click.Context,
    activations,
    data,
    reference,
    model_dir,
    layer,
    cache,
    shard_size,
    embed_batch_size,
    include_cls,
    out,
    resume,
    quiet,
    device,
    **hparams,
) -> None:
    """Train an SAE; the best checkpoint (by validation loss) is kept in --out."""
    from hsg import api

    _check_sources(activations, data, model_dir, layer, cache)

    # only what was typed reaches the API, so that --resume keeps the run's other values
    source = click.core.ParameterSource
    given = {
        key: hparams[name]
        for name, key in _TRAIN_KEYS.items()
        if ctx.get_parameter_source(name) in (source.COMMANDLINE, source.ENVIRONMENT)
    }
    with _user_errors():
        result = api.train_sae(
            out,
            activations=activations,
            data=data,
            model=model_dir,
            layer=layer,
            cache=cache,
            reference=reference,
            shard_size=shard_size,
            embed_batch_size=embed_batch_size,
            include_cls=include_cls,
            device=device,
            resume=resume,
            progress=not quiet,
            log=_echo_err,
            **given,
        )
    click.echo(
        json.dumps(
            {
                "sae": str(out),
                "sae_id": result.sae.sae_id,
                "best_epoch": result.best_epoch,
                "best_val_loss": result.best_val_loss,
                "epochs_run": len(result.history),
                "stopped_early": result.stopped_early,
            },
            indent=2,
        )
    )


@sae.command(name="eval")
@click.option(
    "--sae",
    "sae_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="SAE directory (cfg.json + sae.safetensors).",
)
@_data_options
@click.option(
    "--split",
    type=click.Choice(["all", "train", "val"]),
    default="all",
    show_default=True,
    help="Which sequences to score (split as in training).",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    help="For --split [default: the SAE's training run, else 0.1].",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=4096, show_default=True)
@device_option
@allow_mismatch_option
def eval_cmd(
    sae_dir,
    activations,
    data,
    reference,
    model_dir,
    layer,
    cache,
    shard_size,
    embed_batch_size,
    include_cls,
    split,
    val_fraction,
    batch_size,
    device,
    allow_model_mismatch,
) -> None:
    """Report MSE, fraction of variance explained, L0, L1 and dead latents as JSON."""
    from hsg import api

    _check_sources(activations, data, model_dir, layer, cache, needs_layer=False)
    with _user_errors():
        metrics = api.evaluate_sae(
            sae_dir,
            activations=activations,
            data=data,
            model=model_dir,
            layer=layer,
            cache=cache,
            reference=reference,
            shard_size=shard_size,
            embed_batch_size=embed_batch_size,
            include_cls=include_cls,
            split=split,
            val_fraction=val_fraction,
            batch_size=batch_size,
            device=device,
            allow_model_mismatch=allow_model_mismatch,
            log=_echo_err,
        )
    click.echo(json.dumps(metrics, indent=2))


@sae.command()
@click.argument("sae_dir", type=click.Path(path_type=Path))
def info(sae_dir: Path) -> None:
    """Verify an SAE directory (hash, shapes) and print its config and id."""
    from hsg.sae.model import SparseAutoencoder

    with _user_errors():
        model = SparseAutoencoder.load(sae_dir)
    click.echo(json.dumps({"sae_id": model.sae_id, **model.cfg.to_dict()}, indent=2))


if __name__ == "__main__":  # pragma: no cover
    sae(sys.argv[1:])
