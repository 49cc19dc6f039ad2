"""Fit a sparse autoencoder on an activation store, keeping the best checkpoint.

Layout of an output directory:

    cfg.json, sae.safetensors   the best SAE so far (lowest validation loss), not the last
    metrics.jsonl               one JSON object per epoch (train and validation metrics)
    train_state/                what `resume` needs: current weights, optimizer, step, epoch,
                                early-stopping counters, torch RNG, and run.json (configs)

The validation loss is the full objective in normalised units (see `model.py`): s²·MSE +
λ·s·L1 with the final λ for ReLU, s²·MSE + λ₀·L0 for JumpReLU, s²·MSE alone for TopK and
BatchTopK (the AuxK term is a training aid, not part of the objective). Epochs during the
penalty's warm-up are compared on the same objective as the rest; early stopping only counts
epochs after the warm-up, when that objective is the one being optimised (from the start
without a penalty). An epoch improves on the best when its validation loss is lower by more
than `min_delta` + `min_rel_delta` × |best|; `epochs` is a ceiling, patience ends runs.

A fresh run first reads a sample of the training split (`_data_statistics`): b_dec starts
at its geometric median and, unless `normalize=False`, the input scale s is set so that the
mean squared distance of a token to the sample's mean is d_in. Dead latents for AuxK are
those that have not fired on the last min(10M, training tokens per epoch) tokens.

Determinism: initialisation comes from the config's seed and the shuffle of epoch e from a
generator seeded with (seed, e). Checkpoints are taken at epoch ends, so a resumed run
replays exactly what an uninterrupted one would have done (bit for bit on CPU).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save_file as st_save_file

from hsg.sae.activations import ActivationStore, count_rows, iter_batches
from hsg.sae.config import SAEConfig, TrainConfig
from hsg.sae.metrics import MetricsAccumulator
from hsg.sae.model import CFG_FILE, WEIGHTS_FILE, SparseAutoencoder

STATE_DIR = "train_state"
METRICS_FILE = "metrics.jsonl"
_STATE_FILE = "state.pt"
_CURRENT_FILE = "current.safetensors"
_RUN_FILE = "run.json"
# Options that may change between a run and its resumption without changing the result of
# the epochs already done.
_RESUMABLE_CHANGES = frozenset({"epochs", "patience", "device", "min_delta", "min_rel_delta"})
# What a setting absent from an older run's run.json meant then (it did not exist yet).
LEGACY_VALUES: dict[str, dict[str, Any]] = {
    "sae": {"l0_coefficient": 1e-3, "auxk_coefficient": 0.0, "input_scale": None},
    "train": {"normalize": False, "min_rel_delta": 0.0, "amp": False},
}
# AuxK's dead-latent window (Gao et al. 2024), capped at one epoch of training tokens.
DEAD_TOKENS = 10_000_000
# Rows read (from up to this many shards spread over the store) for b_dec and the scale.
_STAT_ROWS, _STAT_SHARDS = 65536, 8


class TrainError(ValueError):
    """A training run that cannot start or continue as asked."""


@dataclass
class TrainResult:
    sae: SparseAutoencoder  # the best checkpoint
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    out_dir: Path | None = None


def l1_schedule(cfg: SAEConfig, step: int) -> float:
    """λ at optimizer step `step` (0-based): linear from 0 over the first l1_warmup_steps."""
    if cfg.l1_warmup_steps <= 0:
        return cfg.l1_coefficient
    return cfg.l1_coefficient * min(1.0, step / cfg.l1_warmup_steps)


def l0_schedule(cfg: SAEConfig, step: int) -> float:
    """λ₀ of the L0 penalty at `step`: the same linear warm-up as λ."""
    if cfg.l1_warmup_steps <= 0:
        return cfg.l0_coefficient
    return cfg.l0_coefficient * min(1.0, step / cfg.l1_warmup_steps)


def objective(cfg: SAEConfig, metrics: dict[str, Any]) -> float:
    """The full objective from accumulated metrics (final λ), used for model selection.

    In normalised units (input scale s): s²·MSE, plus λ·s·L1 (relu) or λ₀·L0 (jumprelu).
    """
    s = cfg.scale
    value = float(metrics["mse"]) * s * s if s != 1.0 else float(metrics["mse"])
    penalty = cfg.spec.penalty
    if penalty == "l1":
        l1 = float(metrics["l1"]) * s if s != 1.0 else float(metrics["l1"])
        return value + cfg.l1_coefficient * l1
    if penalty == "l0":
        return value + cfg.l0_coefficient * float(metrics["l0"])
    return value


@torch.no_grad()
def evaluate(
    sae: SparseAutoencoder,
    store: ActivationStore,
    keep: np.ndarray | None = None,
    batch_size: int = 4096,
    progress: bool = False,
) -> dict[str, Any]:
    """Metrics of `sae` on the rows of `store` whose sequence is in `keep` (all if None)."""
    from tqdm import tqdm

    sae.check_input(store.d_in, f"activations in {store.source}")
    if keep is None:
        keep = np.ones(store.n_sequences, dtype=bool)
    acc = MetricsAccumulator(sae.cfg.d_in, sae.cfg.d_sae)
    with tqdm(total=count_rows(store, keep), unit="tok", desc="eval", disable=not progress) as bar:
        for xb in iter_batches(store, keep, batch_size):
            x = torch.from_numpy(xb).to(device=sae.device, dtype=sae.dtype)
            x_hat, z = sae(x)
            acc.update(x, x_hat, z)
            bar.update(len(xb))
    out = acc.result()
    if out["n_tokens"]:
        out["loss"] = objective(sae.cfg, out)
    return out


def fill_provenance(cfg: SAEConfig, provenance: dict[str, Any]) -> SAEConfig:
    """Take model id/version/layer/hash/hook from the activations where the config has none."""
    changes = {
        k: v
        for k, v in provenance.items()
        if v is not None and k in SAEConfig.__dataclass_fields__ and getattr(cfg, k) is None
    }
    if provenance.get("hook"):
        changes["hook"] = provenance["hook"]
    return cfg.replace(**changes) if changes else cfg


def _run_info(cfg: SAEConfig, tcfg: TrainConfig, store: ActivationStore) -> dict[str, Any]:
    sae = cfg.to_dict()
    sae.pop("weights_sha256", None)
    return {
        "sae": sae,
        "train": tcfg.to_dict(),
        "data": {
            "source": store.source,
            "d_in": store.d_in,
            "n_tokens": store.n_tokens,
            "n_sequences": store.n_sequences,
        },
    }


def read_run(out_dir: str | Path) -> dict[str, Any] | None:
    """The configs a run in `out_dir` was started with (for `--resume` and `eval`)."""
    path = Path(out_dir) / STATE_DIR / _RUN_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _check_resumable(saved: dict[str, Any], now: dict[str, Any], out_dir: Path) -> None:
    diffs = []
    for section in ("sae", "train", "data"):
        a = {**LEGACY_VALUES.get(section, {}), **saved.get(section, {})}
        b = now.get(section, {})
        for key in sorted(set(a) | set(b)):
            if section == "train" and key in _RESUMABLE_CHANGES:
                continue
            if section == "data" and key == "source":
                continue
            if a.get(key) != b.get(key):
                diffs.append(f"{section}.{key}: was {a.get(key)!r}, now {b.get(key)!r}")
    if diffs:
        raise TrainError(
            f"cannot resume the run in {out_dir}: its settings differ ("
            + "; ".join(diffs)
            + "). Use the original settings or a new --out."
        )


def _atomic_json_lines(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    os.replace(tmp, path)


def _save_state(
    state_dir: Path, sae: SparseAutoencoder, opt: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp_w = state_dir / f".{_CURRENT_FILE}.tmp"
    st_save_file(sae.state_tensors(), str(tmp_w))
    tmp_s = state_dir / f".{_STATE_FILE}.tmp"
    torch.save({**state, "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state()}, tmp_s)
    # Weights first, then the state that refers to them; both by rename.
    os.replace(tmp_w, state_dir / _CURRENT_FILE)
    os.replace(tmp_s, state_dir / _STATE_FILE)


def _format(record: dict[str, Any]) -> str:
    def part(name: str, m: dict[str, Any] | None) -> str:
        if not m or not m.get("n_tokens"):
            return f"{name} -"
        return (
            f"{name} mse={m['mse']:.4g} fve={m['fve']:.4f} L0={m['l0']:.1f} "
            f"dead={m['dead_latents']} dense={m.get('dense_latents', 0)}"
        )

    star = " *best*" if record["best"] else ""
    return (
        f"epoch {record['epoch']} step {record['step']} λ={record['l1_coefficient']:.3g} | "
        f"{part('train', record['train'])} | {part('val', record['val'])} | "
        f"val_loss={record['val_loss']:.5g} | {record['tokens_per_s']:.0f} tok/s{star}"
    )


def train_sae(
    store: ActivationStore,
    cfg: SAEConfig,
    tcfg: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train an SAE on `store`; returns the best checkpoint (lowest validation loss).

    With `out_dir`, the best SAE is saved there as it is found, per-epoch metrics go to
    `metrics.jsonl` and a resumable state to `train_state/`. `resume=True` continues that
    run; without it an `out_dir` that already holds a run is refused, never overwritten.
    """
    from tqdm import tqdm

    if cfg.d_in != store.d_in:
        raise TrainError(
            f"SAE d_in={cfg.d_in} but the activations in {store.source} have width {store.d_in}"
        )
    if store.n_tokens == 0:
        raise TrainError(f"no activations in {store.source}")
    cfg = fill_provenance(cfg, store.provenance()).replace(weights_sha256=None)
    out = Path(out_dir) if out_dir is not None else None
    state_dir = out / STATE_DIR if out is not None else None
    saved_run = read_run(out) if resume and out is not None else None

    val_seq = store.validation_mask(tcfg.val_fraction, cfg.seed)
    train_seq = ~val_seq
    n_train, n_val = count_rows(store, train_seq), count_rows(store, val_seq)
    if n_train == 0:
        raise TrainError(
            f"the training split is empty ({store.n_sequences} sequences, "
            f"val_fraction={tcfg.val_fraction})"
        )
    if tcfg.val_fraction > 0 and n_val == 0:
        raise TrainError(
            f"the validation split is empty: {store.n_sequences} sequences with "
            f"val_fraction={tcfg.val_fraction}; add data or raise --val-fraction"
        )

    centre = None
    if resume:
        if cfg.input_scale is None and saved_run is not None:
            cfg = cfg.replace(input_scale=saved_run.get("sae", {}).get("input_scale"))
    else:
        centre, scale = _data_statistics(store, train_seq, cfg.seed)
        if tcfg.normalize and cfg.input_scale is None:
            cfg = cfg.replace(input_scale=scale)
    run_info = _run_info(cfg, tcfg, store)

    device = torch.device(tcfg.device)
    torch.manual_seed(cfg.seed)
    sae = SparseAutoencoder(cfg, device=device)
    opt = _optimizer(sae)
    dead_window = min(DEAD_TOKENS, n_train)
    st: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "best_val_loss": math.inf,
        "best_epoch": 0,
        "bad_epochs": 0,
        "history": [],
        "since_fired": torch.zeros(cfg.d_sae, dtype=torch.int64),
    }
    best_in_memory: dict[str, torch.Tensor] | None = None

    if resume:
        if state_dir is None or not (state_dir / _STATE_FILE).is_file():
            raise TrainError(f"nothing to resume: no {STATE_DIR}/{_STATE_FILE} in {out}")
        _check_resumable(saved_run or {}, run_info, out)  # type: ignore[arg-type]
        loaded = torch.load(state_dir / _STATE_FILE, map_location="cpu", weights_only=True)
        sae.load_weights_(st_load_file(str(state_dir / _CURRENT_FILE)))
        opt.load_state_dict(loaded.pop("optimizer"))
        torch.set_rng_state(loaded.pop("torch_rng"))
        st.update(loaded)
        if log:
            log(f"resuming {out} after epoch {st['epoch']} (step {st['step']})")
    else:
        if out is not None and ((out / CFG_FILE).exists() or (state_dir and state_dir.exists())):
            raise TrainError(
                f"{out} already holds an SAE or a training run; pass --resume to continue it "
                "or choose another --out"
            )
        if centre is not None:
            with torch.no_grad():
                sae.b_dec.copy_(torch.from_numpy(centre).to(device=device, dtype=sae.dtype))
        if log and cfg.input_scale is not None:
            log(
                f"input scale s = {cfg.input_scale:.6g} (mean squared distance to the mean -> d_in)"
            )
        if out is not None and state_dir is not None:
            state_dir.mkdir(parents=True, exist_ok=True)
            (state_dir / _RUN_FILE).write_text(json.dumps(run_info, indent=2, sort_keys=True))

    # A resumed run that had already stopped early stays stopped unless --patience is raised.
    stopped_early = st["bad_epochs"] >= tcfg.patience
    if stopped_early and log:
        log(f"the run had stopped early (no improvement for {st['bad_epochs']} epochs)")
    last_epoch = st["epoch"] if stopped_early else tcfg.epochs
    since_fired = st["since_fired"].to(device)
    track_dead = cfg.spec.uses_auxk and cfg.auxk_coefficient > 0
    for epoch in range(st["epoch"] + 1, last_epoch + 1):
        rng = np.random.default_rng([cfg.seed, epoch])
        acc = MetricsAccumulator(cfg.d_in, cfg.d_sae)
        t0 = time.perf_counter()
        bar = tqdm(total=n_train, unit="tok", desc=f"epoch {epoch}", disable=not progress)
        lam = l1_schedule(cfg, st["step"])
        for xb in iter_batches(
            store, train_seq, tcfg.batch_size, rng=rng, buffer_shards=tcfg.shuffle_buffer_shards
        ):
            x = torch.from_numpy(xb).to(device=device, dtype=sae.dtype)
            lam = l1_schedule(cfg, st["step"])
            lam0 = l0_schedule(cfg, st["step"])
            dead = since_fired >= dead_window if track_dead else None
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=tcfg.amp):
                parts = sae.loss(x, lam, l0_coefficient=lam0, dead=dead)
            if track_dead:
                fired = (parts.z.detach() != 0).any(dim=0)
                since_fired.add_(len(xb)).masked_fill_(fired, 0)
            opt.zero_grad(set_to_none=True)
            parts.loss.backward()
            sae.remove_parallel_grad_()
            opt.step()
            sae.normalize_decoder_()
            st["step"] += 1
            acc.update(x, parts.x_hat, parts.z, parts.loss)
            bar.update(len(xb))
        bar.close()
        seconds = time.perf_counter() - t0
        train_m = acc.result()
        val_m = evaluate(sae, store, val_seq, tcfg.batch_size) if n_val else None
        val_loss = objective(cfg, val_m if val_m else train_m)
        best = st["best_val_loss"]
        margin = tcfg.min_delta + (tcfg.min_rel_delta * abs(best) if math.isfinite(best) else 0.0)
        improved = val_loss < best - margin
        if improved:
            st.update(best_val_loss=val_loss, best_epoch=epoch, bad_epochs=0)
            if out is not None:
                sae.save(out)
            else:
                best_in_memory = sae.state_tensors()
        elif cfg.spec.penalty == "none" or st["step"] >= cfg.l1_warmup_steps:
            st["bad_epochs"] += 1
        record = {
            "epoch": epoch,
            "step": st["step"],
            "l1_coefficient": lam,
            "l0_coefficient": lam0,
            "train": train_m,
            "val": val_m,
            "val_loss": val_loss,
            "best": improved,
            "seconds": seconds,
            "tokens_per_s": train_m["n_tokens"] / seconds if seconds > 0 else 0.0,
        }
        st["history"].append(record)
        st["epoch"] = epoch
        st["since_fired"] = since_fired.to("cpu").clone()
        if out is not None and state_dir is not None:
            _save_state(state_dir, sae, opt, st)
            _atomic_json_lines(out / METRICS_FILE, st["history"])
        if log:
            log(_format(record))
        if st["bad_epochs"] >= tcfg.patience:
            stopped_early = True
            if log:
                log(f"early stop: no improvement for {tcfg.patience} epochs")
            break

    if out is not None:
        best = SparseAutoencoder.load(out, device=device)
    else:
        best = SparseAutoencoder(cfg, device=device)
        best.load_weights_(best_in_memory if best_in_memory is not None else sae.state_tensors())
    return TrainResult(
        sae=best,
        best_epoch=st["best_epoch"],
        best_val_loss=st["best_val_loss"],
        history=st["history"],
        stopped_early=stopped_early,
        out_dir=out,
    )


