"""Layer-by-layer correlation of SAE feature activity with BED tracks: the study's baseline.

Before building the graph, the study labelled features by correlating their per-token
activity with RefSeq element tracks, layer by layer, and found the labels inconsistent.
This module reproduces that baseline so it can be compared with the graph's PageRank
selections on the same regions and SAEs.

One pass over the regions serves every layer: each batch is encoded once up to the first
requested layer and then carried from layer to layer with `Encoder.forward_from_layer`
(bit-identical to encoding each layer from scratch), and every layer's SAE latents update
that layer's `CorrelationAccumulator` against the same token-aligned track coverage.
Only content tokens are used (`<cls>` and padding are not sequence). Definitions of the
scores are in `hsg.correlate.stats`, of the coverage in `hsg.correlate.tracks`.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hsg.correlate.stats import CorrelationAccumulator
from hsg.correlate.tracks import Tracks, region_token_coverage
from hsg.regions.records import SequenceRecord

if TYPE_CHECKING:
    from hsg.models.encoder import Encoder
    from hsg.sae.model import SparseAutoencoder

RANK_BY = ("pearson", "ncc")
PRECISIONS = ("float64", "float32")
ALL_TRACKS = "all"
_LAYER_NAME = re.compile(r"(?:^|[_\-.])(?:layer|l)[_\-]?(\d+)$", re.IGNORECASE)


class CorrelateError(ValueError):
    """A user-facing problem with the inputs; the message says which file or option."""


# --------------------------------------------------------------------------- inputs


def parse_layers(spec: str) -> list[int]:
    """``"0-23"``, ``"3,6,9"``, ``"0-3,12"`` → sorted distinct layers."""
    layers: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise CorrelateError(f"--layers: cannot read {part!r} (use e.g. 0-23 or 3,6,9)")
        lo = int(m[1])
        hi = int(m[2]) if m[2] is not None else lo
        if hi < lo:
            raise CorrelateError(f"--layers: empty range {part!r}")
        layers.update(range(lo, hi + 1))
    return sorted(layers)


def parse_subsets(specs: Iterable[str]) -> dict[str, re.Pattern[str]]:
    """``NAME=regex`` options → compiled patterns, searched in the track name."""
    subsets: dict[str, re.Pattern[str]] = {}
    for spec in specs:
        name, sep, pattern = spec.partition("=")
        name = name.strip()
        if not sep or not name or not pattern:
            raise CorrelateError(f"--subset {spec!r}: expected NAME=regex")
        if name == ALL_TRACKS or name in subsets:
            raise CorrelateError(f"--subset {spec!r}: the name {name!r} is taken")
        try:
            subsets[name] = re.compile(pattern)
        except re.error as exc:
            raise CorrelateError(f"--subset {spec!r}: bad regex ({exc})") from exc
    return subsets


def _layer_of(directory: Path) -> int | None:
    from hsg.sae.model import read_cfg

    cfg = read_cfg(directory)
    if cfg.layer is not None:
        return cfg.layer
    m = _LAYER_NAME.search(directory.name)
    return int(m[1]) if m else None


def discover_saes(sae_dir: str | Path) -> dict[int, Path]:
    """Layer → SAE directory under ``sae_dir`` (itself, or sub-directories with a cfg.json).

    The layer is the ``layer`` field of cfg.json, else a ``layer_<i>``/``L<i>`` directory
    name. Two SAEs for one layer are an error: which one was meant cannot be guessed.
    """
    from hsg.sae.model import CFG_FILE

    root = Path(sae_dir)
    if not root.is_dir():
        raise CorrelateError(f"--sae-dir {root}: no such directory")
    candidates = [root] if (root / CFG_FILE).is_file() else []
    candidates += sorted(p.parent for p in root.glob(f"*/{CFG_FILE}"))
    candidates += sorted(p.parent for p in root.glob(f"*/*/{CFG_FILE}"))
    found: dict[int, Path] = {}
    for directory in candidates:
        layer = _layer_of(directory)
        if layer is None:
            raise CorrelateError(
                f"SAE {directory}: cfg.json has no layer and the directory name does not say "
                "one (name it layer_<i>)"
            )
        if layer in found:
            raise CorrelateError(f"two SAEs for layer {layer}: {found[layer]} and {directory}")
        found[layer] = directory
    if not found:
        raise CorrelateError(f"--sae-dir {root}: no SAE (cfg.json) in it or its sub-directories")
    return found


def select_layers(requested: Sequence[int] | None, found: dict[int, Path], sae_dir: Path):
    """The requested layers (default: every layer with an SAE); error on any without one."""
    if requested is None:
        return sorted(found)
    missing = [layer for layer in requested if layer not in found]
    if missing:
        which = ", ".join(map(str, missing))
        raise CorrelateError(
            f"no SAE for layer(s) {which} in {sae_dir} (SAEs found for layers "
            f"{', '.join(map(str, sorted(found)))})"
        )
    return list(requested)


# --------------------------------------------------------------------------- computing


@dataclass
class LayerScores:
    """All (feature, track) scores of one layer's SAE."""

    layer: int
    sae_id: str
    pearson: torch.Tensor  # [features, tracks]
    ncc: torch.Tensor  # [features, tracks]
    lag: torch.Tensor  # [features, tracks], tokens
    n_tokens: int
    live_features: int  # features that vary over the tokens (others have NaN scores)


