"""`hsg sae`: cache activations, train, evaluate and inspect sparse autoencoders.

Every failure a user can cause (missing files, a tampered weight file, an SAE of the wrong
width for a layer) is turned into a `click.ClickException`: one line naming the file, exit
status 1, no traceback.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from hsg.cli.options import device_option, reference_option
from hsg.sae.architectures import architecture_names

F = TypeVar("F", bound=Callable[..., Any])


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the package's own error types into one-line CLI errors."""
    from hsg.sae.activations import ActivationError
    from hsg.sae.config import ConfigError
    from hsg.sae.model import SAELoadError
    from hsg.sae.train import TrainError

    try:
        yield
    except (ActivationError, ConfigError, SAELoadError, TrainError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    except ValueError as exc:  # e.g. SparseAutoencoder.check_input
        raise click.ClickException(str(exc)) from exc


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


def _load_encoder(model_dir: Path, layer: int) -> Any:
    try:
        from hsg.models.encoder import load_encoder
    except ModuleNotFoundError as exc:
        raise click.ClickException(f"the encoder module is not available: {exc}") from exc
    enc = load_encoder(model_dir)
    if not 0 <= layer <= int(enc.num_layers):
        raise click.ClickException(
            f"--layer {layer} is out of range for {enc.model_id}: 0 (embeddings) to "
            f"{enc.num_layers} (output of the last block)"
        )
    return enc


def _cache_from_data(
    data: Path,
    model_dir: Path,
    layer: int,
    cache: Path,
    *,
    reference: Path | None,
    shard_size: int,
    embed_batch_size: int,
    include_cls: bool,
    progress: bool,
    check: Callable[[Any], None] | None = None,
) -> Any:
    """Encode `data` into `cache` (or reuse it) and return the cache's store."""
    from hsg.sae.activations import (
        ShardCacheStore,
        cache_activations,
        fingerprint_records,
        reusable_cache,
    )

    try:
        from hsg.regions.readers import read_records
    except ModuleNotFoundError as exc:
        raise click.ClickException(f"the region reader is not available: {exc}") from exc
    if not data.is_file():
        raise click.ClickException(f"data file not found: {data}")
    enc = _load_encoder(model_dir, layer)
    if check is not None:
        check(enc)

    def records() -> Iterator[Any]:
        return iter(read_records(data, reference=reference))

    fingerprint, n = fingerprint_records(records())
    found = reusable_cache(
        cache,
        data_fingerprint=fingerprint,
        model_id=enc.model_id,
        checkpoint_hash=enc.checkpoint_hash,
        layer=layer,
        include_cls=include_cls,
    )
    if found is not None:
        _echo_err(f"reusing activation cache {cache} ({found.n_tokens} tokens, {n} sequences)")
    else:
        _echo_err(f"caching layer {layer} of {enc.model_id} for {n} sequences into {cache}")
        cache_activations(
            records(),
            enc,
            layer,
            cache,
            shard_size=shard_size,
            batch_size=embed_batch_size,
            include_cls=include_cls,
            progress=progress,
            total=n,
        )
    return ShardCacheStore(cache)


def _resolve_store(
    activations: Path | None,
    data: Path | None,
    model_dir: Path | None,
    layer: int | None,
    cache: Path | None,
    *,
    reference: Path | None,
    shard_size: int,
    embed_batch_size: int,
    include_cls: bool,
    progress: bool,
    check: Callable[[Any], None] | None = None,
) -> Any:
    from hsg.sae.activations import open_activations

    if (activations is None) == (data is None):
        raise click.UsageError("give exactly one of --activations FILE or --data FILE")
    if activations is not None:
        return open_activations(activations, shard_size=shard_size)
    if model_dir is None or layer is None or cache is None:
        raise click.UsageError("--data needs --model, --layer and --cache")
    assert data is not None
    return _cache_from_data(
        data,
        model_dir,
        layer,
        cache,
        reference=reference,
        shard_size=shard_size,
        embed_batch_size=embed_batch_size,
        include_cls=include_cls,
        progress=progress,
        check=check,
    )


@click.group()
def sae() -> None:
    """Train and evaluate sparse autoencoders on one layer of an encoder.

    Typical use: `hsg sae train --data loci.tsv --model MODEL --layer 6 --cache CACHE --out
    SAE`, then `hsg sae eval --sae SAE --activations CACHE`. An SAE directory holds cfg.json
    (config, provenance and the sha256 of the weights) and sae.safetensors.
    """


@sae.command()
@_data_options
def cache(
    activations, data, reference, model_dir, layer, cache, shard_size, embed_batch_size, include_cls
) -> None:
    """Encode --data with --model at --layer into the activation cache --cache."""
    if activations is not None:
        raise click.UsageError("`cache` reads --data; --activations is already cached")
    with _user_errors():
        store = _resolve_store(
            None,
            data,
            model_dir,
            layer,
            cache,
            reference=reference,
            shard_size=shard_size,
            embed_batch_size=embed_batch_size,
            include_cls=include_cls,
            progress=True,
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


# Options whose saved value is used on --resume unless given again on the command line.
_TRAIN_KEYS = {
    "arch": ("sae", "architecture"),
    "d_sae": ("sae", "d_sae"),
    "k": ("sae", "k"),
    "l1": ("sae", "l1_coefficient"),
    "l1_warmup": ("sae", "l1_warmup_steps"),
    "lr": ("sae", "lr"),
    "seed": ("sae", "seed"),
    "dtype": ("sae", "dtype"),
    "batch_size": ("train", "batch_size"),
    "epochs": ("train", "epochs"),
    "patience": ("train", "patience"),
    "val_fraction": ("train", "val_fraction"),
    "shuffle_buffer": ("train", "shuffle_buffer_shards"),
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
    from hsg.sae.config import SAEConfig, TrainConfig
    from hsg.sae.train import read_run, train_sae

    with _user_errors():
        saved = read_run(out) if resume else None
        if resume and saved is None:
            raise click.ClickException(f"nothing to resume in {out} (no train_state/run.json)")
        if saved is not None:
            source = click.core.ParameterSource
            for name, (section, key) in _TRAIN_KEYS.items():
                given = ctx.get_parameter_source(name) in (source.COMMANDLINE, source.ENVIRONMENT)
                if not given and key in saved[section]:
                    value = saved[section][key]
                    hparams[name] = value
        store = _resolve_store(
            activations,
            data,
            model_dir,
            layer,
            cache,
            reference=reference,
            shard_size=shard_size,
            embed_batch_size=embed_batch_size,
            include_cls=include_cls,
            progress=not quiet,
        )
        arch = hparams["arch"]
        d_sae = hparams["d_sae"] or 8 * store.d_in
        cfg = SAEConfig(
            d_in=store.d_in,
            d_sae=d_sae,
            architecture=arch,
            k=hparams["k"] if arch == "topk" else None,
            l1_coefficient=hparams["l1"],
            l1_warmup_steps=hparams["l1_warmup"],
            lr=hparams["lr"],
            seed=hparams["seed"],
            dtype=hparams["dtype"],
        )
        tcfg = TrainConfig(
            batch_size=hparams["batch_size"],
            epochs=hparams["epochs"],
            patience=hparams["patience"],
            val_fraction=hparams["val_fraction"],
            shuffle_buffer_shards=hparams["shuffle_buffer"],
            device=device,
        )
        _echo_err(
            f"training {arch} SAE d_in={cfg.d_in} d_sae={cfg.d_sae} on {store.n_tokens} tokens "
            f"of {store.n_sequences} sequences from {store.source} ({tcfg.device})"
        )
        result = train_sae(store, cfg, tcfg, out, resume=resume, progress=not quiet, log=click.echo)
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
) -> None:
    """Report MSE, fraction of variance explained, L0, L1 and dead latents as JSON."""
    from hsg.sae.model import SparseAutoencoder
    from hsg.sae.train import evaluate, read_run

    with _user_errors():
        model = SparseAutoencoder.load(sae_dir, device=device)
        if layer is None:
            layer = model.cfg.layer
        if data is not None and layer is None:
            raise click.UsageError("--layer is needed: the SAE's cfg.json records none")

        def check(enc: Any) -> None:
            model.check_input(int(enc.hidden_size), f"layer {layer} of {enc.model_id}")
            if model.cfg.model_id and enc.model_id != model.cfg.model_id:
                _echo_err(
                    f"warning: SAE trained on {model.cfg.model_id}, encoding with {enc.model_id}"
                )
            if model.cfg.layer is not None and layer != model.cfg.layer:
                _echo_err(f"warning: SAE trained on layer {model.cfg.layer}, reading {layer}")

        with tempfile.TemporaryDirectory(prefix="hsg-sae-eval-") as tmp:
            store = _resolve_store(
                activations,
                data,
                model_dir,
                layer,
                cache or (Path(tmp) if data else None),
                reference=reference,
                shard_size=shard_size,
                embed_batch_size=embed_batch_size,
                include_cls=include_cls,
                progress=False,
                check=check,
            )
            model.check_input(store.d_in, f"activations in {store.source}")
            keep = None
            if split != "all":
                if val_fraction is None:
                    run = read_run(sae_dir)
                    val_fraction = run["train"]["val_fraction"] if run else 0.1
                is_val = store.validation_mask(val_fraction, model.cfg.seed)
                keep = is_val if split == "val" else ~is_val
            metrics = evaluate(model, store, keep, batch_size=batch_size)
            source = store.source
    click.echo(
        json.dumps(
            {
                "sae": str(sae_dir),
                "sae_id": model.sae_id,
                "activations": source,
                "split": split,
                **metrics,
            },
            indent=2,
        )
    )


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
