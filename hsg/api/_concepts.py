"""What features are: concept F1 against annotations, motifs against JASPAR, the atlas."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsg.api._load import Connection, PathLike

if TYPE_CHECKING:
    from hsg.atlas.build import AtlasSummary
    from hsg.concepts.run import ConceptRun, Inputs, MotifRun
    from hsg.db.settings import ConnectionSettings

Log = Callable[[str], None]


@contextmanager
def _graph(connection: Connection | ConnectionSettings | None) -> Iterator[Connection]:
    """The caller's connection, or one opened (and closed) here; driver errors become
    `DatabaseError`."""
    from neo4j.exceptions import Neo4jError, ServiceUnavailable

    from hsg.api._load import connection_for
    from hsg.db.connection import translate
    from hsg.db.settings import ConnectionSettings

    if isinstance(connection, Connection):
        conn, owned = connection, False
    else:
        settings = connection if connection is not None else ConnectionSettings.from_env()
        conn, owned = connection_for(settings), True
    try:
        yield conn
    except (Neo4jError, ServiceUnavailable) as exc:
        raise translate(exc, conn.settings) from exc
    finally:
        if owned:
            conn.close()


def _inputs(
    conn: Connection | None,
    sae: str | None,
    regions: PathLike | None,
    model: PathLike | None,
    sae_dir: PathLike | None,
    device: str | None,
    allow_model_mismatch: bool,
    log: Log | None,
    shards: PathLike | None = None,
) -> Inputs:
    from hsg.concepts.run import (
        ConceptError,
        inputs_from_encoding,
        inputs_from_graph,
        inputs_from_shards,
    )

    if shards is not None:
        if regions is not None:
            raise ConceptError("give shards or regions (a fresh encoding), not both")
        return inputs_from_shards(shards, log=log)
    fresh = [regions is not None, model is not None, sae_dir is not None]
    if any(fresh) and not all(fresh):
        raise ConceptError("a fresh encoding needs all of regions, model and sae_dir")
    if all(fresh):
        from hsg.api._load import load_encoder, load_sae, read_regions
        from hsg.sae.compat import check_compatible

        encoder = load_encoder(model, device=device)
        loaded = load_sae(sae_dir, device=device)
        check_compatible(encoder, loaded, allow_model_mismatch=allow_model_mismatch)
        records = read_regions(regions)
        if log:
            log(f"encoding {len(records)} regions")
        return inputs_from_encoding(records, encoder, loaded, sae_id=loaded.sae_id)
    if conn is None:
        raise ConceptError("activations come from the graph (a connection) or a fresh encoding")
    return inputs_from_graph(conn.driver, conn.database, sae, log=log)


def concepts(
    *,
    connection: Connection | ConnectionSettings | None = None,
    sae: str | None = None,
    bed: Sequence[PathLike] = (),
    jaspar: bool = False,
    jaspar_pvalue: float = 1e-4,
    graph_annotations: bool = True,
    thresholds: Sequence[float] | None = None,
    select_fraction: float = 0.5,
    seed: int = 0,
    top: int = 5,
    min_f1: float = 0.0,
    out: PathLike | None = None,
    plot: bool = True,
    write_graph: bool = True,
    regions: PathLike | None = None,
    model: PathLike | None = None,
    sae_dir: PathLike | None = None,
    shards: PathLike | None = None,
    device: str | None = None,
    allow_model_mismatch: bool = False,
    log: Log | None = None,
) -> ConceptRun:
    """Token-level precision, recall and F1 of every feature against every concept.

    Activations come from the graph's ACTIVATES of ``sae`` (default: the graph's only SAE),
    from the activation ``shards`` of the Ray engine (with their annotations), or from a
    fresh encoding of ``regions`` with ``model`` and ``sae_dir``. Concepts are the
    sequences' annotations in the graph (OVERLAPS, HAS_MOTIF), plus each ``bed`` file and a
    JASPAR scan when asked. The threshold of each pair and the ranking of features per
    concept use the *select* split; the reported scores are the *test* split's. With
    ``write_graph`` the ``top`` features of each concept (test F1 above ``min_f1``) replace
    the SAE's DETECTS.
    """
    from hsg.concepts.f1 import DEFAULT_THRESHOLDS, ConceptConfig
    from hsg.concepts.run import ConceptError, add_bed, add_jaspar, detects_rows, run_concepts

    try:
        config = ConceptConfig(
            thresholds=tuple(thresholds) if thresholds else DEFAULT_THRESHOLDS,
            select_fraction=select_fraction,
            seed=seed,
        )
    except ValueError as exc:
        raise ConceptError(str(exc)) from exc
    if top < 1:
        raise ConceptError("top must be at least 1")
    from_graph = regions is None and shards is None
    use_graph = from_graph or (write_graph and connection is not None)
    with _maybe_graph(connection, use_graph) as conn:
        inputs = _inputs(
            conn, sae, regions, model, sae_dir, device, allow_model_mismatch, log, shards
        )
        if not graph_annotations:
            inputs.intervals.clear()
        for path in bed:
            n = add_bed(inputs, path)
            if log:
                log(f"{Path(path).name}: {n} element overlaps")
        if jaspar:
            n = add_jaspar(inputs, jaspar_pvalue)
            if log:
                log(f"JASPAR scan: {n} motif hits")
        run = run_concepts(
            inputs,
            config,
            top=top,
            min_f1=min_f1,
            out=Path(out) if out is not None else None,
            plot=plot,
            log=log,
        )
        if write_graph and conn is not None:
            from hsg.graph.concept_writes import replace_detects

            run.written = replace_detects(
                conn.driver, conn.database, run.sae, detects_rows(run), run=run.run_id
            )
    return run


@contextmanager
def _maybe_graph(connection, wanted: bool) -> Iterator[Connection | None]:
    if not wanted:
        yield None
        return
    with _graph(connection) as conn:
        yield conn


def motifs(
    *,
    connection: Connection | ConnectionSettings | None = None,
    sae: str | None = None,
    features: Sequence[str] | None = None,
    targets: PathLike | None = None,
    min_activations: int = 20,
    seqlets: int = 100,
    flank: int = 6,
    max_qvalue: float = 0.05,
    release: str | None = None,
    out: PathLike | None = None,
    logos: bool = True,
    write_graph: bool = True,
    regions: PathLike | None = None,
    model: PathLike | None = None,
    sae_dir: PathLike | None = None,
    shards: PathLike | None = None,
    device: str | None = None,
    allow_model_mismatch: bool = False,
    log: Log | None = None,
) -> MotifRun:
    """Seqlets of each selected feature → PWM → Tomtom against JASPAR CORE (pyjaspar's
    bundled release). Features: ``features`` (ids or indices), the targets of a
    targets.json, else every feature with at least ``min_activations`` activations. With
    ``write_graph`` the matches at q ≤ ``max_qvalue`` replace those features' RESEMBLES."""
    from hsg.concepts.motifs import MotifConfig
    from hsg.concepts.run import (
        ConceptError,
        resembles_rows,
        run_motifs,
        select_features,
        targets_features,
    )
    from hsg.regions.motifs import JASPAR_KIND

    try:
        config = MotifConfig(seqlets=seqlets, flank=flank, max_qvalue=max_qvalue, release=release)
    except ValueError as exc:
        raise ConceptError(str(exc)) from exc
    wanted = list(features or [])
    if targets is not None:
        wanted += targets_features(targets)
    use_graph = (regions is None and shards is None) or (write_graph and connection is not None)
    with _maybe_graph(connection, use_graph) as conn:
        inputs = _inputs(
            conn, sae, regions, model, sae_dir, device, allow_model_mismatch, log, shards
        )
        columns = select_features(inputs.activations, wanted, min_activations)
        if not columns:
            raise ConceptError(
                f"no feature has {min_activations} activations; lower --min-activations"
            )
        run = run_motifs(
            inputs, columns, config, out=Path(out) if out is not None else None, logos=logos,
            log=log,
        )  # fmt: skip
        if write_graph and conn is not None:
            from hsg.graph.concept_writes import replace_resembles

            motif_rows, rows = resembles_rows(run, max_qvalue)
            run.written = replace_resembles(
                conn.driver,
                conn.database,
                run.sae,
                [inputs.activations.feature_ids[c] for c in columns],
                motif_rows,
                rows,
                run=run.run_id,
                release=run.release,
                motif_kind=JASPAR_KIND,
            )
    return run


def atlas(
    out: PathLike,
    *,
    connection: Connection | ConnectionSettings | None = None,
    sae: str | None = None,
    top_sequences: int = 5,
    steering: Sequence[PathLike] = (),
    log: Log | None = None,
) -> AtlasSummary:
    """A static HTML feature atlas from the graph (index + one card per feature) in ``out``:
    open ``out/index.html`` in any browser, no server needed. ``steering``: results of
    `steer` (its ``metrics.json`` or output folder), shown on the cards of their targets;
    each must be of the atlas's SAE, else `SteeringResultsError` and nothing is written."""
    from hsg.atlas.build import build_atlas
    from hsg.atlas.steering import read_all
    from hsg.concepts.run import resolve_sae

    runs = read_all(list(steering))  # a malformed file fails before the graph is read
    with _graph(connection) as conn:
        sae_id = resolve_sae(conn.driver, conn.database, sae)
        return build_atlas(
            conn.driver,
            conn.database,
            sae_id,
            Path(out),
            top_sequences=top_sequences,
            log=log,
            steering=runs,
        )


__all__: list[Any] = ["atlas", "concepts", "motifs"]
