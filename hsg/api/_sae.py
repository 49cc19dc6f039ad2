"""Activation caches, SAE training and evaluation."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsg.api._load import PathLike, iter_regions, load_encoder, load_sae

if TYPE_CHECKING:
    from hsg.models.encoder import Encoder
    from hsg.sae.activations import ActivationStore
    from hsg.sae.model import SparseAutoencoder
    from hsg.sae.train import TrainResult

Log = Callable[[str], None]


class DefaultRule:
    """A default that follows from the data: `text` for `--help`, `value(**ctx)` to apply.

    `ctx` holds `d_in` (the activations' width), `d_sae` (resolved first) and
    `steps_per_epoch` (training tokens / batch size, rounded up).
    """

    def __init__(self, text: str, value: Callable[..., Any]) -> None:
        self.text, self.value = text, value

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"DefaultRule({self.text!r})"


# What `train_sae` (and `hsg sae train`, whose --help shows these) uses for a hyper-parameter
# left as None and not taken from a resumed run. Why each value: docs/sae.md, "Defaults".
TRAIN_DEFAULTS: dict[str, Any] = {
    "architecture": "relu",
    "d_sae": DefaultRule("8 x d_in", lambda d_in, **_: 8 * d_in),
    "k": 32,
    # λ: a latent is used only where it explains more than ~4 % of a token's norm (its
    # shrinkage λ·d_in/2 over the normalised token norm sqrt(d_in) is 0.04)
    "l1": DefaultRule("0.08 / sqrt(d_in)", lambda d_in, **_: 0.08 / math.sqrt(d_in)),
    # λ₀: a latent is used only where it removes more than ~1 % of a token's squared norm
    "l0": 1e-2,
    "l1_warmup": DefaultRule(
        "one epoch, at most 1000 steps", lambda steps_per_epoch, **_: min(1000, steps_per_epoch)
    ),
    # Gao et al. 2024: the best learning rate falls as 1/sqrt(latents)
    "lr": DefaultRule(
        "2e-3 x sqrt(1024 / d_sae)", lambda d_sae, **_: 2e-3 * math.sqrt(1024 / d_sae)
    ),
    "auxk": 1 / 32,
    "normalize": True,
    "seed": 0,
    "dtype": "float32",
    "batch_size": 1024,
    "epochs": 100,
    "patience": 3,
    "min_rel_delta": 1e-3,
    "val_fraction": 0.1,
    "shuffle_buffer": 4,
    "amp": False,
}
# where each hyper-parameter is kept in a run's train_state/run.json
_SAVED_AS = {
    "architecture": ("sae", "architecture"),
    "d_sae": ("sae", "d_sae"),
    "k": ("sae", "k"),
    "l1": ("sae", "l1_coefficient"),
    "l0": ("sae", "l0_coefficient"),
    "l1_warmup": ("sae", "l1_warmup_steps"),
    "lr": ("sae", "lr"),
    "auxk": ("sae", "auxk_coefficient"),
    "seed": ("sae", "seed"),
    "dtype": ("sae", "dtype"),
    "normalize": ("train", "normalize"),
    "batch_size": ("train", "batch_size"),
    "epochs": ("train", "epochs"),
    "patience": ("train", "patience"),
    "min_rel_delta": ("train", "min_rel_delta"),
    "val_fraction": ("train", "val_fraction"),
    "shuffle_buffer": ("train", "shuffle_buffer_shards"),
    "amp": ("train", "amp"),
}


def _quiet(_: str) -> None:
    pass


def cache_activations(
    data: PathLike,
    model: PathLike | Encoder,
    layer: int,
    cache: PathLike,
    *,
    reference: PathLike | None = None,
    fmt: str | None = None,
    shard_size: int = 16384,
    batch_size: int = 32,
    include_cls: bool = False,
    device: str | None = None,
    sae: SparseAutoencoder | None = None,
    allow_model_mismatch: bool = False,
    progress: bool = False,
    log: Log = _quiet,
) -> ActivationStore:
    """Encode the regions of ``data`` at ``layer`` into the shard cache ``cache``, once.

    A cache that already holds exactly these activations (same input fingerprint, encoder
    checkpoint hash, layer, <cls> choice) is reused, also after the model directory was
    renamed or moved (its name is only a label). With ``sae``, the encoder is checked
    against it first (`check_compatible`).
    """
    from hsg.sae.activations import (
        ShardCacheStore,
        fingerprint_records,
        reusable_cache,
    )
    from hsg.sae.activations import cache_activations as _cache

    data = Path(data)
    if not data.is_file():
        raise FileNotFoundError(f"data file not found: {data}")
    encoder = load_encoder(model, device=device)
    if sae is not None:
        from hsg.sae.compat import check_compatible

        check_compatible(encoder, sae, layer, allow_model_mismatch=allow_model_mismatch)
    elif not 0 <= layer <= encoder.num_layers:
        raise ValueError(
            f"layer {layer} is out of range for {encoder.model_id}: 0 (embeddings) to "
            f"{encoder.num_layers} (output of the last block)"
        )

    def records():
        return iter_regions(data, fmt=fmt, reference=reference)

    fingerprint, n = fingerprint_records(records())
    found = reusable_cache(
        cache,
        data_fingerprint=fingerprint,
        model_id=encoder.model_id,
        checkpoint_hash=encoder.checkpoint_hash,
        layer=layer,
        include_cls=include_cls,
    )
    if found is not None:
        log(f"reusing activation cache {cache} ({found.n_tokens} tokens, {n} sequences)")
    else:
        log(f"caching layer {layer} of {encoder.model_id} for {n} sequences into {cache}")
        _cache(
            records(),
            encoder,
            layer,
            cache,
            shard_size=shard_size,
            batch_size=batch_size,
            include_cls=include_cls,
            progress=progress,
            total=n,
        )
    return ShardCacheStore(cache)


def open_activation_source(
    *,
    activations: PathLike | None = None,
    data: PathLike | None = None,
    model: PathLike | Encoder | None = None,
    layer: int | None = None,
    cache: PathLike | None = None,
    shard_size: int = 16384,
    **cache_options: Any,
) -> ActivationStore:
    """Activations from a file (``activations``) or encoded from regions (``data`` with
    ``model``, ``layer`` and ``cache``): exactly one of the two."""
    from hsg.sae.activations import open_activations

    if (activations is None) == (data is None):
        raise ValueError("give exactly one of activations (a file) or data (regions to encode)")
    if activations is not None:
        return open_activations(activations, shard_size=shard_size)
    if model is None or layer is None or cache is None:
        raise ValueError("encoding data needs model, layer and cache")
    return cache_activations(data, model, layer, cache, shard_size=shard_size, **cache_options)


def train_sae(
    out: PathLike,
    *,
    activations: PathLike | None = None,
    data: PathLike | None = None,
    model: PathLike | Encoder | None = None,
    layer: int | None = None,
    cache: PathLike | None = None,
    reference: PathLike | None = None,
    shard_size: int = 16384,
    embed_batch_size: int = 32,
    include_cls: bool = False,
    device: str | None = None,
    resume: bool = False,
    progress: bool = False,
    log: Log = _quiet,
    **hparams: Any,
) -> TrainResult:
    """Train an SAE on activations (a file, or regions encoded once into ``cache``).

    Hyper-parameters (see `TRAIN_DEFAULTS`): ``architecture``, ``d_sae``, ``k``, ``l1``,
    ``l0``, ``l1_warmup``, ``lr``, ``auxk``, ``normalize``, ``seed``, ``dtype``,
    ``batch_size``, ``epochs``, ``patience``, ``min_rel_delta``, ``val_fraction``,
    ``shuffle_buffer``, ``amp`` (bf16 autocast). One left as None takes the resumed run's
    value (``resume=True``; a setting the run predates takes the value that reproduces it),
    else the default (a `DefaultRule` is applied to the data: d_in, d_sae, steps per
    epoch). The best
    checkpoint by validation loss is kept in ``out`` with its config, hashes,
    metrics.jsonl and a resumable state.
    """
    from hsg.models.encoder import check_device
    from hsg.sae.architectures import get_architecture
    from hsg.sae.config import SAEConfig, TrainConfig
    from hsg.sae.train import LEGACY_VALUES, TrainError, read_run
    from hsg.sae.train import train_sae as _train

    unknown = sorted(set(hparams) - set(TRAIN_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown hyper-parameter(s): {', '.join(unknown)}")
    device = check_device(device)
    saved = read_run(out) if resume else None
    if resume and saved is None:
        raise TrainError(f"nothing to resume in {out} (no train_state/run.json)")
    h: dict[str, Any] = {}
    for name in TRAIN_DEFAULTS:
        value = hparams.get(name)
        if value is None and saved is not None:
            section, key = _SAVED_AS[name]
            if key in saved[section]:
                value = saved[section][key]
            else:
                value = LEGACY_VALUES.get(section, {}).get(key)
        h[name] = value
    store = open_activation_source(
        activations=activations,
        data=data,
        model=model,
        layer=layer,
        cache=cache,
        shard_size=shard_size,
        reference=reference,
        batch_size=embed_batch_size,
        include_cls=include_cls,
        device=device,
        progress=progress,
        log=log,
    )
    # constants first, then the rules in order (d_sae before lr, batch size before warm-up)
    for name, default in TRAIN_DEFAULTS.items():
        if h[name] is None and not isinstance(default, DefaultRule):
            h[name] = default
    if h["d_sae"] is None:
        h["d_sae"] = TRAIN_DEFAULTS["d_sae"].value(d_in=store.d_in)
    ctx = {
        "d_in": store.d_in,
        "d_sae": h["d_sae"],
        "steps_per_epoch": max(
            1, math.ceil(store.n_tokens * (1 - h["val_fraction"]) / h["batch_size"])
        ),
    }
    for name, default in TRAIN_DEFAULTS.items():
        if h[name] is None:
            h[name] = default.value(**ctx)
    arch = h["architecture"]
    cfg = SAEConfig(
        d_in=store.d_in,
        d_sae=h["d_sae"],
        architecture=arch,
        k=h["k"] if get_architecture(arch).uses_k else None,
        l1_coefficient=h["l1"],
        l0_coefficient=h["l0"],
        l1_warmup_steps=h["l1_warmup"],
        auxk_coefficient=h["auxk"],
        lr=h["lr"],
        seed=h["seed"],
        dtype=h["dtype"],
    )
    tcfg = TrainConfig(
        batch_size=h["batch_size"],
        epochs=h["epochs"],
        patience=h["patience"],
        min_rel_delta=h["min_rel_delta"],
        normalize=h["normalize"],
        val_fraction=h["val_fraction"],
        shuffle_buffer_shards=h["shuffle_buffer"],
        device=device,
        amp=bool(h["amp"]),
    )
    log(
        f"training {arch} SAE d_in={cfg.d_in} d_sae={cfg.d_sae} lr={cfg.lr:.3g} "
        f"batch={tcfg.batch_size} on {store.n_tokens} tokens "
        f"of {store.n_sequences} sequences from {store.source} ({tcfg.device})"
    )
    return _train(store, cfg, tcfg, out, resume=resume, progress=progress, log=log)


def evaluate_sae(
    sae: PathLike | SparseAutoencoder,
    *,
    activations: PathLike | None = None,
    data: PathLike | None = None,
    model: PathLike | Encoder | None = None,
    layer: int | None = None,
    cache: PathLike | None = None,
    reference: PathLike | None = None,
    shard_size: int = 16384,
    embed_batch_size: int = 32,
    include_cls: bool = False,
    split: str = "all",
    val_fraction: float | None = None,
    batch_size: int = 4096,
    device: str | None = None,
    allow_model_mismatch: bool = False,
    downstream: bool | None = None,
    downstream_sequences: int = 256,
    mask_rate: float = 0.15,
    log: Log = _quiet,
) -> dict[str, Any]:
    """MSE, fraction of variance explained, L0, L1, dead and dense latents of ``sae``, and
    the downstream loss recovered when the reconstruction is spliced into the encoder.

    ``split`` is ``all``, ``train`` or ``val``: the SAE's own validation split (by sequence
    id hash, with the run's ``val_fraction`` unless given). Encoding ``data`` checks the
    encoder against the SAE (`check_compatible`); without ``cache`` a temporary one is used.
    ``downstream`` (default: whenever ``data`` and ``model`` are given) runs the rest of
    the encoder on the SAE's reconstruction for the first ``downstream_sequences`` of the
    split, with ``mask_rate`` of the tokens masked (`hsg.sae.eval_downstream`): masked-LM
    cross-entropy with the checkpoint's head, else the final hidden states.
    """
    from hsg.sae.train import evaluate, read_run

    if split not in ("all", "train", "val"):
        raise ValueError(f"split must be all, train or val, got {split!r}")
    model_sae = load_sae(sae, device)
    if data is not None and layer is None:
        layer = model_sae.cfg.layer
        if layer is None:
            raise ValueError("a layer is needed: the SAE's cfg.json records none")
    with tempfile.TemporaryDirectory(prefix="hsg-sae-eval-") as tmp:
        # the encoding options only matter for data; a file ignores them
        store = open_activation_source(
            activations=activations,
            data=data,
            model=model,
            layer=layer,
            cache=cache or (Path(tmp) if data is not None else None),
            shard_size=shard_size,
            reference=reference,
            batch_size=embed_batch_size,
            include_cls=include_cls,
            device=str(model_sae.device),
            sae=model_sae,
            allow_model_mismatch=allow_model_mismatch,
            log=log,
        )
        model_sae.check_input(store.d_in, f"activations in {store.source}")
        keep = None
        if split != "all":
            if val_fraction is None:
                run = read_run(sae) if isinstance(sae, (str, Path)) else None
                val_fraction = run["train"]["val_fraction"] if run else 0.1
            is_val = store.validation_mask(val_fraction, model_sae.cfg.seed)
            keep = is_val if split == "val" else ~is_val
        metrics = evaluate(model_sae, store, keep, batch_size=batch_size)
        result = {
            "sae": str(sae) if isinstance(sae, (str, Path)) else str(model_sae.source),
            "sae_id": model_sae.sae_id,
            "activations": store.source,
            "split": split,
            **metrics,
        }
    if downstream is None:
        downstream = data is not None and model is not None
    if downstream:
        if data is None or model is None:
            raise ValueError("the downstream loss needs data and model (not cached activations)")
        result.update(
            _downstream(
                model_sae,
                data,
                model,
                layer,
                split,
                val_fraction,
                reference=reference,
                n=downstream_sequences,
                mask_rate=mask_rate,
                log=log,
                allow_model_mismatch=allow_model_mismatch,
            )  # fmt: skip
        )
    return result


def _downstream(
    sae: SparseAutoencoder,
    data: PathLike,
    model: PathLike | Encoder,
    layer: int | None,
    split: str,
    val_fraction: float | None,
    *,
    reference: PathLike | None,
    n: int,
    mask_rate: float,
    log: Log,
    allow_model_mismatch: bool,
) -> dict[str, Any]:
    """`loss_recovered` on the first ``n`` sequences of ``split`` in ``data``."""
    import itertools

    from hsg.sae.activations import split_ids
    from hsg.sae.compat import check_compatible
    from hsg.sae.eval_downstream import loss_recovered

    encoder = load_encoder(model, device=str(sae.device))
    use = check_compatible(encoder, sae, layer, allow_model_mismatch=allow_model_mismatch).layer
    fraction = 0.1 if val_fraction is None else val_fraction

    def sequences():
        for rec in iter_regions(data, reference=reference):
            if split != "all":
                is_val = bool(split_ids([rec.id], fraction, sae.cfg.seed)[0])
                if is_val != (split == "val"):
                    continue
            yield rec.sequence

    log(f"downstream loss: splicing the reconstruction into layer {use} of {encoder.model_id}")
    return loss_recovered(encoder, sae, use, itertools.islice(sequences(), n), mask_rate=mask_rate)


def import_sae(
    source: PathLike,
    out: PathLike,
    *,
    fmt: str,
    model: PathLike | None = None,
    layer: int | None = None,
    log: Log = _quiet,
) -> dict[str, Any]:
    """Import a foreign SAE (``fmt`` "saelens" or "dictionary-learning") as an hsg SAE.

    ``model`` (a model directory: its checkpoint is hashed so `check_compatible` verifies
    it later; or a bare model id) and ``layer`` (hsg's convention) override what the
    source records and are required when it records none. Writes ``cfg.json`` +
    ``sae.safetensors`` and ``import.json`` (source, files' sha256, every rewrite of the
    weights) into ``out``, which must not already hold an SAE; returns that record.
    """
    from hsg.sae.interop import (
        IMPORT_FILE,
        check_out_dir,
        import_record,
        read_foreign,
        settle_provenance,
        to_sae,
        write_json,
    )
    from hsg.sae.model import CFG_FILE, WEIGHTS_FILE

    out = Path(out)
    check_out_dir(out, (CFG_FILE, WEIGHTS_FILE, IMPORT_FILE))
    foreign = read_foreign(fmt, source)
    foreign, ident, origin = settle_provenance(foreign, model, layer)
    if ident is not None and ident.checkpoint_hash is None:
        log(f"{ident.model_id!r} is not a model directory: no checkpoint hash recorded")
    sae = to_sae(foreign)
    sae.save(out)
    record = import_record(foreign, origin, sae)
    write_json(out / IMPORT_FILE, record)
    log(f"imported {fmt} SAE {source} as {sae.sae_id} into {out}")
    return record


def export_sae(sae: PathLike | SparseAutoencoder, out: PathLike, *, to: str = "saelens") -> dict:
    """Write ``sae`` in another library's format (``to``: "saelens"); returns its config.

    ``out`` must not already hold one. SAELens loads the result with `SAE.load_from_disk`.
    """
    from hsg.sae.interop import EXPORT_FORMATS, InteropError

    if to != "saelens":
        raise InteropError(f"unknown export format {to!r} (known: {', '.join(EXPORT_FORMATS)})")
    from hsg.sae.interop.saelens import write_saelens

    return write_saelens(load_sae(sae), Path(out))