def _optimizer(sae: SparseAutoencoder) -> torch.optim.Adam:
    """Adam; the biases get lr / s, so they move as they would on the normalised inputs."""
    lr, s = sae.cfg.lr, sae.cfg.scale
    if s == 1.0:  # one group, as runs before normalisation had (their optimizer state loads)
        return torch.optim.Adam(sae.parameters(), lr=lr)
    biases = [sae.b_enc, sae.b_dec]
    others = [p for p in sae.parameters() if all(p is not b for b in biases)]
    return torch.optim.Adam([{"params": others}, {"params": biases, "lr": lr / s}], lr=lr)


def geometric_median(x: np.ndarray, iters: int = 64, tol: float = 1e-7) -> np.ndarray:
    """The point minimising the sum of Euclidean distances to the rows of x (Weiszfeld)."""
    y = x.mean(axis=0)
    for _ in range(iters):
        dist = np.linalg.norm(x - y, axis=1)
        w = 1.0 / np.maximum(dist, 1e-12)
        new = (w[:, None] * x).sum(axis=0) / w.sum()
        if np.linalg.norm(new - y) <= tol * max(1.0, float(np.linalg.norm(y))):
            return new
        y = new
    return y


def _data_statistics(
    store: ActivationStore, keep: np.ndarray, seed: int
) -> tuple[np.ndarray, float]:
    """(geometric median, input scale) of a sample of the training split.

    The sample is every training row of up to `_STAT_SHARDS` shards spread evenly over the
    store, subsampled (seeded) to `_STAT_ROWS`. b_dec starts at the geometric median: the
    data's centre, robust to the few tokens far from it, so the first steps are not spent
    learning the offset through the latents (which leaves many latents firing on it, or
    dead). The scale s makes the sample's mean squared distance to its mean equal d_in.
    """
    picks = np.unique(np.linspace(0, store.num_shards - 1, _STAT_SHARDS).round().astype(int))
    rows = []
    for i in picks:
        shard = store.load_shard(int(i))
        rows.append(shard.x[keep[shard.seq]])
    x = np.concatenate(rows).astype(np.float64)
    if len(x) > _STAT_ROWS:
        x = x[np.random.default_rng([seed, 7]).choice(len(x), _STAT_ROWS, replace=False)]
    if len(x) == 0:  # no training row in the sampled shards: fall back to no change
        return np.zeros(store.d_in), 1.0
    msd = float(((x - x.mean(axis=0)) ** 2).sum(axis=1).mean())
    scale = math.sqrt(store.d_in / msd) if msd > 0 else 1.0
    return geometric_median(x), scale


__all__ = [
    "METRICS_FILE",
    "STATE_DIR",
    "TrainError",
    "TrainResult",
    "WEIGHTS_FILE",
    "evaluate",
    "geometric_median",
    "l0_schedule",
    "l1_schedule",
    "objective",
    "read_run",
    "train_sae",
]