@dataclass
class TokenCounts:
    tokens: int = 0
    covered: np.ndarray | None = None  # per track: tokens with any coverage


def _batches(records: Sequence[SequenceRecord], size: int) -> Iterator[list[SequenceRecord]]:
    for i in range(0, len(records), size):
        yield list(records[i : i + size])


def correlate_layers(
    records: Sequence[SequenceRecord],
    encoder: Encoder,
    saes: dict[int, SparseAutoencoder],
    tracks: Tracks,
    track_names: Sequence[str],
    max_lag: int,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
    precision: str = "float64",
) -> tuple[dict[int, LayerScores], TokenCounts]:
    """Scores of every layer in ``saes`` against ``track_names``, in one encoding pass."""
    layers = sorted(saes)
    columns = {name: i for i, name in enumerate(track_names)}
    device = encoder.device
    dtype = getattr(torch, precision)  # one of PRECISIONS
    accs = {
        layer: CorrelationAccumulator(
            saes[layer].cfg.d_sae, len(columns), max_lag, dtype=dtype, device=device
        )
        for layer in layers
    }
    counts = TokenCounts(covered=np.zeros(len(columns), dtype=np.int64))
    for batch in _batches(records, batch_size):
        out = encoder.embed(
            [r.sequence for r in batch], layers[0], names=[r.id for r in batch], window=True
        )
        coverage = np.concatenate(
            [
                region_token_coverage(batch[src], offs, tracks, columns)
                for src, offs in zip(out.source_index, out.offsets, strict=True)
            ]
        )
        y = torch.from_numpy(coverage)
        lengths = [len(t) for t in out.tokens]
        counts.tokens += len(y)
        counts.covered += (coverage > 0).sum(0)
        hidden, at = out.hidden, layers[0]
        for layer in layers:
            if layer != at:
                hidden = encoder.forward_from_layer(hidden, at, out.attention_mask, to_layer=layer)
                at = layer
            sae = saes[layer]
            with torch.inference_mode():
                latents = sae.encode(hidden[out.content_mask]).float()
            accs[layer].update(latents, y, lengths)
        if progress:
            progress(len(batch))
    scores = {}
    for layer in layers:
        acc = accs[layer]
        ncc, lag = acc.ncc()
        pearson = acc.pearson()
        live = int((~torch.isnan(pearson).all(1)).sum()) if len(columns) else 0
        scores[layer] = LayerScores(
            layer=layer,
            sae_id=saes[layer].sae_id,
            pearson=pearson.cpu(),
            ncc=ncc.cpu(),
            lag=lag.cpu(),
            n_tokens=acc.n_tokens,
            live_features=live,
        )
    return scores, counts


def best_features(
    scores: LayerScores, track_names: Sequence[str], top: int, rank_by: str = "pearson"
) -> list[dict[str, Any]]:
    """The ``top`` features of every track by ``rank_by`` (highest first; NaN never ranks)."""
    if rank_by not in RANK_BY:
        raise CorrelateError(f"rank_by must be one of {RANK_BY}, got {rank_by!r}")
    key = scores.pearson if rank_by == "pearson" else scores.ncc
    n_features = key.shape[0]
    k = min(top, n_features)
    if k == 0 or key.shape[1] == 0:
        return []
    # a stable sort, not topk: ties (e.g. duplicate features) rank by index, reproducibly
    values, index = torch.nan_to_num(key, nan=-torch.inf).sort(dim=0, descending=True, stable=True)
    values, index = values[:k], index[:k]  # [k, tracks]
    rows = []
    for col, track in enumerate(track_names):
        for rank in range(k):
            if math.isinf(values[rank, col].item()):
                break
            f = int(index[rank, col])
            rows.append(
                {
                    "layer": scores.layer,
                    "sae": scores.sae_id,
                    "track": track,
                    "rank": rank + 1,
                    "feature": f,
                    "feature_id": f"{scores.sae_id}/{f}",
                    "pearson": _num(scores.pearson[f, col]),
                    "ncc": _num(scores.ncc[f, col]),
                    "lag": int(scores.lag[f, col]),
                }
            )
    return rows


