"""The steering experiment: every target × (δ, α) condition on the same held-out sequences.

Data flow for one batch of B sequences and K conditions::

    encoder.embed(layer = SAE layer) ──► x [B,T,d] ──► z = sae.encode(x)   (once per batch)
    for a chunk of Kc conditions: rows = Kc·B (condition-major)
        z' = apply_interventions(z repeated, one Intervention per row, positions per row)
        x' = decode_edit(x, z, z')                         (bias, optional error term)
        ──► classifier input, by route:
            "hidden-same":    x' of the classifier's layer (= the SAE's layer)
            "hidden-forward": encoder.forward_from_layer(x', SAE layer → classifier layer)
            "latents":        z' itself (classifier trained on this SAE's latents)
        ──► P(positive) [Kc, B]

The baseline goes through the same route with no edit, so baseline and intervened numbers
differ only by the intervention. The hidden states of the SAE's layer are computed once per
batch and every condition reuses them; only the layers after the SAE are re-run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hsg.sae.compat import check_compatible
from hsg.steer.features import content_view
from hsg.steer.interventions import Intervention, apply_interventions, decode_edit, position_mask
from hsg.steer.metrics import binary_metrics

if TYPE_CHECKING:
    from hsg.models.encoder import EncodedBatch, Encoder
    from hsg.sae.model import SparseAutoencoder
    from hsg.steer.classifier import ConvClassifier

ROUTES = ("hidden-same", "hidden-forward", "latents")


class SteerError(ValueError):
    """Inputs that cannot be steered together (mismatched SAE, model, classifier, grid)."""


# ---------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """One feature to steer, as listed in ``targets.json`` (its other fields in ``info``)."""

    index: int
    feature: str
    rank: int
    info: dict[str, Any] = field(default_factory=dict, compare=False)


def read_targets(path: str | Path, sae: SparseAutoencoder) -> tuple[dict[str, Any], list[Target]]:
    """Parse and check ``targets.json`` against the loaded SAE (id, width, feature names)."""
    p = Path(path)
    if not p.is_file():
        raise SteerError(f"targets file not found: {p}")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise SteerError(f"{p}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("sae"), dict):
        raise SteerError(f"{p}: expected an object with an 'sae' object and a 'targets' list")
    sae_id = doc["sae"].get("id")
    if sae_id != sae.sae_id:
        raise SteerError(
            f"{p} was computed for SAE {sae_id!r}, but the SAE given is {sae.sae_id!r}: "
            "targets are feature indices of one dictionary and mean nothing in another"
        )
    entries = doc.get("targets")
    if not isinstance(entries, list) or not entries:
        raise SteerError(f"{p}: 'targets' must be a non-empty list")
    targets: list[Target] = []
    seen: set[int] = set()
    for rank, entry in enumerate(entries, start=1):
        index = entry.get("index") if isinstance(entry, dict) else None
        if isinstance(index, bool) or not isinstance(index, int):
            raise SteerError(f"{p}: target {rank} has no integer 'index'")
        if not 0 <= index < sae.cfg.d_sae:
            raise SteerError(f"{p}: target {rank} index {index} is outside 0..{sae.cfg.d_sae - 1}")
        name = entry.get("feature", f"{sae.sae_id}/{index}")
        if name != f"{sae.sae_id}/{index}":
            raise SteerError(f"{p}: target {rank} feature {name!r} does not match index {index}")
        if index in seen:
            continue
        seen.add(index)
        info = {k: v for k, v in entry.items() if k not in ("index", "feature")}
        targets.append(Target(index=index, feature=name, rank=rank, info=info))
    return doc, targets


# ---------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Condition:
    target: Target
    intervention: Intervention

    @property
    def label(self) -> str:
        return self.intervention.label


def build_conditions(
    targets: Sequence[Target],
    min_acts: Sequence[float],
    alphas: Sequence[float],
    ablate: bool = True,
) -> list[Condition]:
    """Per target: the ablation (optional), then the δ × α grid, δ-major."""
    for d in min_acts:
        if not d >= 0 or math.isinf(d):
            raise SteerError(f"--min-act (δ) must be a finite number >= 0, got {d}")
    for a in alphas:
        if not a >= 0 or math.isinf(a):
            raise SteerError(f"--alpha must be a finite number >= 0, got {a}")
    if not (min_acts and alphas) and not ablate:
        raise SteerError("no conditions: give --min-act and --alpha values or --ablate")
    out: list[Condition] = []
    for t in targets:
        if ablate:
            out.append(Condition(t, Intervention(t.index, kind="ablate")))
        for d in min_acts:
            for a in alphas:
                out.append(Condition(t, Intervention(t.index, float(d), float(a))))
    return out


# ---------------------------------------------------------------------- the pipeline


def _same_checkpoint(recorded: str | None, actual: str) -> bool:
    unknown = (None, "", "unsaved")
    return recorded in unknown or actual in unknown or recorded == actual


def check_provenance(
    encoder: Encoder,
    sae: SparseAutoencoder | None,
    classifier: ConvClassifier,
    allow_model_mismatch: bool = False,
) -> None:
    """Refuse combinations whose numbers would be meaningless (other weights, other widths).

    The encoder/SAE pair goes through the one `check_compatible`; the classifier's own
    provenance (checkpoint, layer, width, SAE) is checked here."""
    cfg = classifier.cfg
    actual = encoder.checkpoint_hash
    if not _same_checkpoint(cfg.model_checkpoint_hash, actual):
        raise SteerError(
            f"the classifier was trained on encoder {cfg.model_id!r} with checkpoint "
            f"{str(cfg.model_checkpoint_hash)[:12]}…, but {encoder.model_id!r} has "
            f"{actual[:12]}…"
        )
    encoder.model.check_layer(cfg.layer)
    if cfg.input_kind == "hidden":
        classifier.check_input(encoder.hidden_size, f"layer {cfg.layer} of {encoder.model_id}")
    if sae is None:
        return
    check_compatible(encoder, sae, allow_model_mismatch=allow_model_mismatch)
    if cfg.input_kind == "latents":
        if cfg.sae_id != sae.sae_id:
            raise SteerError(
                f"the classifier reads latents of SAE {cfg.sae_id!r}, but the SAE given is "
                f"{sae.sae_id!r}"
            )
        classifier.check_input(sae.cfg.d_sae, f"SAE {sae.sae_id}")


def choose_route(sae: SparseAutoencoder, classifier: ConvClassifier) -> str:
    """How an edit at the SAE's layer reaches the classifier; raises when it cannot."""
    cfg = classifier.cfg
    layer = sae.cfg.layer
    if layer is None:
        raise SteerError(f"SAE {sae.sae_id} does not record its layer")
    if cfg.input_kind == "latents":
        if cfg.sae_id != sae.sae_id:
            raise SteerError(
                f"the classifier reads latents of SAE {cfg.sae_id!r}, not of the steering SAE "
                f"{sae.sae_id!r}; steer with that SAE or use a classifier on hidden states"
            )
        return "latents"
    if cfg.layer < layer:
        raise SteerError(
            f"the classifier reads layer {cfg.layer}, before the SAE's layer {layer}: an edit "
            "there cannot reach it"
        )
    return "hidden-same" if cfg.layer == layer else "hidden-forward"


