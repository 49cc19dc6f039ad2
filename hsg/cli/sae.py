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
    "l0": "l0",
    "l1_warmup": "l1_warmup",
    "lr": "lr",
    "auxk": "auxk",
    "normalize": "normalize",
    "seed": "seed",
    "dtype": "dtype",
    "batch_size": "batch_size",
    "epochs": "epochs",
    "patience": "patience",
    "min_rel_delta": "min_rel_delta",
    "val_fraction": "val_fraction",
    "shuffle_buffer": "shuffle_buffer",
    "amp": "amp",
}


def _default(key: str) -> dict[str, Any]:
    """click's default and shown default for hyper-parameter `key`, from TRAIN_DEFAULTS.

    A default that follows from the data (a rule) is shown as its rule and applied by the
    API; only options typed on the command line reach the API either way (see `train`).
    """
    from hsg.api._sae import TRAIN_DEFAULTS, DefaultRule

    value = TRAIN_DEFAULTS[key]
    if isinstance(value, DefaultRule):
        return {"default": None, "show_default": str(value)}
    if isinstance(value, float):
        return {"default": value, "show_default": f"{value:g}"}
    return {"default": value, "show_default": True}


@sae.command()
@_data_options
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Output directory: best SAE, metrics.jsonl, train_state/.",
)
@click.option(
    "--arch",
    type=click.Choice(architecture_names()),
    help="relu: MSE + λ·L1 (the study's); topk: exactly k latents per token; batchtopk: k per token on average over a batch, a learned global threshold at inference; jumprelu: learned per-latent thresholds, MSE + λ₀·L0.",
    **_default("architecture"),
)
@click.option(
    "--d-sae",
    type=click.IntRange(min=1),
    help="Latents (dictionary size).",
    **_default("d_sae"),
)
@click.option(
    "--k",
    type=click.IntRange(min=1),
    help="Active latents per token (topk; batchtopk: on average).",
    **_default("k"),
)
@click.option(
    "--l1",
    type=click.FloatRange(min=0),
    help="λ of MSE + λ·L1 (relu), on inputs normalised to a mean squared distance d_in from their mean (see --no-normalize): a latent must explain about λ·sqrt(d_in)/2 of a token's norm to fire.",
    **_default("l1"),
)
@click.option(
    "--l0",
    type=click.FloatRange(min=0),
    help="λ₀ of MSE + λ₀·L0 (jumprelu): a latent must remove about this fraction of a token's squared norm to fire.",
    **_default("l0"),
)
@click.option(
    "--l1-warmup",
    type=click.IntRange(min=0),
    help="Steps over which λ (λ₀) rises linearly from 0; patience waits for it.",
    **_default("l1_warmup"),
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    help="Adam learning rate (biases: lr / input scale); ∝ 1/sqrt(d_sae) after Gao et al. 2024.",
    **_default("lr"),
)
@click.option(
    "--auxk",
    type=click.FloatRange(min=0),
    help="Weight of the AuxK loss that revives dead latents (topk, batchtopk; Gao et al. 2024).",
    **_default("auxk"),
)
@click.option(
    "--normalize/--no-normalize",
    help="Train on inputs scaled to a mean squared distance d_in from their mean (the factor is recorded; the saved weights read raw activations). --no-normalize: the study's raw-unit loss.",
    **_default("normalize"),
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Tokens per optimizer step.",
    **_default("batch_size"),
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    help="Ceiling on epochs; early stopping (--patience) normally ends the run first.",
    **_default("epochs"),
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    help="Stop after this many epochs without a better validation loss.",
    **_default("patience"),
)
@click.option(
    "--min-rel-delta",
    type=click.FloatRange(min=0),
    help="An epoch is better only if it lowers the best validation loss by more than this fraction.",
    **_default("min_rel_delta"),
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    help="Fraction of sequences held out (by sequence id hash).",
    **_default("val_fraction"),
)
@click.option("--seed", type=int, **_default("seed"))
@click.option(
    "--shuffle-buffer",
    type=click.IntRange(min=1),
    help="Shards shuffled together; memory is about this x --shard-size rows.",
    **_default("shuffle_buffer"),
)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), **_default("dtype"))
@click.option(
    "--amp/--no-amp",
    help="Mixed precision: the forward pass in bf16 autocast (weights, gradients and Adam stay float32); for GPUs and bf16-capable CPUs.",
    **_default("amp"),
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
    """Train an SAE; the best checkpoint (by validation loss) is kept in --out.

    Every default is chosen to work as is on Nucleotide Transformer hidden states (widths
    32-1280, up to 64 x d_in latents); why each: docs/sae.md, "Defaults".
    """
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
@click.option(
    "--downstream/--no-downstream",
    default=None,
    help="Splice the reconstruction into the encoder and report the loss recovered (masked-LM "
    "loss with the checkpoint's head, else final hidden states) [default: with --data].",
)
@click.option(
    "--downstream-sequences",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Sequences of the split used for the downstream loss.",
)
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
    downstream,
    downstream_sequences,
    device,
    allow_model_mismatch,
) -> None:
    """Report MSE, fraction of variance explained, L0, L1, dead and dense latents as JSON,
    and with --data the downstream loss recovered.

    Dense latents fire on more than 10 % of the tokens scored. Loss recovered =
    (L_zero - L_sae) / (L_zero - L_clean): 1 = the reconstruction costs the model nothing,
    0 = as bad as zeroing the layer (docs/sae.md, "Quality report").
    """
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
            downstream=downstream,
            downstream_sequences=downstream_sequences,
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