def _num(value: torch.Tensor | float) -> float | None:
    v = float(value)
    return None if math.isnan(v) else v


def subset_members(
    track_names: Sequence[str], subsets: dict[str, re.Pattern[str]]
) -> dict[str, list[str]]:
    """``all`` plus every named subset → the track names it holds."""
    members = {ALL_TRACKS: list(track_names)}
    for name, pattern in subsets.items():
        members[name] = [t for t in track_names if pattern.search(t)]
    return members


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "mean": None, "min": None, "max": None}
    return {
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
    }


def layer_summary(
    scores: dict[int, LayerScores],
    best: list[dict[str, Any]],
    members: dict[str, list[str]],
) -> list[dict[str, Any]]:
    """Per (layer, subset): how strongly the tracks' best features correlate."""
    firsts = {(r["layer"], r["track"]): r for r in best if r["rank"] == 1}
    rows = []
    for layer, s in sorted(scores.items()):
        for subset, names in members.items():
            hits = [firsts[(layer, t)] for t in names if (layer, t) in firsts]
            pearson = [r["pearson"] for r in hits if r["pearson"] is not None]
            ncc = [r["ncc"] for r in hits if r["ncc"] is not None]
            row: dict[str, Any] = {
                "layer": layer,
                "subset": subset,
                "sae": s.sae_id,
                "tokens": s.n_tokens,
                "features": int(s.pearson.shape[0]),
                "live_features": s.live_features,
                "tracks": len(names),
                "tracks_scored": len(hits),
                "distinct_best_features": len({r["feature"] for r in hits}),
                "lagged_best": sum(1 for r in hits if r["lag"] != 0),
            }
            row.update({f"best_pearson_{k}": v for k, v in _stats(pearson).items()})
            row.update({f"best_ncc_{k}": v for k, v in _stats(ncc).items()})
            rows.append(row)
    return rows


def track_table(
    best: list[dict[str, Any]], tracks: Tracks, track_names: Sequence[str], counts: TokenCounts
) -> list[dict[str, Any]]:
    """Per track: its size, how many tokens it touches, and its best layer and feature."""
    rows = []
    for col, name in enumerate(track_names):
        firsts = [r for r in best if r["track"] == name and r["rank"] == 1]
        top = max(firsts, key=lambda r: r["pearson"] or -math.inf, default=None)
        covered = int(counts.covered[col]) if counts.covered is not None else 0
        rows.append(
            {
                "track": name,
                "annotation_id": tracks.annotation_id(name),
                "intervals": tracks.intervals_per_track.get(name, 0),
                "tokens_covered": covered,
                "token_fraction": covered / counts.tokens if counts.tokens else 0.0,
                "best_layer": top["layer"] if top else None,
                "best_feature_id": top["feature_id"] if top else None,
                "best_pearson": top["pearson"] if top else None,
                "best_ncc": top["ncc"] if top else None,
                "best_lag": top["lag"] if top else None,
            }
        )
    return rows


# --------------------------------------------------------------------------- outputs


ALIGNMENT = (
    "coverage[token, track] = fraction of the token's bases (encoder offsets, region sequence "
    "coordinates) inside any interval of the track; for '-' regions sequence base p is genomic "
    "base end-1-p"
)
NCC = (
    "Pearson r of x[t] (feature) with y[t+lag] (track) over token pairs inside one region "
    "(or window), centred and normalised per lag; maximum over lag in [-L, L], ties to the "
    "smallest |lag|; lag 0 equals Pearson"
)


@dataclass
class Outputs:
    best: Path
    summary_tsv: Path
    summary_json: Path
    tracks: Path
    plot: Path | None = None
    parquet: Path | None = None
    extra: list[Path] = field(default_factory=list)


