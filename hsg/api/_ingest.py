"""Regions → encoder → SAE → Neo4j, as one call."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hsg.api._load import Connection, PathLike, connect, iter_regions, load_encoder, load_sae

if TYPE_CHECKING:
    from hsg.ingest.pipeline import IngestSummary
    from hsg.models.encoder import Encoder
    from hsg.regions.records import SequenceRecord
    from hsg.sae.model import SparseAutoencoder

# progress(stage, n_done_since_last_call, total or None); stages: "validating", "ingesting"
Progress = Callable[[str, int, "int | None"], None]


def validate_regions(
    records: Iterable[SequenceRecord],
    encoder: Encoder,
    source: str = "input",
    progress: Progress | None = None,
) -> int:
    """Read and tokenize every record before anything is written; returns how many.

    Reading checks format, coordinates, bases and key lengths; tokenizing checks that every
    sequence fits the model; an id given twice must name the same sequence (its labels are
    merged). So each of these fails here instead of after earlier batches were stored.
    """
    from hsg.ingest.pipeline import SeenIds
    from hsg.models.errors import SequenceTooLongError
    from hsg.regions.records import InputError

    n = 0
    seen = SeenIds()
    for record in records:
        seen.add(record)  # one id, two sequences: both rows named, before any write
        try:
            encoder.tokenizer.encode(record.sequence, name=record.id)
        except SequenceTooLongError as exc:
            most = 6 * (encoder.max_tokens - 1)
            raise InputError(
                f"{source}: sequence {record.id!r} is too long for {encoder.model_id} ({exc}); "
                f"tile it into windows with --window SIZE [--stride S] (window=, stride= in "
                f"hsg.api.ingest), SIZE at most about {most} bases for this model"
            ) from exc
        n += 1
        if progress is not None:
            progress("validating", 1, None)
    return n


def ingest(
    source: PathLike | Sequence[SequenceRecord],
    model: PathLike | Encoder,
    sae: PathLike | SparseAutoencoder,
    *,
    connection: Connection | None = None,
    dry_run: bool = False,
    layer: int | None = None,
    fmt: str | None = None,
    reference: PathLike | None = None,
    label: str | None = None,
    label_column: int | str | None = None,
    annotations: Sequence[PathLike] = (),
    g4: bool = True,
    jaspar: bool = False,
    jaspar_pvalue: float = 1e-4,
    top_k: int = 1,
    min_activation: float = 0.0,
    batch_size: int = 64,
    write_batch: int = 256,
    window: int | None = None,
    stride: int | None = None,
    device: str | None = None,
    validate: bool = True,
    allow_model_mismatch: bool = False,
    progress: Progress | None = None,
    run_id: str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> IngestSummary:
    """Encode regions and write them into Neo4j; what `hsg ingest` runs.

    ``source`` is a regions file (BED with ``reference``, FASTA, TSV) or a list of
    `SequenceRecord`. ``model`` and ``sae`` are paths or loaded objects; they are checked
    against each other (`check_compatible`) before any input is read. Without
    ``connection``, one is opened from the environment (and closed again); ``dry_run``
    encodes and annotates without a database. ``window`` tiles regions longer than that
    many bases into windows (``stride`` apart, default ``window``), each with its own id and
    coordinates. The whole input is validated before the first write unless
    ``validate=False``. Re-running is idempotent and resumes a killed run. ``run_id`` and
    ``should_stop`` are for a service's jobs: reuse a job's (:IngestRun) node, and stop at
    the next batch boundary (`IngestCancelled`) when ``should_stop()`` turns true.
    """
    from hsg.ingest.pipeline import IngestConfig, run_ingest
    from hsg.sae.compat import check_compatible

    if top_k < 1 or batch_size < 1 or write_batch < 1:
        raise ValueError("top_k, batch_size and write_batch must be at least 1")
    sae_obj = load_sae(sae, device)
    encoder = load_encoder(model, device=str(sae_obj.device))
    compat = check_compatible(encoder, sae_obj, layer, allow_model_mismatch=allow_model_mismatch)
    is_file = isinstance(source, (str, Path))
    cfg = IngestConfig(
        input=str(source) if is_file else "<records>",
        model=str(model) if isinstance(model, (str, Path)) else encoder.model_id,
        sae=str(sae) if isinstance(sae, (str, Path)) else str(sae_obj.source or sae_obj.sae_id),
        layer=compat.layer,
        fmt=fmt,
        reference=str(reference) if reference else None,
        label=label,
        label_column=None if label_column is None else str(label_column),
        annotations=[str(a) for a in annotations],
        g4=g4,
        jaspar=jaspar,
        jaspar_pvalue=jaspar_pvalue,
        top_k=top_k,
        min_activation=min_activation,
        batch_size=batch_size,
        write_batch=write_batch,
        window=window,
        stride=stride,
        device=str(sae_obj.device),
        dry_run=dry_run,
    )

    def records() -> Iterable[SequenceRecord]:
        if is_file:
            return iter_regions(
                source,  # type: ignore[arg-type]
                fmt=fmt,
                reference=reference,
                label=label,
                label_column=label_column,
                window=window,
                stride=stride,
            )
        found: list[SequenceRecord] = list(source)  # type: ignore[arg-type]
        if window is not None:
            from hsg.regions.windows import tile_records

            return tile_records(found, window, stride)
        return found

    total = validate_regions(records(), encoder, cfg.input, progress) if validate else None
    own = connection is None and not dry_run
    conn = connect() if own else connection
    try:
        return run_ingest(
            cfg,
            records(),
            encoder,
            sae_obj,
            driver=None if dry_run or conn is None else conn.driver,
            database=conn.database if conn is not None else "neo4j",
            progress=(lambda n: progress("ingesting", n, total)) if progress else None,
            run_id=run_id,
            should_stop=should_stop,
        )
    finally:
        if own and conn is not None:
            conn.close()
