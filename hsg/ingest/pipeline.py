"""Regions → encoder layer → SAE → top-k features per token → Neo4j.

The input is streamed in batches; the encoder works on one batch while the writer thread
stores the previous one. Sequences that already carry their activations for this SAE are
not encoded again (only new labels are added), so the same command resumes a killed run
and a repeated run changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from hsg.config import JsonConfig
from hsg.db.errors import DatabaseError
from hsg.db.runs import process_marker
from hsg.graph.writer import BackgroundWriter, GraphWriter, SequenceWrite, WriteStats
from hsg.ingest.encode import activation_rows, encode_batch, top_features  # noqa: F401 (re-exported)
from hsg.ingest.threads import available_cores, encoder_threads, server_is_local, set_torch_threads
from hsg.iterutils import batched
from hsg.regions.records import InputError, SequenceRecord
from hsg.regions.sources import annotate_all, build_sources


@dataclass
class IngestConfig(JsonConfig):
    """The parameters of one ingest run; stored on its (:IngestRun) node for provenance."""

    input: str
    model: str
    sae: str
    layer: int | None = None
    fmt: str | None = None
    reference: str | None = None
    label: str | None = None
    label_column: str | None = None
    annotations: list[str] = field(default_factory=list)
    g4: bool = True
    jaspar: bool = False
    jaspar_pvalue: float = 1e-4
    top_k: int = 1
    min_activation: float = 0.0
    batch_size: int = 64
    write_batch: int = 256
    window: int | None = None
    stride: int | None = None
    device: str | None = None
    threads: int | None = None  # the CPU encoder's torch threads; None: hsg.ingest.threads
    dry_run: bool = False


@dataclass
class IngestSummary:
    run_id: str
    sequences_read: int = 0
    sequences_encoded: int = 0
    sequences_skipped: int = 0
    activations: int = 0
    annotation_links: int = 0
    nodes_created: int = 0
    relationships_created: int = 0
    seconds: float = 0.0
    counts_before: dict[str, int] = field(default_factory=dict)
    counts_after: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0  # input rows repeating an earlier id (same sequence; labels merged)
    encoder_threads: int | None = None  # torch threads while encoding
    dry_run: bool = False

    @property
    def sequences_per_second(self) -> float:
        return self.sequences_read / self.seconds if self.seconds else 0.0

    @property
    def relationships_per_second(self) -> float:
        return self.relationships_created / self.seconds if self.seconds else 0.0


def sequence_props(record: SequenceRecord) -> dict:
    props = {"length": len(record.sequence), "gc": round(record.gc, 6), "sequence": record.sequence}
    for key in ("chrom", "start", "end", "strand"):
        value = getattr(record, key)
        if value is not None:
            props[key] = value
    return props


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run_ingest(
    cfg: IngestConfig,
    records: Iterable[SequenceRecord],
    encoder,
    sae,
    driver=None,
    database: str = "neo4j",
    progress: Callable[[int], None] | None = None,
    run_id: str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> IngestSummary:
    """Encode and write `records`. `driver` may be None only for a dry run.

    ``run_id`` reuses an (:IngestRun) node (a service resuming its job keeps its id);
    ``should_stop`` is asked at each batch boundary, and True ends the run with
    `IngestCancelled`, its node marked cancelled (what was written is whole batches)."""
    layer = cfg.layer if cfg.layer is not None else sae.cfg.layer
    sae.check_input(encoder.hidden_size)
    run_id = run_id or new_run_id()
    summary = IngestSummary(run_id=run_id, dry_run=cfg.dry_run)
    started = time.perf_counter()  # the summary's time includes loading the annotators
    sources = build_sources(
        annotations=cfg.annotations, g4=cfg.g4, jaspar=cfg.jaspar, jaspar_pvalue=cfg.jaspar_pvalue
    )

    writer = None
    background = None
    if not cfg.dry_run:
        writer = GraphWriter(driver, database, sae.sae_id, run_id)
        counts_before = writer.counts()
        writer.register(
            model={  # keyed by checkpoint hash: same-named directories stay apart
                "id": encoder.checkpoint_hash,
                "name": encoder.model_id,
                "version": encoder.version,
                "checkpoint_hash": encoder.checkpoint_hash,
                "num_layers": encoder.num_layers,
                "hidden_size": encoder.hidden_size,
            },
            sae={
                "id": sae.sae_id,
                "layer": layer,
                "d_in": sae.cfg.d_in,
                "d_sae": sae.cfg.d_sae,
                "architecture": sae.cfg.architecture,
                "config": json.dumps(sae.cfg.to_dict(), sort_keys=True, default=str),
            },
            d_sae=sae.cfg.d_sae,
            run={
                "id": run_id,
                "started": datetime.now(timezone.utc).isoformat(),
                "input": str(cfg.input),
                "input_sha256": file_sha256(cfg.input) if Path(cfg.input).is_file() else None,
                "parameters": cfg.to_json(indent=None),
                "hsg_version": _hsg_version(),
                "status": "running",
                **process_marker(),  # host and pid: `hsg db status` tells a stale run
            },
        )
        background = BackgroundWriter(writer)

    # what is already stored, read once (None: too many ids to hold; ask per batch)
    known = writer.encoded_snapshot() if writer is not None else set()
    threads = cfg.threads
    if threads is None and str(getattr(encoder, "device", "cpu")).startswith("cpu"):
        threads = encoder_threads(available_cores(), writer is not None and server_is_local(driver))
    restore_threads = set_torch_threads(threads)
    summary.encoder_threads = threads

    pending: list[SequenceWrite] = []
    seen = SeenIds()
    stats = WriteStats()
    try:
        for batch in batched(records, cfg.batch_size):
            if should_stop is not None and should_stop():
                raise IngestCancelled(f"run {run_id} cancelled")
            if background is not None:
                background.raise_if_failed()  # a lost server stops the run at once
            summary.sequences_read += len(batch)
            # one write per id: a repeated row with the same sequence adds its labels, one
            # with another sequence is an error (validation reports it before any write)
            unique: dict[str, SequenceRecord] = {}  # first seen in this batch
            repeats: dict[str, SequenceRecord] = {}  # first seen in an earlier batch
            labels: dict[str, list[str]] = {}
            for r in batch:
                names = labels.setdefault(r.id, [])
                names.extend(n for n in r.labels if n not in names)
                if seen.add(r):
                    unique[r.id] = r
                else:
                    summary.duplicates += 1
                    if r.id not in unique:
                        repeats.setdefault(r.id, r)
            if known is not None:
                done = {i for i in unique if i in known}
            else:
                done = writer.encoded_ids(list(unique))
            todo = [r for r in unique.values() if r.id not in done]
            summary.sequences_skipped += len(done)
            writes = {
                r.id: SequenceWrite(r.id, sequence_props(r), labels[r.id], None)
                for r in [*unique.values(), *repeats.values()]
            }
            if todo:
                encoded = encode_batch(encoder, sae, todo, layer, cfg.top_k, cfg.min_activation)
                for record, rows in zip(todo, encoded, strict=True):
                    writes[record.id].activations = rows
                    summary.activations += len(rows)
                summary.sequences_encoded += len(todo)
            # annotation links are MERGEd, so annotating stored sequences again is harmless
            # and lets a later run add a new annotation source to them
            first_rows = list(unique.values())
            for record, record_hits in zip(
                first_rows, annotate_all(sources, first_rows), strict=True
            ):
                writes[record.id].annotations = record_hits
                summary.annotation_links += len(record_hits)
            pending.extend(writes.values())
            if len(pending) >= cfg.write_batch:
                if background:
                    background.submit(pending)
                pending = []
            if progress:
                progress(len(batch))
        if pending and background:
            background.submit(pending)
        if background:
            stats = background.close()
        background = None
    except BaseException as exc:
        if writer is not None:
            _mark_failed(writer, exc, summary, started)
        raise
    finally:
        restore_threads()
        if background is not None:
            try:
                background.close()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
    summary.seconds = time.perf_counter() - started
    summary.nodes_created = stats.nodes_created
    summary.relationships_created = stats.relationships_created
    if writer is not None:
        # what this run wrote, not what it meant to: a concurrent run may have stored some
        # of the same sequences first (the writer's guard skipped them here)
        planned = summary.sequences_encoded
        summary.sequences_encoded = stats.sequences_encoded
        summary.sequences_skipped += planned - stats.sequences_encoded
        summary.activations = stats.activations
        summary.counts_after = writer.counts()
        writer.finish(
            {
                "status": "finished",
                "finished": datetime.now(timezone.utc).isoformat(),
                "sequences_read": summary.sequences_read,
                "sequences_encoded": summary.sequences_encoded,
                "sequences_skipped": summary.sequences_skipped,
                "duplicates": summary.duplicates,
                "activations": summary.activations,
                "seconds": round(summary.seconds, 3),
            }
        )
        summary.counts_before = counts_before
    return summary


class IngestCancelled(Exception):
    """A run stopped by its `should_stop` callback at a batch boundary."""


def new_run_id() -> str:
    """A run id that sorts by start time: `20260101T120000Z-1a2b3c4d`."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def _mark_failed(writer: GraphWriter, exc: BaseException, summary, started: float) -> None:
    """Record on the run's node that it did not finish, and why; best effort, since the
    database itself may be what failed (then `hsg db status` shows the run as stale)."""
    interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
    status = "cancelled" if isinstance(exc, IngestCancelled) else None
    if isinstance(exc, DatabaseError) and exc.connection_lost:
        return  # the server is gone: retrying to say so would only delay the error
    try:
        writer.finish(
            {
                "status": status or ("interrupted" if interrupted else "failed"),
                "finished": datetime.now(timezone.utc).isoformat(),
                "error": f"{type(exc).__name__}: {exc}"[:2000],
                "sequences_read": summary.sequences_read,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
    except Exception:  # noqa: BLE001 - the original error is the one to report
        pass


class SeenIds:
    """Every id of a run with a digest of its sequence, to merge or refuse repeats.

    Eight bytes per sequence (plus the id): a whole genome in 100 bp windows stays within a
    few GB; the Ray engine is the path past that.
    """

    def __init__(self) -> None:
        self._seen: dict[str, tuple[bytes, str | None]] = {}

    def add(self, record: SequenceRecord) -> bool:
        """True the first time an id is seen; False for a repeat of the same sequence;
        `InputError` naming both places for a repeat with another sequence."""
        digest = hashlib.blake2b(record.sequence.encode(), digest_size=8).digest()
        known = self._seen.get(record.id)
        if known is None:
            self._seen[record.id] = (digest, record.where)
            return True
        if known[0] != digest:
            first = known[1] or "an earlier row"
            here = record.where or "a later row"
            raise InputError(
                f"id {record.id!r} names two different sequences ({first} and {here}); "
                "ids must be unique, or repeat the same sequence"
            )
        return False


def _hsg_version() -> str:
    from hsg import __version__

    return __version__