def _write_tsv(rows: list[dict[str, Any]], path: Path, columns: Sequence[str]) -> Path:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(columns))
    frame.to_csv(path, sep="\t", index=False, na_rep="NA", float_format="%.6g")
    return path


BEST_COLUMNS = ("layer", "track", "rank", "feature", "pearson", "ncc", "lag", "feature_id", "sae")


def write_tables(
    out_dir: Path,
    best: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    track_rows: list[dict[str, Any]],
    meta: dict[str, Any],
) -> Outputs:
    """best_features.tsv (+ .parquet with pyarrow), layer_summary.tsv/.json, tracks.tsv."""
    import importlib.util

    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = Outputs(
        best=_write_tsv(best, out_dir / "best_features.tsv", BEST_COLUMNS),
        summary_tsv=_write_tsv(
            summary, out_dir / "layer_summary.tsv", list(summary[0]) if summary else ["layer"]
        ),
        summary_json=out_dir / "layer_summary.json",
        tracks=_write_tsv(
            track_rows, out_dir / "tracks.tsv", list(track_rows[0]) if track_rows else ["track"]
        ),
    )
    if importlib.util.find_spec("pyarrow") is not None:
        import pandas as pd

        outputs.parquet = out_dir / "best_features.parquet"
        pd.DataFrame(best, columns=list(BEST_COLUMNS)).to_parquet(outputs.parquet, index=False)
    document = {**meta, "layers": summary, "tracks": track_rows}
    outputs.summary_json.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return outputs


# --------------------------------------------------------------------------- graph