@sae.command(name="import")
@click.option(
    "--from",
    "fmt",
    type=click.Choice(["saelens", "dictionary-learning"]),
    required=True,
    help="saelens: cfg.json + sae_weights.safetensors (standard, topk, jumprelu, batchtopk); "
    "dictionary-learning: ae.pt + config.json (AutoEncoder, AutoEncoderTopK, BatchTopKSAE, "
    "JumpReluAutoEncoder).",
)
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="New hsg SAE directory (cfg.json, sae.safetensors, import.json).",
)
@click.option(
    "--model",
    "model",
    help="Encoder the SAE reads: a model directory (its checkpoint hash is recorded, so "
    "every later pairing is verified) or a model id. Required when the source names none.",
)
@click.option(
    "--layer",
    type=click.IntRange(min=0),
    help="Layer in hsg's convention (0 = embeddings, i = output of block i). Required when "
    "the source does not state it so (always for dictionary-learning).",
)
def import_cmd(fmt: str, source: Path, out: Path, model: str | None, layer: int | None) -> None:
    """Import an SAE trained with SAELens or dictionary_learning; prints the record as JSON.

    Encode and decode equal the library's own within float rounding; import.json lists
    the source files' sha256 and every algebraic rewrite of the weights.
    """
    from hsg import api
    from hsg.sae.interop import MissingProvenanceError

    with _user_errors():
        try:
            record = api.import_sae(source, out, fmt=fmt, model=model, layer=layer, log=_echo_err)
        except MissingProvenanceError as exc:
            raise click.UsageError(str(exc)) from exc
    click.echo(json.dumps(record, indent=2))


@sae.command(name="export")
@click.option(
    "--to",
    "fmt",
    type=click.Choice(["saelens"]),
    default="saelens",
    show_default=True,
    help="Target format.",
)
@click.option(
    "--sae",
    "sae_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="hsg SAE directory.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Output directory (SAELens: cfg.json + sae_weights.safetensors).",
)
def export_cmd(fmt: str, sae_dir: Path, out: Path) -> None:
    """Write an hsg SAE in SAELens's format (SAE.load_from_disk reads it); prints its cfg."""
    from hsg import api

    with _user_errors():
        document = api.export_sae(sae_dir, out, to=fmt)
    click.echo(json.dumps(document, indent=2))


if __name__ == "__main__":  # pragma: no cover
    sae(sys.argv[1:])
