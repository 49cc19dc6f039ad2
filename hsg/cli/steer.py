"""`hsg classifier`, `hsg steer` and `hsg depmap`.

Every failure a user can cause (a targets file of another SAE, a classifier of the wrong
width, δ < 0 or α < 0, an empty data file, a missing label) becomes a `click.ClickException`:
one line, exit status 1, no traceback. Heavy imports happen inside the commands so that
`hsg --help` stays fast.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from hsg.cli.options import device_option, model_option, reference_option


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the package's own error types (all ValueError/FileNotFoundError) into one line."""
    try:
        yield
    except click.ClickException:
        raise
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc


def _load_encoder(model: str, device: str | None) -> Any:
    from hsg.models.encoder import load_encoder

    return load_encoder(model, device=device)


def _load_sae(path: Path, device: str | None) -> Any:
    from hsg.sae.model import SparseAutoencoder

    return SparseAutoencoder.load(path, device=device)


def _read(data: Path, reference: Path | None) -> list[Any]:
    from hsg.regions.readers import read_records

    records = list(read_records(data, reference=reference))
    if not records:  # pragma: no cover - read_records already raises for empty files
        raise click.ClickException(f"{data}: file contains no sequences")
    return records


def _labels(records: list[Any], positive: str, data: Path) -> list[bool]:
    labels = [positive in r.labels for r in records]
    if not any(labels):
        seen = sorted({lab for r in records for lab in r.labels})
        raise click.ClickException(
            f"{data}: no sequence has the label {positive!r} (labels present: "
            f"{', '.join(seen) or 'none'})"
        )
    if all(labels):
        raise click.ClickException(
            f"{data}: every sequence has the label {positive!r}; no negatives"
        )
    return labels


def _echo_json(doc: dict[str, Any]) -> None:
    from hsg.steer.metrics import jsonable

    click.echo(json.dumps(jsonable(doc), indent=2))


# ---------------------------------------------------------------------- classifier


@click.group()
def classifier() -> None:
    """Train and evaluate the CNN classifier head on hidden states or SAE latents."""


@classifier.command("train")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    help="Labelled regions (TSV with sequence and label, FASTA, or BED with --reference).",
)
@reference_option
@model_option()
@click.option(
    "--layer",
    type=int,
    help="Layer to read: 0 = embeddings, i = output of block i (default: the SAE's layer).",
)
@click.option(
    "--sae",
    "sae_dir",
    type=click.Path(path_type=Path),
    help="SAE directory (needed for --on latents).",
)
@click.option(
    "--on",
    "on",
    type=click.Choice(["hidden", "latents"]),
    help="Train on hidden states or SAE latents (default: latents with --sae, else hidden).",
)
@click.option(
    "--positive",
    required=True,
    help="Label name of the positive class, e.g. cisplatin_binding; every other sequence is negative.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option(
    "--split-seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the id-hash split (64/16/20).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of initialisation, batch order and dropout.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Epochs without a better validation loss before stopping.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--weight-decay", type=float, default=1e-4, show_default=True)
