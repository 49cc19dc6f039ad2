"""The study's CNN classifier head over token matrices, made length-blind and reproducible.

Architecture (one sequence = one ``[n_tokens, C]`` matrix of hidden states or SAE latents)::

    x  -> (x - mean) / std                      per-channel, statistics of training tokens
       -> Conv1d(C -> H, k) -> ReLU -> zero pads
       -> Conv1d(H -> H, k) -> ReLU -> zero pads
       -> [masked mean ; masked max] over tokens -> Dropout -> Linear(2H -> 2)

Padding must not tell the classifier how long a sequence is (the study's padded batches
did): padded positions are zeroed after every convolution, so a real token next to the end
sees exactly the zeros a "same" convolution pads with when the sequence is alone, and the
pooling averages and maximises over real tokens only. Batching a sequence alone or beside
longer ones therefore gives the same prediction, bit for bit (tested). For the last bit the
head computes in float64: float32 convolution kernels are chosen by input shape and round
differently (~1e-7), while float64 differences (~1e-16) vanish when the probability is
returned as float32. The head is tiny next to the encoder, so this costs little.

Kernel width rule (``default_kernel_size``): ``k = 2 * ceil(log2(C) / 4) + 1`` clamped to
3..9, i.e. 3 up to 16 channels, 5 up to 256, 7 up to 4096 (NT hidden states, typical SAE
widths) and 9 beyond. First-layer weights grow as C*k*H, so k grows only logarithmically in
C; a 7-token kernel of a 6-mer model spans ~42 bp, a binding site with its flanks.
Hidden channels: ``H = clamp(C // 4, 16, 128)``. Both are recorded in the config and can be
overridden.

Splits are by sequence id, stratified by class, and seeded (see `stratified_split`);
training stops early on validation loss and keeps the weights of the best epoch, never the
last (the study saved the last).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from hsg.config import ConfigError, JsonConfig
from hsg.steer.features import INPUT_KINDS, FeatureSet
from hsg.steer.metrics import binary_metrics

CONFIG_FILE = "classifier.json"
WEIGHTS_FILE = "classifier.safetensors"
SPLIT_FILE = "split.json"
TRAIN_FILE = "train.json"
METRICS_FILE = "metrics.json"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


class ClassifierError(ValueError):
    """A classifier directory, split or input that cannot be used as asked."""


def default_kernel_size(d_in: int) -> int:
    """Odd kernel width from the input width; see the module docstring for the rule."""
    k = 2 * math.ceil(math.log2(max(d_in, 2)) / 4) + 1
    return min(9, max(3, k))


def default_channels(d_in: int) -> int:
    return min(128, max(16, d_in // 4))


@dataclass(frozen=True)
class ClassifierConfig(JsonConfig):
    """Shape and provenance of one trained classifier head (``classifier.json``)."""

    d_in: int
    input_kind: str
    layer: int
    positive_label: str
    channels: int = 0  # 0 = default_channels(d_in)
    kernel_size: int = 0  # 0 = default_kernel_size(d_in)
    dropout: float = 0.3
    model_id: str | None = None
    model_checkpoint_hash: str | None = None
    sae_id: str | None = None
    split_seed: int = 0
    val_fraction: float = 0.16
    test_fraction: float = 0.2
    split_sha256: str | None = None
    weights_sha256: str | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.d_in <= 0:
            raise ConfigError(f"d_in must be positive, got {self.d_in}")
        if self.input_kind not in INPUT_KINDS:
            raise ConfigError(f"input_kind must be one of {INPUT_KINDS}, got {self.input_kind!r}")
        if self.input_kind == "latents" and not self.sae_id:
            raise ConfigError("a classifier on latents must record the SAE id")
        if self.channels == 0:
            object.__setattr__(self, "channels", default_channels(self.d_in))
        if self.kernel_size == 0:
            object.__setattr__(self, "kernel_size", default_kernel_size(self.d_in))
        if self.channels < 1:
            raise ConfigError(f"channels must be positive, got {self.channels}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be a positive odd number, got {self.kernel_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        fractions = (self.val_fraction, self.test_fraction)
        if min(fractions) <= 0 or sum(fractions) >= 1:
            raise ConfigError(
                f"val_fraction {self.val_fraction} and test_fraction {self.test_fraction} must "
                "be positive and leave room for training"
            )
        if self.format_version != FORMAT_VERSION:
            raise ConfigError(f"classifier format_version {self.format_version} is not supported")

    def replace(self, **changes: Any) -> ClassifierConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """How the head is fitted (``train.json``, with the per-epoch history)."""

    epochs: int = 50
    patience: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    min_delta: float = 0.0
    seed: int = 0
    balance_classes: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.patience < 1 or self.batch_size < 1:
            raise ConfigError("epochs, patience and batch_size must be positive")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(
                f"lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}"
            )


# ---------------------------------------------------------------------- model


class ConvClassifier(nn.Module):
    """Two masked convolutions, masked mean+max pooling, dropout, a linear layer to 2 classes."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, h, k = cfg.d_in, cfg.channels, cfg.kernel_size
        self.register_buffer("input_mean", torch.zeros(c))
        self.register_buffer("input_std", torch.ones(c))
        self.conv1 = nn.Conv1d(c, h, k, padding=k // 2)
        self.conv2 = nn.Conv1d(h, h, k, padding=k // 2)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(2 * h, 2)
        self.double()

    input_mean: torch.Tensor
    input_std: torch.Tensor

    def check_input(self, d: int, what: str = "input") -> None:
        if d != self.cfg.d_in:
            raise ClassifierError(
                f"classifier ({self.cfg.input_kind}, layer {self.cfg.layer}) expects inputs of "
                f"width {self.cfg.d_in}, but the {what} has width {d}"
            )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Logits ``[B, 2]`` of ``x [B, T, C]`` with ``mask [B, T]`` marking real tokens."""
        self.check_input(x.shape[-1])
        x = x.to(device=self.input_mean.device, dtype=torch.float64)
        keep = mask.to(x).unsqueeze(1)  # [B, 1, T]
        h = ((x - self.input_mean) / self.input_std).transpose(1, 2) * keep
        h = torch.relu(self.conv1(h)) * keep
        h = torch.relu(self.conv2(h)) * keep
        n = keep.sum(-1).clamp_min(1.0)
        mean_pool = h.sum(-1) / n
        max_pool = h.masked_fill(keep == 0, float("-inf")).amax(-1)
        max_pool = torch.where(torch.isfinite(max_pool), max_pool, torch.zeros_like(max_pool))
        return self.head(self.dropout(torch.cat([mean_pool, max_pool], dim=1)))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """P(positive) per row, in eval mode (no dropout)."""
        was_training = self.training
        self.eval()
        try:
            return torch.softmax(self(x, mask), dim=-1)[:, 1].float().cpu()
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------ persistence
    def weights_bytes(self) -> bytes:
        return st_save({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()})

    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        data = self.weights_bytes()
        self.cfg = self.cfg.replace(weights_sha256=hashlib.sha256(data).hexdigest())
        _atomic_write(out / WEIGHTS_FILE, data)
        _atomic_write(out / CONFIG_FILE, (self.cfg.to_json() + "\n").encode())
        return out

    @classmethod
    def load(cls, directory: str | Path) -> ConvClassifier:
        """Load and verify (hash, tensor names and shapes) a classifier written by `save`."""
        path = Path(directory)
        cfg_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
        for p in (cfg_path, weights_path):
            if not p.is_file():
                raise ClassifierError(f"missing classifier file: {p}")
        try:
            cfg = ClassifierConfig.from_json(cfg_path.read_text())
        except ConfigError as exc:
            raise ClassifierError(f"invalid classifier config {cfg_path}: {exc}") from exc
        data = weights_path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if cfg.weights_sha256 is not None and digest != cfg.weights_sha256:
            raise ClassifierError(
                f"hash mismatch for {weights_path}: the file changed or belongs to another "
                "classifier"
            )
        model = cls(cfg)
        try:
            model.load_state_dict(st_load(data), strict=True)
        except RuntimeError as exc:
            raise ClassifierError(f"{weights_path} does not match {cfg_path}: {exc}") from exc
        return model.eval()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------------- split


def _split_key(seed: int, seq_id: str) -> str:
    return hashlib.sha256(f"{seed}\t{seq_id}".encode()).hexdigest()


def stratified_split(
    ids: Sequence[str],
    labels: Sequence[bool],
    seed: int = 0,
    val_fraction: float = 0.16,
    test_fraction: float = 0.2,
) -> dict[str, list[str]]:
    """Ids per split (64/16/20 by default), stratified by class, from a seeded hash of the id.

    Ordering each class by ``sha256(seed, id)`` makes a sequence's split depend only on its
    id and the seed — not on file order or on which other sequences are present — so the
    same loci land in the same split when the data file is re-sorted.
    """
    if len(ids) != len(labels):
        raise ClassifierError(f"{len(ids)} ids for {len(labels)} labels")
    counts = Counter(ids)
    if len(counts) != len(ids):
        dup = next(i for i, c in counts.items() if c > 1)
        raise ClassifierError(f"duplicate sequence id {dup!r}: splits are by id")
    split: dict[str, list[str]] = {name: [] for name in SPLITS}
    for cls_value in (True, False):
        members = sorted(
            (i for i, y in zip(ids, labels, strict=True) if bool(y) == cls_value),
            key=lambda s: _split_key(seed, s),
        )
        n_test = round(test_fraction * len(members))
        n_val = round(val_fraction * len(members))
        split["test"] += members[:n_test]
        split["val"] += members[n_test : n_test + n_val]
        split["train"] += members[n_test + n_val :]
    for name in SPLITS:
        split[name].sort()
    return split


def split_sha256(split: dict[str, list[str]]) -> str:
    return hashlib.sha256(json.dumps(split, sort_keys=True).encode()).hexdigest()


def read_split(directory: str | Path) -> dict[str, list[str]]:
    path = Path(directory) / SPLIT_FILE
    if not path.is_file():
        raise ClassifierError(f"missing classifier file: {path}")
    try:
        data = json.loads(path.read_text())
        return {name: [str(i) for i in data[name]] for name in SPLITS}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ClassifierError(f"{path}: not a split file ({exc})") from exc


# ---------------------------------------------------------------------- training


@dataclass
class TrainResult:
    model: ConvClassifier
    history: list[dict[str, float]]
    best_epoch: int
    metrics: dict[str, Any]


def _standardisation(
    features: FeatureSet, index: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean/std of the training tokens (float64, one pass, sparse-friendly).

    Transformer hidden states carry a few channels of outsized magnitude that would otherwise
    dominate the first convolution; constant channels (dead latents) keep std 1.
    """
    total = torch.zeros(features.width, dtype=torch.float64)
    total_sq = torch.zeros(features.width, dtype=torch.float64)
    n = 0
    for i in index:
        r = features.rows[i]
        r = (r.to_dense() if r.is_sparse else r).double()
        total += r.sum(0)
        total_sq += (r * r).sum(0)
        n += r.shape[0]
    mean = total / max(n, 1)
    var = (total_sq / max(n, 1) - mean * mean).clamp_min(0.0)
    std = var.sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return mean, std


def _class_weights(y: torch.Tensor, balance: bool) -> torch.Tensor:
    if not balance:
        return torch.ones(2)
    counts = torch.bincount(y, minlength=2).double().clamp_min(1.0)
    return (counts.sum() / (2 * counts)).float()


def predict(
    model: ConvClassifier, features: FeatureSet, index: Sequence[int], batch_size: int = 256
) -> np.ndarray:
    """P(positive) of the sequences ``index`` of ``features``, in that order."""
    out = []
    for s in range(0, len(index), batch_size):
        x, mask = features.batch(index[s : s + batch_size])
        out.append(model.predict_proba(x, mask))
    return torch.cat(out).numpy() if out else np.zeros(0)


def _loss(
    model: ConvClassifier,
    features: FeatureSet,
    index: Sequence[int],
    y: torch.Tensor,
    weights: torch.Tensor,
    batch_size: int,
) -> float:
    model.eval()
    total, n = 0.0, 0.0
    with torch.no_grad():
        for s in range(0, len(index), batch_size):
            idx = list(index[s : s + batch_size])
            x, mask = features.batch(idx)
            target = y[idx]
            loss = F.cross_entropy(model(x, mask), target, weight=weights, reduction="sum")
            total += float(loss)
            n += float(weights[target].sum())
    return total / max(n, 1e-12)


def train_classifier(
    features: FeatureSet,
    labels: Sequence[bool],
    split: dict[str, list[str]],
    cfg: ClassifierConfig,
    tcfg: TrainConfig,
    log: Callable[[str], None] | None = None,
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Fit the head on ``split['train']``, stop on ``split['val']`` loss, score ``split['test']``.

    Deterministic for a given seed: initialisation, batch order and dropout masks all come
    from ``tcfg.seed`` (under a forked RNG, so the caller's global RNG is left alone).
    """
    features_width = features.width
    if features_width != cfg.d_in:
        raise ClassifierError(f"features have width {features_width}, config says {cfg.d_in}")
    position = {sid: i for i, sid in enumerate(features.ids)}
    missing = [s for name in SPLITS for s in split[name] if s not in position]
    if missing:
        raise ClassifierError(f"{len(missing)} split ids have no features, e.g. {missing[0]!r}")
    index = {name: [position[s] for s in split[name]] for name in SPLITS}
    for name in SPLITS:
        if not index[name]:
            raise ClassifierError(
                f"the {name} split is empty ({len(features)} sequences): need more data"
            )
    y = torch.tensor([bool(v) for v in labels], dtype=torch.long)
    if len(set(y[index["train"]].tolist())) < 2:
        raise ClassifierError("the training split holds only one class")
    weights = _class_weights(y[index["train"]], tcfg.balance_classes).double().to(device)
    y = y.to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tcfg.seed)
        model = ConvClassifier(cfg).to(device)
        mean, std = _standardisation(features, index["train"])
        model.input_mean.copy_(mean)
        model.input_std.copy_(std)
        opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
        gen = torch.Generator().manual_seed(tcfg.seed)
        train_idx = torch.tensor(index["train"])
        best = (math.inf, 0, copy.deepcopy(model.state_dict()))
        history: list[dict[str, float]] = []
        for epoch in range(1, tcfg.epochs + 1):
            model.train()
            order = train_idx[torch.randperm(len(train_idx), generator=gen)].tolist()
            running, seen = 0.0, 0
            for s in range(0, len(order), tcfg.batch_size):
                idx = order[s : s + tcfg.batch_size]
                x, mask = features.batch(idx)
                loss = F.cross_entropy(model(x, mask), y[idx], weight=weights)
                opt.zero_grad()
                loss.backward()
                opt.step()
                running += loss.item() * len(idx)
                seen += len(idx)
            val_loss = _loss(model, features, index["val"], y, weights, 256)
            history.append({"epoch": epoch, "train_loss": running / seen, "val_loss": val_loss})
            if log is not None:
                log(f"epoch {epoch}: train loss {running / seen:.4f}, val loss {val_loss:.4f}")
            if val_loss < best[0] - tcfg.min_delta:
                best = (val_loss, epoch, copy.deepcopy(model.state_dict()))
            elif epoch - best[1] >= tcfg.patience:
                break
    model.load_state_dict(best[2])
    model.eval()
    metrics = {}
    for name in ("val", "test"):
        probs = predict(model, features, index[name])
        metrics[name] = binary_metrics(y[index[name]].cpu().numpy(), probs)
    metrics["best_epoch"] = best[1]
    metrics["best_val_loss"] = best[0]
    return TrainResult(model=model, history=history, best_epoch=best[1], metrics=metrics)


def save_run(
    directory: str | Path,
    result: TrainResult,
    split: dict[str, list[str]],
    tcfg: TrainConfig,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write weights + config, the split's ids, the training config/history and metrics."""
    from hsg.steer.metrics import jsonable

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if result.model.cfg.split_sha256 is None:
        result.model.cfg = result.model.cfg.replace(split_sha256=split_sha256(split))
    result.model.save(out)
    cfg = result.model.cfg
    split_doc = {"seed": cfg.split_seed, "sha256": cfg.split_sha256, **split}
    (out / SPLIT_FILE).write_text(json.dumps(split_doc, indent=1) + "\n")
    train_doc = {
        "train": tcfg.to_dict(),
        "history": result.history,
        "best_epoch": result.best_epoch,
    }
    (out / TRAIN_FILE).write_text(json.dumps(jsonable(train_doc), indent=2) + "\n")
    metrics = {**result.metrics, **(extra or {})}
    (out / METRICS_FILE).write_text(json.dumps(jsonable(metrics), indent=2) + "\n")
    return out
