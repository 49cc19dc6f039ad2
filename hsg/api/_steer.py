"""The classifier head, steering through the SAE decoder, and dependency maps."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsg.api._load import PathLike, load_encoder, load_sae, read_regions
from hsg.fileio import ensure_writable

if TYPE_CHECKING:
    from hsg.models.encoder import Encoder
    from hsg.regions.records import SequenceRecord
    from hsg.sae.model import SparseAutoencoder
    from hsg.steer.classifier import TrainResult as ClassifierTrainResult

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _records(data: PathLike, reference: PathLike | None) -> list[SequenceRecord]:
    from hsg.regions.records import InputError

    records = read_regions(data, reference=reference)
    if not records:
        raise InputError(f"{data}: file contains no sequences")
    return records


def _labels(records: list[SequenceRecord], positive: str, data: PathLike) -> list[bool]:
    from hsg.steer.classifier import ClassifierError

    labels = [positive in r.labels for r in records]
    if not any(labels):
        seen = sorted({lab for r in records for lab in r.labels})
        raise ClassifierError(
            f"{data}: no sequence has the label {positive!r} (labels present: "
            f"{', '.join(seen) or 'none'})"
        )
    if all(labels):
        raise ClassifierError(f"{data}: every sequence has the label {positive!r}; no negatives")
    return labels


@dataclass
class ClassifierRun:
    """A trained classifier head, its split and where it was saved."""

    result: ClassifierTrainResult
    split: dict[str, list[str]]
    out: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.result.metrics


def train_classifier(
    data: PathLike,
    model: PathLike | Encoder,
    *,
    positive: str,
    out: PathLike,
    reference: PathLike | None = None,
    layer: int | None = None,
    sae: PathLike | SparseAutoencoder | None = None,
    on: str | None = None,
    split_seed: int = 0,
    seed: int = 0,
    epochs: int = 50,
    patience: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    kernel_size: int = 0,
    channels: int = 0,
    dropout: float = 0.3,
    embed_batch_size: int = 32,
    device: str | None = None,
    force: bool = False,
    allow_model_mismatch: bool = False,
    log: Log = _quiet,
) -> ClassifierRun:
    """Train the masked CNN head on hidden states (``on="hidden"``) or SAE latents of
    ``layer``; ``positive`` is the label of the positive class. The id-hash split is
    stratified 64/16/20 and saved with the weights, so steering later runs on held-out
    sequences only."""
    from hsg.models.encoder import check_device
    from hsg.steer.classifier import (
        ClassifierConfig,
        ClassifierError,
        TrainConfig,
        save_run,
        split_sha256,
        stratified_split,
    )
    from hsg.steer.classifier import train_classifier as _train
    from hsg.steer.features import encode_features

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise ClassifierError(f"{out} is not empty (use --force to write into it)")
    ensure_writable(out, directory=True)
    device = check_device(device)
    kind = on or ("latents" if sae is not None else "hidden")
    if kind == "latents" and sae is None:
        raise ClassifierError("--on latents needs --sae")
    sae_obj = load_sae(sae, device) if sae is not None else None
    if sae_obj is not None and layer is None:
        layer = sae_obj.cfg.layer
    if layer is None:
        raise ClassifierError("--layer is required without an SAE")
    tcfg = TrainConfig(
        epochs=epochs,
        patience=patience,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
    )
    records = _records(data, reference)
    labels = _labels(records, positive, data)
    ids = [r.id for r in records]
    split = stratified_split(ids, labels, seed=split_seed)
    encoder = load_encoder(model, device=device)
    if sae_obj is not None:
        from hsg.sae.compat import check_compatible

        layer = check_compatible(
            encoder, sae_obj, layer, allow_model_mismatch=allow_model_mismatch
        ).layer
    t0 = time.perf_counter()
    feats = encode_features(
        encoder,
        [r.sequence for r in records],
        ids,
        layer,
        kind,
        sae_obj if kind == "latents" else None,
        embed_batch_size,
    )
    log(
        f"encoded {len(feats)} sequences ({kind}, layer {layer}) in {time.perf_counter() - t0:.1f}s"
    )
    cfg = ClassifierConfig(
        d_in=feats.width,
        input_kind=kind,
        layer=encoder.model.check_layer(layer),
        positive_label=positive,
        channels=channels,
        kernel_size=kernel_size,
        dropout=dropout,
        model_id=encoder.model_id,
        model_checkpoint_hash=encoder.checkpoint_hash,
        sae_id=sae_obj.sae_id if kind == "latents" and sae_obj is not None else None,
        split_seed=split_seed,
        split_sha256=split_sha256(split),
    )
    result = _train(feats, labels, split, cfg, tcfg, log=log, device=device)
    extra = {
        "data": str(data),
        "n_sequences": len(records),
        "n_positive": sum(labels),
        "split_sizes": {k: len(v) for k, v in split.items()},
    }
    save_run(out, result, split, tcfg, extra)
    return ClassifierRun(result=result, split=split, out=out, extra=extra)


def evaluate_classifier(
    classifier: PathLike,
    data: PathLike,
    model: PathLike | Encoder,
    *,
    reference: PathLike | None = None,
    sae: PathLike | SparseAutoencoder | None = None,
    split: str = "test",
    embed_batch_size: int = 32,
    device: str | None = None,
) -> dict[str, Any]:
    """Accuracy, F1 and AUROC of a saved classifier on ``data`` (its ``split``, or ``all``)."""
    from hsg.models.encoder import check_device
    from hsg.steer.classifier import ClassifierError, ConvClassifier, predict, read_split
    from hsg.steer.features import encode_features
    from hsg.steer.metrics import binary_metrics
    from hsg.steer.run import check_provenance

    device = check_device(device)
    clf = ConvClassifier.load(classifier)
    cfg = clf.cfg
    encoder = load_encoder(model, device=device)
    sae_obj = load_sae(sae, device) if sae is not None else None
    if cfg.input_kind == "latents" and sae_obj is None:
        raise ClassifierError(f"{classifier} reads SAE latents ({cfg.sae_id}): pass --sae")
    check_provenance(encoder, sae_obj if cfg.input_kind == "latents" else None, clf)
    records = _records(data, reference)
    if split != "all":
        keep = set(read_split(classifier)[split])
        records = [r for r in records if r.id in keep]
        if not records:
            raise ClassifierError(
                f"no sequence of {data} is in the {split} split of {classifier} (ids differ?); "
                "use --split all to score every sequence"
            )
    labels = [cfg.positive_label in r.labels for r in records]
    feats = encode_features(
        encoder,
        [r.sequence for r in records],
        [r.id for r in records],
        cfg.layer,
        cfg.input_kind,
        sae_obj,
        embed_batch_size,
    )
    probs = predict(clf, feats, list(range(len(feats))))
    return {
        "classifier": str(classifier),
        "data": str(data),
        "split": split,
        **binary_metrics(labels, probs),
    }


@dataclass
class SteerReport:
    """What `steer` measured: one row per condition, a summary per target, and the files."""

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    provenance: dict[str, Any]
    parameters: dict[str, Any]
    out: Path
    warnings: list[str] = field(default_factory=list)

    @property
    def report(self) -> Path:
        return self.out / "report.md"


def steer(
    targets: PathLike,
    classifier: PathLike,
    sae: PathLike | SparseAutoencoder,
    model: PathLike | Encoder,
    data: PathLike,
    *,
    out: PathLike,
    reference: PathLike | None = None,
    min_acts: Sequence[float] = (0.0, 5.0),
    alphas: Sequence[float] = (0.5, 1.0, 2.0),
    ablate: bool = True,
    positions: str | int = "all",
    add_error: bool = True,
    max_targets: int | None = None,
    batch_size: int = 32,
    max_rows: int = 512,
    plots: bool = True,
    device: str | None = None,
    allow_model_mismatch: bool = False,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> SteerReport:
    """Intervene on the targets' SAE latents (clamp with floor δ and gain α, and ablate)
    on the classifier's held-out test sequences, decoding with the bias and the
    reconstruction error so that only the edit changes the hidden state; writes
    report.md, metrics.json and plots into ``out``."""
    from hsg import __version__
    from hsg.models.encoder import check_device
    from hsg.steer.classifier import ConvClassifier, read_split
    from hsg.steer.report import write_steer_report
    from hsg.steer.run import (
        Steerer,
        SteerError,
        build_conditions,
        check_provenance,
        condition_metrics,
        read_targets,
        run_grid,
        target_summary,
    )

    device = check_device(device)
    out = ensure_writable(out, directory=True)
    sae_obj = load_sae(sae, device)
    doc, target_list = read_targets(targets, sae_obj)
    if max_targets is not None:
        target_list = target_list[:max_targets]
    conditions = build_conditions(target_list, tuple(min_acts), tuple(alphas), ablate)
    clf = ConvClassifier.load(classifier).to(device)
    encoder = load_encoder(model, device=device)
    check_provenance(encoder, sae_obj, clf, allow_model_mismatch=allow_model_mismatch)
    steerer = Steerer(encoder, sae_obj, clf, positions, add_error, max_rows)
    test_ids = set(read_split(classifier)["test"])
    records = [r for r in _records(data, reference) if r.id in test_ids]
    if not records:
        raise SteerError(
            f"no sequence of {data} is in the test split of {classifier}: steering runs on "
            "sequences held out from classifier training"
        )
    warnings = []
    if len(records) < len(test_ids):
        warnings.append(f"{len(test_ids) - len(records)} test-split ids are not in {data}")
    labels = [clf.cfg.positive_label in r.labels for r in records]
    t0 = time.perf_counter()
    result = run_grid(
        steerer,
        [r.sequence for r in records],
        [r.id for r in records],
        labels,
        conditions,
        batch_size,
        progress=(lambda n: progress("steering", n, len(records))) if progress else None,
    )
    elapsed = time.perf_counter() - t0
    rows = condition_metrics(result)
    summary = target_summary(rows, target_list)
    provenance = {
        "hsg_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model_id": encoder.model_id,
        "model_checkpoint_hash": encoder.checkpoint_hash,
        "sae_id": sae_obj.sae_id,
        "sae_layer": sae_obj.cfg.layer,
        "classifier": str(classifier),
        "classifier_input": f"{clf.cfg.input_kind}, layer {clf.cfg.layer}",
        "classifier_weights_sha256": clf.cfg.weights_sha256,
        "positive_label": clf.cfg.positive_label,
        "targets_file": str(targets),
        "targets_parameters": doc.get("parameters"),
        "data": str(data),
    }
    parameters = {
        "min_act": list(min_acts),
        "alpha": list(alphas),
        "ablate": ablate,
        "positions": positions,
        "add_error": add_error,
        "n_targets": len(target_list),
        "n_conditions": len(conditions),
        "batch_size": batch_size,
        "max_rows": max_rows,
        "seconds": round(elapsed, 3),
        "rows_per_second": round(len(records) * (len(conditions) + 1) / max(elapsed, 1e-9), 1),
    }
    write_steer_report(out, result, rows, summary, target_list, provenance, parameters, plots)
    return SteerReport(rows, summary, provenance, parameters, out, warnings)


def depmap(
    model: PathLike | Encoder,
    sae: PathLike | SparseAutoencoder,
    feature: int,
    *,
    out: PathLike,
    sequence: str | None = None,
    data: PathLike | None = None,
    seq_id: str | None = None,
    reference: PathLike | None = None,
    layer: int | None = None,
    batch_size: int = 256,
    plots: bool = True,
    device: str | None = None,
    allow_model_mismatch: bool = False,
) -> dict[str, Any]:
    """In-silico mutagenesis of one sequence read through one SAE feature: every single-base
    substitution's effect on the feature, written as TSV (and PNG) into ``out``."""
    from hsg.models.encoder import check_device
    from hsg.regions.records import InputError
    from hsg.sae.compat import check_compatible
    from hsg.steer.depmap import dependency_map
    from hsg.steer.report import write_depmap

    if (sequence is None) == (data is None):
        raise ValueError("give either a sequence or data with an id")
    if data is not None and not seq_id:
        raise ValueError("data needs the id of the sequence")
    name = "sequence"
    if data is not None:
        found = [r for r in _records(data, reference) if r.id == seq_id]
        if not found:
            raise InputError(f"{data}: no sequence with id {seq_id!r}")
        sequence, name = found[0].sequence, found[0].id
    assert sequence is not None
    ensure_writable(out, directory=True)
    device = check_device(device)
    sae_obj = load_sae(sae, device)
    encoder = load_encoder(model, device=device)
    check_compatible(encoder, sae_obj, layer, allow_model_mismatch=allow_model_mismatch)
    t0 = time.perf_counter()
    dm = dependency_map(encoder, sae_obj, feature, sequence, name, layer, batch_size)
    elapsed = time.perf_counter() - t0
    provenance = {
        "model_id": encoder.model_id,
        "model_checkpoint_hash": encoder.checkpoint_hash,
        "sae_id": sae_obj.sae_id,
        "seconds": round(elapsed, 3),
    }
    return write_depmap(Path(out), dm, provenance, plots)
