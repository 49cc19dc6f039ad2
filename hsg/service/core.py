"""The service's state: the loaded pairs, the database, the jobs; what the routes call.

Everything a route does is here, as plain methods raising `ServiceError` (status + the same
message the CLI prints), so `app.py` stays a table of routes. Jobs run through
`hsg.api.ingest` with the pairs loaded once at start, their input validated first by
`hsg.api.validate_regions`: the same code path as `hsg ingest`.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hsg import api
from hsg.graph import jobs as store
from hsg.service.auth import load_or_create_token, service_id
from hsg.service.config import PairConfig, ServiceConfig
from hsg.service.jobs import (
    CANCELLED,
    FAILED,
    FINAL,
    FINISHED,
    QUEUED,
    RESUMABLE,
    Job,
    JobOptions,
    JobQueue,
)

log = logging.getLogger(__name__)
PROGRESS_EVERY = 1.0  # seconds between progress writes to the job's node


class ServiceError(Exception):
    """An HTTP status and the message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class LoadedPair:
    cfg: PairConfig
    encoder: Any
    sae: Any
    layer: int


class Service:
    def __init__(self, config: ServiceConfig, connection: api.Connection) -> None:
        self.config = config
        self.connection = connection
        self.state_dir = Path(config.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.uploads = self.state_dir / "uploads"
        self.token = load_or_create_token(self.state_dir)
        self.id = service_id(self.state_dir)
        self.pairs: dict[str, LoadedPair] = {}
        self.queue = JobQueue(self._run_job, on_cancel=self._cancelled_before_start)
        self.sequences_done = 0  # since start, every job: the counters of /metrics
        self.relationships_written = 0
        self.started = time.time()
        self._stopping = threading.Event()  # shutdown: the running job stops, to resume later

    # ------------------------------------------------------------------ start
    def load(self, log_fn=lambda _m: None) -> None:
        """Load every pair once (checked with `check_compatible`) on the service's device."""
        for pair in self.config.pairs:
            log_fn(f"loading {pair.name}: {pair.model} + {pair.sae}")
            sae = api.load_sae(pair.sae, self.config.device)
            encoder = api.load_encoder(pair.model, device=str(sae.device), dtype=self.config.dtype)
            compat = api.check_compatible(
                encoder, sae, pair.layer, allow_model_mismatch=pair.allow_model_mismatch
            )
            self.pairs[pair.name] = LoadedPair(pair, encoder, sae, compat.layer)

    def recover(self) -> int:
        """List this service's past jobs from the graph and queue the interrupted ones
        again, oldest first; returns how many were queued."""
        queued = 0
        for props in store.list_jobs(self.driver, self.database, self.id):
            job = _job_from_node(props)
            if job.status in RESUMABLE:
                if job.upload_dir and not Path(job.options.input).exists():
                    job.status, job.error = FAILED, "the uploaded input was lost on restart"
                    self._persist(job, status=FAILED, error=job.error)
                else:
                    job.status = QUEUED
                    queued += 1
            self.queue.add(job)
        return queued

    def start(self) -> None:
        self.queue.start()

    def close(self, timeout: float = 60.0) -> None:
        """Stop the running job at its next batch boundary, marked to resume on the next
        start (a shutdown is not a cancel), and wait for it up to `timeout` seconds."""
        self._stopping.set()
        self.queue.stop(timeout=timeout)

    @property
    def driver(self):
        return self.connection.driver

    @property
    def database(self) -> str:
        return self.connection.database

    # ------------------------------------------------------------------- jobs
    def pair(self, name: str | None) -> LoadedPair:
        try:
            return self.pairs[self.config.pair(name).name]
        except (KeyError, ValueError) as exc:
            raise ServiceError(400, str(exc).strip('"')) from exc

    def new_job_dir(self, job_id: str) -> Path:
        path = self.uploads / job_id
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def submit(self, job_id: str, options: JobOptions, upload_dir: Path | None) -> Job:
        """Validate the whole input as `hsg ingest` does, then store and queue the job.

        Any error here leaves nothing in the graph and removes the upload."""
        try:
            try:
                options.check()
                pair = self.pair(options.sae)
                options.sae = pair.cfg.name
                if options.reference is not None:
                    options.reference = self.config.reference(options.reference)
                if not Path(options.input).is_file():
                    raise ServiceError(400, f"no such input file on the service: {options.input}")
                for path in options.annotations:
                    if not Path(path).is_file():
                        raise ServiceError(400, f"no such annotation file on the service: {path}")
                total = api.validate_regions(self._records(options), pair.encoder, options.input)
            except ServiceError:
                raise
            except (ValueError, KeyError, FileNotFoundError) as exc:
                message = str(exc).strip('"') if isinstance(exc, KeyError) else str(exc)
                if upload_dir is not None:  # the client's file name, not the service's path
                    for path in (options.input, *options.annotations):
                        message = message.replace(path, Path(path).name.split("-", 1)[-1])
                prefix = "bad input: " if type(exc).__name__ == "InputError" else ""
                raise ServiceError(400, prefix + message) from exc
        except ServiceError:
            if upload_dir is not None:
                shutil.rmtree(upload_dir, ignore_errors=True)
            raise
        job = Job(
            id=job_id,
            options=options,
            submitted=datetime.now(timezone.utc).isoformat(),
            total=total,
            upload_dir=str(upload_dir) if upload_dir else None,
        )
        store.create_job(self.driver, self.database, job.id, _node_props(job, self.id))
        self.queue.add(job)
        return job

    def _records(self, options: JobOptions):
        """The records `hsg.api.ingest` reads for these options (tiled the same way)."""
        return api.iter_regions(
            options.input,
            fmt=options.fmt,
            reference=options.reference,
            label=options.label,
            label_column=options.label_column,
            window=options.window,
            stride=options.stride,
        )

    def job(self, job_id: str) -> Job:
        job = self.queue.get(job_id)
        if job is None:
            raise ServiceError(404, f"no job {job_id}")
        return job

    def cancel(self, job_id: str) -> Job:
        self.job(job_id)
        return self.queue.cancel(job_id)  # type: ignore[return-value]

    def _cancelled_before_start(self, job: Job) -> None:
        self._persist(job, status=CANCELLED)
        self._remove_upload(job)

    def _run_job(self, job: Job) -> None:
        """The worker: `hsg.api.ingest` on the loaded pair, progress on the job's node."""
        from hsg.ingest.pipeline import IngestCancelled

        pair = self.pairs[job.options.sae or ""]
        opts = job.options
        job.done = 0
        last = [0.0]

        def progress(stage: str, n: int, _total) -> None:
            job.done += n
            self.sequences_done += n
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY:
                last[0] = now
                self._persist(job, sequences_done=job.done)

        try:
            summary = api.ingest(
                opts.input,
                pair.encoder,
                pair.sae,
                connection=self.connection,
                layer=pair.layer,
                fmt=opts.fmt,
                reference=opts.reference,
                label=opts.label,
                label_column=opts.label_column,
                annotations=opts.annotations,
                g4=opts.g4,
                jaspar=opts.jaspar,
                jaspar_pvalue=opts.jaspar_pvalue,
                top_k=opts.top_k,
                min_activation=opts.min_activation,
                batch_size=opts.batch_size,
                write_batch=opts.write_batch,
                window=opts.window,
                stride=opts.stride,
                validate=False,  # validated when it was accepted
                allow_model_mismatch=pair.cfg.allow_model_mismatch,
                progress=progress,
                run_id=job.id,
                should_stop=lambda: job.cancel.is_set() or self._stopping.is_set(),
            )
        except IngestCancelled:
            if job.cancel.is_set():
                job.status = CANCELLED  # the pipeline marked the node
                self._persist(job, sequences_done=job.done)
            else:  # the service is stopping: the next start resumes the job
                job.status = QUEUED
                self._persist(job, status="interrupted", sequences_done=job.done)
        except Exception as exc:
            job.status, job.error = FAILED, f"{type(exc).__name__}: {exc}"
            self._persist(job, status=FAILED, error=job.error[:2000], sequences_done=job.done)
        else:
            job.summary = asdict(summary)
            job.status = FINISHED
            self.relationships_written += summary.relationships_created
            self._persist(job, summary=json.dumps(job.summary), sequences_done=job.done)
        finally:
            if job.status in FINAL:
                self._remove_upload(job)

    def _persist(self, job: Job, **props: Any) -> None:
        """Best effort: a lost database must not kill the worker (the job's own run reports
        it; a restarted service reads what was stored)."""
        try:
            store.update_job(self.driver, self.database, job.id, props)
        except Exception:  # noqa: BLE001
            log.warning("could not record job %s on its node", job.id, exc_info=True)

    def _remove_upload(self, job: Job) -> None:
        if job.upload_dir:
            shutil.rmtree(job.upload_dir, ignore_errors=True)

    # ----------------------------------------------------------------- encode
    def encode(
        self,
        sequences: list[dict],
        sae: str | None,
        top_k: int,
        min_activation: float,
    ) -> list[dict]:
        """Top features per token of a few sequences, nothing written (`POST /encode`)."""
        from hsg.ingest.encode import encode_batch
        from hsg.regions.records import InputError, build_record

        if not sequences:
            raise ServiceError(400, "no sequences given")
        if len(sequences) > self.config.max_encode_sequences:
            raise ServiceError(
                413,
                f"{len(sequences)} sequences: POST /encode takes at most "
                f"{self.config.max_encode_sequences}; submit a job for more",
            )
        if top_k < 1:
            raise ServiceError(400, "top_k must be at least 1")
        pair = self.pair(sae)
        try:
            records = [
                build_record(
                    where=f"sequence {i + 1}",
                    sequence=str(s.get("sequence", "")),
                    id=str(s.get("id") or f"seq{i + 1}"),
                )
                for i, s in enumerate(sequences)
            ]
            api.validate_regions(records, pair.encoder, "request")
        except (InputError, ValueError) as exc:
            raise ServiceError(400, f"bad input: {exc}") from exc
        rows = encode_batch(pair.encoder, pair.sae, records, pair.layer, top_k, min_activation)
        return [
            {
                "id": r.id,
                "activations": [
                    {"feature": f, "position": p, "token": t, "activation": a, "rank": k}
                    for f, p, t, a, k in seq_rows
                ],
            }
            for r, seq_rows in zip(records, rows, strict=True)
        ]

    # ----------------------------------------------------------------- health
    def health(self) -> dict[str, Any]:
        try:
            self.driver.verify_connectivity()
            neo4j_ok = True
        except Exception:  # noqa: BLE001 - the answer is "not reachable"
            neo4j_ok = False
        device = next(iter(self.pairs.values())).encoder.device if self.pairs else None
        return {
            "status": "ok" if neo4j_ok and self.pairs else "degraded",
            "models_loaded": sorted(self.pairs),
            "device": str(device) if device is not None else None,
            "neo4j": neo4j_ok,
        }


def _node_props(job: Job, service: str) -> dict[str, Any]:
    return {
        "service": service,
        "status": QUEUED,
        "submitted": job.submitted,
        "job_options": job.options.to_json(indent=None),
        "input": job.options.input,
        "sequences_total": job.total,
        "sequences_done": 0,
        "upload_dir": job.upload_dir,
    }


def _job_from_node(props: dict[str, Any]) -> Job:
    job = Job(
        id=props["id"],
        options=JobOptions.from_json(props.get("job_options") or "{}"),
        submitted=props.get("submitted") or "",
        status=props.get("status") or FAILED,
        total=props.get("sequences_total"),
        done=props.get("sequences_done") or 0,
        error=props.get("error"),
        upload_dir=props.get("upload_dir"),
    )
    if props.get("summary"):
        job.summary = json.loads(props["summary"])
    return job