@click.option(
    "--kernel-size",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Odd convolution width; 0 = the rule from the input width (see hsg.steer.classifier).",
)
@click.option(
    "--channels",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Convolution channels; 0 = clamp(width // 4, 16, 128).",
)
@click.option("--dropout", type=float, default=0.3, show_default=True)
@click.option(
    "--embed-batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Sequences per encoder forward pass.",
)
@device_option
@click.option("--force", is_flag=True, help="Write into a non-empty --out.")
def train_cmd(
    data: Path,
    reference: Path | None,
    model: str,
    layer: int | None,
    sae_dir: Path | None,
    on: str | None,
    positive: str,
    out: Path,
    split_seed: int,
    seed: int,
    epochs: int,
    patience: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    kernel_size: int,
    channels: int,
    dropout: float,
    embed_batch_size: int,
    device: str | None,
    force: bool,
) -> None:
    """Train a classifier head; writes classifier.safetensors/.json, split.json, metrics.json."""
    with _user_errors():
        from hsg.steer.classifier import (
            ClassifierConfig,
            TrainConfig,
            save_run,
            split_sha256,
            stratified_split,
            train_classifier,
        )
        from hsg.steer.features import encode_features

        if out.exists() and any(out.iterdir()) and not force:
            raise click.ClickException(f"{out} is not empty (use --force to write into it)")
        kind = on or ("latents" if sae_dir is not None else "hidden")
        sae = None
        if kind == "latents" and sae_dir is None:
            raise click.ClickException("--on latents needs --sae")
        if sae_dir is not None:
            sae = _load_sae(sae_dir, device)
            if layer is None:
                layer = sae.cfg.layer
        if layer is None:
            raise click.ClickException("--layer is required without an SAE")
        tcfg = TrainConfig(
            epochs=epochs,
            patience=patience,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            seed=seed,
        )
        records = _read(data, reference)
        labels = _labels(records, positive, data)
        ids = [r.id for r in records]
        split = stratified_split(ids, labels, seed=split_seed)
        encoder = _load_encoder(model, device)
        t0 = time.perf_counter()
        feats = encode_features(
            encoder,
            [r.sequence for r in records],
            ids,
            layer,
            kind,
            sae if kind == "latents" else None,
            embed_batch_size,
        )
        click.echo(
            f"encoded {len(feats)} sequences ({kind}, layer {layer}) in "
            f"{time.perf_counter() - t0:.1f}s",
            err=True,
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
            sae_id=sae.sae_id if kind == "latents" and sae is not None else None,
            split_seed=split_seed,
            split_sha256=split_sha256(split),
        )
        result = train_classifier(
            feats,
            labels,
            split,
            cfg,
            tcfg,
            log=lambda m: click.echo(m, err=True),
            device=device,
        )
        extra = {
            "data": str(data),
            "n_sequences": len(records),
            "n_positive": sum(labels),
            "split_sizes": {k: len(v) for k, v in split.items()},
        }
        save_run(out, result, split, tcfg, extra)
        click.echo(f"wrote {out} (best epoch {result.best_epoch})", err=True)
        _echo_json({"test": result.metrics["test"], "val": result.metrics["val"]})


@classifier.command("eval")
@click.option(
    "--classifier",
    "clf_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory written by `hsg classifier train`.",
)
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Labelled regions.")
@reference_option
@model_option(help="Encoder directory: the one the classifier was trained on.")
@click.option(
    "--sae",
    "sae_dir",
    type=click.Path(path_type=Path),
    help="SAE directory (classifiers on latents).",
)
@click.option(
    "--split",
    "which",
    type=click.Choice(["test", "val", "train", "all"]),
    default="test",
    show_default=True,
    help="Score the sequences of this split of the classifier (or all of --data).",
)
@click.option("--out", type=click.Path(path_type=Path), help="Write the metrics JSON here.")
@click.option("--embed-batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@device_option
def eval_cmd(
    clf_dir: Path,
    data: Path,
    reference: Path | None,
    model: str,
    sae_dir: Path | None,
    which: str,
    out: Path | None,
    embed_batch_size: int,
    device: str | None,
) -> None:
    """Accuracy, F1 and AUROC of a trained classifier on --data."""
    with _user_errors():
        from hsg.steer.classifier import ConvClassifier, predict, read_split
        from hsg.steer.features import encode_features
        from hsg.steer.metrics import binary_metrics, jsonable
        from hsg.steer.run import check_provenance

        clf = ConvClassifier.load(clf_dir)
        cfg = clf.cfg
        encoder = _load_encoder(model, device)
        sae = _load_sae(sae_dir, device) if sae_dir is not None else None
        if cfg.input_kind == "latents" and sae is None:
            raise click.ClickException(f"{clf_dir} reads SAE latents ({cfg.sae_id}): pass --sae")
        check_provenance(encoder, sae if cfg.input_kind == "latents" else None, clf)
        records = _read(data, reference)
        if which != "all":
            keep = set(read_split(clf_dir)[which])
            records = [r for r in records if r.id in keep]
            if not records:
                raise click.ClickException(
                    f"no sequence of {data} is in the {which} split of {clf_dir} (ids differ?); "
                    "use --split all to score every sequence"
                )
        labels = [cfg.positive_label in r.labels for r in records]
        ids = [r.id for r in records]
        feats = encode_features(
            encoder,
            [r.sequence for r in records],
            ids,
            cfg.layer,
            cfg.input_kind,
            sae,
            embed_batch_size,
        )
        probs = predict(clf, feats, list(range(len(feats))))
        doc = {
            "classifier": str(clf_dir),
            "data": str(data),
            "split": which,
            **binary_metrics(labels, probs),
        }
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(jsonable(doc), indent=2) + "\n")
        _echo_json(doc)


# ---------------------------------------------------------------------- steer


def _positions(value: str) -> str | int:
    if value in ("all", "active"):
        return value
    try:
        i = int(value)
    except ValueError:
        raise click.BadParameter(f"expected all, active or a token index, got {value!r}") from None
    if i < 0:
        raise click.BadParameter(f"token index must be >= 0, got {i}")
    return i


@click.command()
@click.option(
    "--targets",
    "targets_path",
    type=click.Path(path_type=Path),
    required=True,
    help="targets.json written by `hsg targets`.",
)
@click.option(
    "--classifier",
    "clf_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory written by `hsg classifier train`.",
)
@click.option(
    "--sae",
    "sae_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="The SAE the targets index into.",
)
@model_option()
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    help="Labelled regions; only the classifier's held-out test split is used.",
)
@reference_option
@click.option(
    "--min-act",
    "min_acts",
    type=float,
    multiple=True,
    help="δ: floor of the target's activation (repeatable; SAE activation units; default 0 and 5).",
)
@click.option(
    "--alpha",
    "alphas",
    type=float,
    multiple=True,
    help="α: gain of the target (others get 1/α; 0 isolates the target). Repeatable; default 0.5, 1 and 2.",
)
@click.option(
    "--ablate/--no-ablate",
    default=True,
    show_default=True,
    help="Also run z_j = 0 for every target.",
)
@click.option(
    "--positions",
    default="all",
    show_default=True,
    help="Token positions to edit: all, active (where the target is already active) or a content-token index.",
)
@click.option(
    "--add-error/--no-add-error",
    default=True,
    show_default=True,
    help="Add the SAE's reconstruction error back, so that only the edit changes the hidden state.",
)
@click.option("--max-targets", type=click.IntRange(min=1), help="Steer only the first N targets.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Sequences per encoder pass.",
)
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="(sequence, condition) rows per forward pass.",
)
@click.option("--plots/--no-plots", default=True, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Report folder.")
@device_option
def steer(
    targets_path: Path,
    clf_dir: Path,
    sae_dir: Path,
    model: str,
    data: Path,
    reference: Path | None,
    min_acts: tuple[float, ...],
    alphas: tuple[float, ...],
    ablate: bool,
    positions: str,
    add_error: bool,
    max_targets: int | None,
    batch_size: int,
    max_rows: int,
    plots: bool,
    out: Path,
    device: str | None,
) -> None:
    """Steer targets.json features and report what the classifier does (report.md, metrics.json, PNGs)."""
    pos = _positions(positions)
    min_acts = min_acts or (0.0, 5.0)
    alphas = alphas or (0.5, 1.0, 2.0)
    with _user_errors():
        from hsg import __version__
        from hsg.steer.classifier import ConvClassifier, read_split
        from hsg.steer.report import write_steer_report
        from hsg.steer.run import (
            Steerer,
            build_conditions,
            check_provenance,
            condition_metrics,
            read_targets,
            run_grid,
            target_summary,
        )

        sae = _load_sae(sae_dir, device)
        doc, targets = read_targets(targets_path, sae)
        if max_targets is not None:
            targets = targets[:max_targets]
        conditions = build_conditions(targets, min_acts, alphas, ablate)
        clf = ConvClassifier.load(clf_dir).to(device)
        encoder = _load_encoder(model, device)
        check_provenance(encoder, sae, clf)
        steerer = Steerer(encoder, sae, clf, pos, add_error, max_rows)
        test_ids = set(read_split(clf_dir)["test"])
        records = [r for r in _read(data, reference) if r.id in test_ids]
        if not records:
            raise click.ClickException(
                f"no sequence of {data} is in the test split of {clf_dir}: steering runs on "
                "sequences held out from classifier training"
            )
        if len(records) < len(test_ids):
            click.echo(
                f"warning: {len(test_ids) - len(records)} test-split ids are not in {data}",
                err=True,
            )
        labels = [clf.cfg.positive_label in r.labels for r in records]
        t0 = time.perf_counter()
        with click.progressbar(length=len(records), label="steering", file=sys.stderr) as bar:
            result = run_grid(
                steerer,
                [r.sequence for r in records],
                [r.id for r in records],
                labels,
                conditions,
                batch_size,
                progress=bar.update,
            )
        elapsed = time.perf_counter() - t0
        rows = condition_metrics(result)
        summary = target_summary(rows, targets)
        provenance = {
            "hsg_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model_id": encoder.model_id,
            "model_checkpoint_hash": encoder.checkpoint_hash,
            "sae_id": sae.sae_id,
            "sae_layer": sae.cfg.layer,
            "classifier": str(clf_dir),
            "classifier_input": f"{clf.cfg.input_kind}, layer {clf.cfg.layer}",
            "classifier_weights_sha256": clf.cfg.weights_sha256,
            "positive_label": clf.cfg.positive_label,
            "targets_file": str(targets_path),
            "targets_parameters": doc.get("parameters"),
            "data": str(data),
        }
        parameters = {
            "min_act": list(min_acts),
            "alpha": list(alphas),
            "ablate": ablate,
            "positions": pos,
            "add_error": add_error,
            "n_targets": len(targets),
            "n_conditions": len(conditions),
            "batch_size": batch_size,
            "max_rows": max_rows,
            "seconds": round(elapsed, 3),
            "rows_per_second": round(len(records) * (len(conditions) + 1) / max(elapsed, 1e-9), 1),
        }
        write_steer_report(out, result, rows, summary, targets, provenance, parameters, plots)
        click.echo(f"wrote {out / 'report.md'}", err=True)
        for s in summary:
            st = s["strongest"] or {}
            ab = s["ablation"] or {}
            click.echo(
                f"#{s['rank']} feature {s['index']}: ablation Δp {_f(ab.get('delta_mean_prob'))}, "
                f"strongest {st.get('label', '-')} Δp {_f(st.get('delta_mean_prob'))} "
                f"ΔAUROC {_f(st.get('delta_auroc'))} flipped {st.get('flipped', 0.0):.3f}"
            )


def _f(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:+.3f}"


# ---------------------------------------------------------------------- depmap


@click.command()
@model_option()
@click.option(
    "--sae", "sae_dir", type=click.Path(path_type=Path), required=True, help="SAE directory."
)
@click.option("--layer", type=int, help="Layer (default and only choice: the SAE's layer).")
@click.option("--feature", type=click.IntRange(min=0), required=True, help="SAE feature index.")
@click.option("--sequence", help="The sequence (ACGTN) to mutate.")
@click.option(
    "--data", type=click.Path(path_type=Path), help="Regions file holding the sequence (with --id)."
)
@reference_option
@click.option("--id", "seq_id", help="Id of the sequence in --data.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Mutants per forward pass.",
)
@click.option("--plots/--no-plots", default=True, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@device_option
def depmap(
    model: str,
    sae_dir: Path,
    layer: int | None,
    feature: int,
    sequence: str | None,
    data: Path | None,
    reference: Path | None,
    seq_id: str | None,
    batch_size: int,
    plots: bool,
    out: Path,
    device: str | None,
) -> None:
    """In-silico mutagenesis map of one SAE feature over one sequence (TSV + PNG)."""
    if (sequence is None) == (data is None):
        raise click.UsageError("give either --sequence or --data with --id")
    if data is not None and not seq_id:
        raise click.UsageError("--data needs --id")
    with _user_errors():
        from hsg.steer.depmap import dependency_map
        from hsg.steer.report import write_depmap

        name = "sequence"
        if data is not None:
            found = [r for r in _read(data, reference) if r.id == seq_id]
            if not found:
                raise click.ClickException(f"{data}: no sequence with id {seq_id!r}")
            sequence, name = found[0].sequence, found[0].id
        assert sequence is not None
        sae = _load_sae(sae_dir, device)
        encoder = _load_encoder(model, device)
        t0 = time.perf_counter()
        dm = dependency_map(encoder, sae, feature, sequence, name, layer, batch_size)
        elapsed = time.perf_counter() - t0
        provenance = {
            "model_id": encoder.model_id,
            "model_checkpoint_hash": encoder.checkpoint_hash,
            "sae_id": sae.sae_id,
            "seconds": round(elapsed, 3),
        }
        doc = write_depmap(out, dm, provenance, plots)
        click.echo(f"wrote {out} ({doc['n_mutants']} mutants in {elapsed:.2f}s)", err=True)
        click.echo(f"top spectral positions: {doc['top_spectral_positions']}")
