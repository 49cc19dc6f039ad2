"""`hsg classifier`, `hsg steer` and `hsg depmap`.

Every failure a user can cause (a targets file of another SAE, a classifier of the wrong
width, δ < 0 or α < 0, an empty data file, a missing label) becomes a `click.ClickException`:
one line, exit status 1, no traceback. Heavy imports happen inside the commands so that
`hsg --help` stays fast.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from hsg.cli.options import (
    allow_mismatch_option,
    device_option,
    model_option,
    reference_option,
)


def _user_errors():
    from hsg.cli.errors import user_errors

    return user_errors(prefix_input=False)


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
@allow_mismatch_option
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
    allow_model_mismatch: bool,
    force: bool,
) -> None:
    """Train a classifier head; writes classifier.safetensors/.json, split.json, metrics.json."""
    from hsg import api

    with _user_errors():
        run = api.train_classifier(
            data,
            model,
            positive=positive,
            out=out,
            reference=reference,
            layer=layer,
            sae=sae_dir,
            on=on,
            split_seed=split_seed,
            seed=seed,
            epochs=epochs,
            patience=patience,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            kernel_size=kernel_size,
            channels=channels,
            dropout=dropout,
            embed_batch_size=embed_batch_size,
            device=device,
            force=force,
            allow_model_mismatch=allow_model_mismatch,
            log=lambda m: click.echo(m, err=True),
        )
    click.echo(f"wrote {out} (best epoch {run.result.best_epoch})", err=True)
    _echo_json({"test": run.metrics["test"], "val": run.metrics["val"]})


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
    from hsg import api
    from hsg.steer.metrics import jsonable

    with _user_errors():
        doc = api.evaluate_classifier(
            clf_dir,
            data,
            model,
            reference=reference,
            sae=sae_dir,
            split=which,
            embed_batch_size=embed_batch_size,
            device=device,
        )
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
@allow_mismatch_option
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
    allow_model_mismatch: bool,
) -> None:
    """Steer targets.json features and report what the classifier does (report.md, metrics.json, PNGs)."""
    from hsg import api

    pos = _positions(positions)
    from hsg.cli.errors import Bars

    with _user_errors():
        with Bars() as bars:
            report = api.steer(
                targets_path,
                clf_dir,
                sae_dir,
                model,
                data,
                out=out,
                reference=reference,
                min_acts=min_acts or (0.0, 5.0),
                alphas=alphas or (0.5, 1.0, 2.0),
                ablate=ablate,
                positions=pos,
                add_error=add_error,
                max_targets=max_targets,
                batch_size=batch_size,
                max_rows=max_rows,
                plots=plots,
                device=device,
                allow_model_mismatch=allow_model_mismatch,
                progress=bars,
            )
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"wrote {report.report}", err=True)
    for s in report.summary:
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
@allow_mismatch_option
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
    allow_model_mismatch: bool,
) -> None:
    """In-silico mutagenesis map of one SAE feature over one sequence (TSV + PNG)."""
    from hsg import api

    if (sequence is None) == (data is None):
        raise click.UsageError("give either --sequence or --data with --id")
    if data is not None and not seq_id:
        raise click.UsageError("--data needs --id")
    with _user_errors():
        doc = api.depmap(
            model,
            sae_dir,
            feature,
            out=out,
            sequence=sequence,
            data=data,
            seq_id=seq_id,
            reference=reference,
            layer=layer,
            batch_size=batch_size,
            plots=plots,
            device=device,
            allow_model_mismatch=allow_model_mismatch,
        )
    seconds = doc["provenance"]["seconds"]
    click.echo(f"wrote {out} ({doc['n_mutants']} mutants in {seconds:.2f}s)", err=True)
    click.echo(f"top spectral positions: {doc['top_spectral_positions']}")