def correlation_rows(
    best: list[dict[str, Any]], scores: dict[int, LayerScores], tracks: Tracks
) -> dict[str, list[dict[str, Any]]]:
    """The best features as the plain rows `hsg.graph.analysis_writes.write_correlations`
    stores: SAE id → one row per (feature, track), layers in order."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for layer, s in sorted(scores.items()):
        rows[s.sae_id] = [
            {
                "feature_id": r["feature_id"],
                "annotation_id": tracks.annotation_id(r["track"]),
                "track": r["track"],
                "pearson": r["pearson"],
                "ncc": r["ncc"],
                "lag": r["lag"],
                "layer": layer,
                "rank": r["rank"],
                "tokens": s.n_tokens,
            }
            for r in best
            if r["layer"] == layer
        ]
    return rows


# --------------------------------------------------------------------------- the run


@dataclass
class CorrelateConfig:
    """The parameters of one run, echoed into layer_summary.json."""

    regions: str
    tracks: str
    model: str
    sae_dir: str
    layers: list[int] | None = None  # None: every layer with an SAE
    max_lag: int = 5
    top: int = 10
    rank_by: str = "pearson"
    subsets: dict[str, str] = field(default_factory=dict)
    batch_size: int = 32
    precision: str = "float64"  # of each batch's products (see CorrelationAccumulator)
    fmt: str | None = None
    reference: str | None = None
    device: str | None = None
    allow_model_mismatch: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CorrelateResult:
    scores: dict[int, LayerScores]
    track_names: list[str]
    best: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    track_rows: list[dict[str, Any]]
    tracks: Tracks
    outputs: Outputs | None = None
    graph: Any = None  # hsg.graph.analysis_writes.CorrelationWrite, when written


def _read_regions(cfg: CorrelateConfig, warn: Callable[[str], None]) -> list[SequenceRecord]:
    from hsg.regions.readers import read_records

    records = list(read_records(cfg.regions, fmt=cfg.fmt, reference=cfg.reference))
    placed = [r for r in records if r.has_coordinates]
    if not placed:
        raise CorrelateError(
            f"{cfg.regions}: no region has chrom/start/end, so no track can be placed on it"
        )
    if len(placed) < len(records):
        skipped = [r.id for r in records if not r.has_coordinates]
        warn(
            f"{len(skipped)} region(s) without coordinates skipped (e.g. {', '.join(skipped[:3])})"
        )
    return placed


def _load_saes(
    found: dict[int, Path],
    layers: list[int],
    encoder: Encoder,
    warn: Callable[[str], None],
    allow_model_mismatch: bool = False,
) -> dict[int, SparseAutoencoder]:
    from hsg.sae.compat import check_compatible
    from hsg.sae.model import SparseAutoencoder

    saes = {}
    for layer in layers:
        if layer > encoder.num_layers:
            raise CorrelateError(
                f"layer {layer} does not exist: {encoder.model_id} has layers 0-"
                f"{encoder.num_layers} (0 = embeddings)"
            )
        sae = SparseAutoencoder.load(found[layer], device=encoder.device).eval()
        compat = check_compatible(encoder, sae, layer, allow_model_mismatch=allow_model_mismatch)
        for message in compat.warnings:
            warn(message)
        saes[layer] = sae
    return saes


def run_correlate(
    cfg: CorrelateConfig,
    out_dir: Path | None,
    *,
    warn: Callable[[str], None] = lambda msg: None,
    progress: Callable[[int, int], Callable[[int], None] | None] | None = None,
    plot: bool = True,
) -> CorrelateResult:
    """Check inputs (cheap checks first), score every layer, write tables and the plot.

    ``progress(total_regions, n_layers)`` may return a callback fed with regions done.
    """
    from hsg.correlate.tracks import check_tracks, load_tracks
    from hsg.models.encoder import load_encoder

    if cfg.rank_by not in RANK_BY:
        raise CorrelateError(f"rank_by must be one of {RANK_BY}, got {cfg.rank_by!r}")
    if cfg.precision not in PRECISIONS:
        raise CorrelateError(f"precision must be one of {PRECISIONS}, got {cfg.precision!r}")
    if cfg.max_lag < 0 or cfg.top < 1:
        raise CorrelateError("--max-lag must be >= 0 and --top >= 1")
    subsets = parse_subsets(f"{k}={v}" for k, v in cfg.subsets.items())
    tracks = load_tracks(cfg.tracks)
    found = discover_saes(cfg.sae_dir)
    layers = select_layers(cfg.layers, found, Path(cfg.sae_dir))
    records = _read_regions(cfg, warn)
    check = check_tracks(tracks, records)
    if check.absent_chromosomes:
        shown = ", ".join(check.absent_chromosomes[:20])
        more = len(check.absent_chromosomes) - 20
        warn(
            f"{cfg.tracks}: {len(check.absent_chromosomes)} track chromosome(s) have no region "
            f"and are ignored: {shown}" + (f" … (+{more})" if more > 0 else "")
        )
    if not check.overlapping:
        raise CorrelateError(
            f"no interval of {cfg.tracks} overlaps any of the {len(records)} regions in "
            f"{cfg.regions}: nothing to correlate (check the genome build and chromosome names)"
        )
    idle = len(tracks.names) - len(check.overlapping)
    if idle:
        warn(f"{idle} of {len(tracks.names)} tracks touch no region and are not scored")
    track_names = list(check.overlapping)
    members = subset_members(track_names, subsets)
    for name, held in members.items():
        if not held:
            warn(f"--subset {name}: matches none of the scored tracks")

    encoder = load_encoder(cfg.model, device=cfg.device)
    saes = _load_saes(found, layers, encoder, warn, cfg.allow_model_mismatch)
    callback = progress(len(records), len(layers)) if progress else None
    scores, counts = correlate_layers(
        records,
        encoder,
        saes,
        tracks,
        track_names,
        cfg.max_lag,
        cfg.batch_size,
        callback,
        precision=cfg.precision,
    )
    best = [
        row for s in scores.values() for row in best_features(s, track_names, cfg.top, cfg.rank_by)
    ]
    summary = layer_summary(scores, best, members)
    track_rows = track_table(best, tracks, track_names, counts)
    result = CorrelateResult(scores, track_names, best, summary, track_rows, tracks)
    if out_dir is None:
        return result
    meta = {
        "config": {**cfg.to_dict(), "layers": layers},
        "model": encoder.model_id,
        "saes": {
            str(layer): {"id": s.sae_id, "path": str(found[layer])} for layer, s in saes.items()
        },
        "regions": len(records),
        "tokens": counts.tokens,
        "alignment": ALIGNMENT,
        "ncc": NCC,
        "ranking": f"per track and layer, the top {cfg.top} features by {cfg.rank_by} "
        "(signed, highest first; NaN = constant feature or track, never ranked)",
        "subsets": {
            name: {"pattern": cfg.subsets.get(name), "tracks": held}
            for name, held in members.items()
        },
        "absent_chromosomes": check.absent_chromosomes,
        "tracks_without_regions": idle,
    }
    result.outputs = write_tables(out_dir, best, summary, track_rows, meta)
    if plot:
        from hsg.correlate.plots import plot_best_scores

        result.outputs.plot = plot_best_scores(best, members, out_dir / "best_scores_by_layer.png")
    return result