class Steerer:
    """Baseline and intervened P(positive) for batches of sequences (see module docstring)."""

    def __init__(
        self,
        encoder: Encoder,
        sae: SparseAutoencoder,
        classifier: ConvClassifier,
        positions: str | int = "all",
        add_error: bool = True,
        max_rows: int = 512,
    ) -> None:
        sae.check_input(encoder.hidden_size)
        if classifier.cfg.input_kind == "hidden":
            classifier.check_input(
                encoder.hidden_size, f"layer {classifier.cfg.layer} of the model"
            )
        else:
            classifier.check_input(sae.cfg.d_sae, f"SAE {sae.sae_id}")
        self.route = choose_route(sae, classifier)
        self.encoder, self.sae, self.classifier = encoder, sae, classifier
        self.layer = int(sae.cfg.layer)  # type: ignore[arg-type]
        self.positions = positions
        self.add_error = add_error
        self.max_rows = max(1, max_rows)

    def embed(self, sequences: Sequence[str], ids: Sequence[str]) -> EncodedBatch:
        return self.encoder.embed(list(sequences), self.layer, list(ids))

    def latents(self, batch: EncodedBatch) -> torch.Tensor:
        # stays on the SAE's device: the edits run there, next to the decoder
        with torch.inference_mode():
            return self.sae.encode(batch.hidden).float()

    def classify(
        self, x: torch.Tensor, z: torch.Tensor, attention: torch.Tensor, content: torch.Tensor
    ) -> torch.Tensor:
        """P(positive) of edited rows (``x`` hidden states, ``z`` latents of the SAE layer)."""
        if self.route == "latents":
            inputs, mask = content_view(z, content)
        elif self.route == "hidden-same":
            inputs, mask = content_view(x, content)
        else:
            h = self.encoder.forward_from_layer(
                x, self.layer, attention, to_layer=self.classifier.cfg.layer
            )
            inputs, mask = content_view(h, content)
        return self.classifier.predict_proba(inputs, mask)

    def baseline(self, batch: EncodedBatch, z: torch.Tensor) -> torch.Tensor:
        return self.classify(batch.hidden, z, batch.attention_mask, batch.content_mask)

    def conditions(
        self, batch: EncodedBatch, z: torch.Tensor, interventions: Sequence[Intervention]
    ) -> torch.Tensor:
        """``[K, B]`` P(positive), running up to ``max_rows`` (sequence, condition) rows at once."""
        b = len(batch)
        per_chunk = max(1, self.max_rows // b)
        out = []
        for s in range(0, len(interventions), per_chunk):
            chunk = interventions[s : s + per_chunk]
            k = len(chunk)
            x = batch.hidden.repeat(k, 1, 1)
            zz = z.repeat(k, 1, 1)
            content = batch.content_mask.repeat(k, 1)
            attention = batch.attention_mask.repeat(k, 1)
            rows = [iv for iv in chunk for _ in range(b)]
            pos = torch.cat(
                [position_mask(batch.content_mask, self.positions, z, iv.feature) for iv in chunk]
            )
            with torch.inference_mode():
                z_edit = apply_interventions(zz, rows, pos)
                x_edit = (
                    x
                    if self.route == "latents"
                    else decode_edit(self.sae, x, zz, z_edit, pos, self.add_error)
                )
            out.append(self.classify(x_edit, z_edit, attention, content).view(k, b))
        return torch.cat(out)


@dataclass
class SteerResult:
    ids: list[str]
    labels: np.ndarray  # bool [N]
    baseline: np.ndarray  # float32 [N]
    probs: np.ndarray  # float32 [K, N]
    conditions: list[Condition]
    route: str


def run_grid(
    steerer: Steerer,
    sequences: Sequence[str],
    ids: Sequence[str],
    labels: Sequence[bool],
    conditions: Sequence[Condition],
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> SteerResult:
    """Baseline and every condition for every sequence, batch by batch."""
    if not sequences:
        raise SteerError("no sequences to steer")
    ivs = [c.intervention for c in conditions]
    base, probs = [], []
    for s in range(0, len(sequences), batch_size):
        batch = steerer.embed(sequences[s : s + batch_size], ids[s : s + batch_size])
        z = steerer.latents(batch)
        base.append(steerer.baseline(batch, z))
        probs.append(steerer.conditions(batch, z, ivs) if ivs else torch.zeros(0, len(batch)))
        if progress is not None:
            progress(len(batch))
    return SteerResult(
        ids=list(ids),
        labels=np.asarray(labels, dtype=bool),
        baseline=torch.cat(base).numpy(),
        probs=torch.cat(probs, dim=1).numpy(),
        conditions=list(conditions),
        route=steerer.route,
    )


# ---------------------------------------------------------------------- metrics


def condition_metrics(result: SteerResult, threshold: float = 0.5) -> list[dict[str, Any]]:
    """One row per condition: metrics, and their change from the baseline."""
    base = binary_metrics(result.labels, result.baseline, threshold)
    base_pred = result.baseline >= threshold
    rows = []
    for k, cond in enumerate(result.conditions):
        p = result.probs[k]
        m = binary_metrics(result.labels, p, threshold)
        pred = p >= threshold
        iv = cond.intervention
        rows.append(
            {
                "feature": cond.target.feature,
                "index": cond.target.index,
                "rank": cond.target.rank,
                "kind": iv.kind,
                "min_act": None if iv.kind == "ablate" else iv.min_act,
                "alpha": None if iv.kind == "ablate" else iv.alpha,
                "label": cond.label,
                **m,
                "delta_mean_prob": m["mean_prob"] - base["mean_prob"],
                "delta_auroc": m["auroc"] - base["auroc"],
                "delta_accuracy": m["accuracy"] - base["accuracy"],
                "flipped": float((pred != base_pred).mean()),
                "flipped_to_positive": float((pred & ~base_pred).mean()),
                "flipped_to_negative": float((~pred & base_pred).mean()),
                "mean_abs_delta_prob": float(np.abs(p - result.baseline).mean()),
            }
        )
    return rows


def target_summary(
    rows: Sequence[dict[str, Any]], targets: Sequence[Target]
) -> list[dict[str, Any]]:
    """Per target: its ablation, and the steering condition that moved predictions most."""
    out = []
    for t in targets:
        mine = [r for r in rows if r["index"] == t.index]
        ablation = next((r for r in mine if r["kind"] == "ablate"), None)
        steer = [r for r in mine if r["kind"] == "steer"]
        best = max(steer, key=lambda r: abs(r["delta_mean_prob"]), default=None)
        out.append(
            {
                "feature": t.feature,
                "index": t.index,
                "rank": t.rank,
                "log2_fold_change": t.info.get("log2_fold_change"),
                "ablation": _pick(ablation),
                "strongest": None if best is None else {"label": best["label"], **_pick(best)},
                "max_flipped": max((r["flipped"] for r in mine), default=0.0),
            }
        )
    return out


def _pick(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    keys = ("min_act", "alpha", "mean_prob", "delta_mean_prob", "auroc", "delta_auroc", "flipped")
    return {k: row[k] for k in keys}
