"""Feature activity against regulatory tracks, per layer (the study's correlation baseline)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hsg.api._load import Connection, PathLike

if TYPE_CHECKING:
    from hsg.correlate.run import CorrelateResult


def correlate(
    regions: PathLike,
    tracks: PathLike,
    model: PathLike,
    sae_dir: PathLike,
    *,
    out: PathLike | None = None,
    layers: Sequence[int] | None = None,
    max_lag: int = 5,
    top: int = 10,
    rank_by: str = "pearson",
    subsets: Mapping[str, str] | None = None,
    batch_size: int = 32,
    precision: str = "float64",
    fmt: str | None = None,
    reference: PathLike | None = None,
    device: str | None = None,
    allow_model_mismatch: bool = False,
    plot: bool = True,
    connection: Connection | None = None,
    warn: Callable[[str], None] = lambda _msg: None,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> CorrelateResult:
    """Pearson r and lagged NCC between every SAE feature and every BED track, per layer.

    ``sae_dir`` holds one SAE per layer (each checked against ``model`` with
    `check_compatible`). With ``out`` the tables (TSV, Parquet, JSON) and the plot are
    written there; with ``connection`` the best features are also stored as
    ``(:Feature)-[:CORRELATES]->(:Annotation)`` (``result.graph`` says how many, and how
    many rows had no Feature in the graph). ``warn`` receives one-line warnings.
    """
    from hsg.correlate.run import CorrelateConfig, correlation_rows, run_correlate
    from hsg.correlate.tracks import TRACK_KIND
    from hsg.models.encoder import check_device

    cfg = CorrelateConfig(
        regions=str(regions),
        tracks=str(tracks),
        model=str(model),
        sae_dir=str(sae_dir),
        layers=list(layers) if layers else None,
        max_lag=max_lag,
        top=top,
        rank_by=rank_by,
        subsets=dict(subsets or {}),
        batch_size=batch_size,
        precision=precision,
        fmt=fmt,
        reference=str(reference) if reference else None,
        device=check_device(device),
        allow_model_mismatch=allow_model_mismatch,
    )

    def start(total: int, n_layers: int):
        if progress is None:
            return None
        stage = f"correlating {n_layers} layer(s)"
        return lambda n: progress(stage, n, total)

    result = run_correlate(
        cfg, Path(out) if out is not None else None, warn=warn, progress=start, plot=plot
    )
    if connection is not None:
        from hsg.graph.analysis_writes import write_correlations

        result.graph = write_correlations(
            connection.driver,
            connection.database,
            correlation_rows(result.best, result.scores, result.tracks),
            [result.tracks.annotation_id(t) for t in result.track_names],
            kind=TRACK_KIND,
            source=result.tracks.source,
            rank_by=rank_by,
            max_lag=max_lag,
        )
    return result
