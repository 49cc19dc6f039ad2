"""Jobs and their FIFO queue: one worker thread per device runs one job at a time.

A job's options are the options of `hsg ingest` (a `JobOptions`, stored as JSON on its
node); its life is queued → running → finished | failed | cancelled. The queue only orders
and runs; what running means (`hsg.api.ingest` with the loaded models) is the callable the
service hands it, so the queue is testable without a model or a database.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hsg.config import JsonConfig

log = logging.getLogger(__name__)

QUEUED, RUNNING, FINISHED, FAILED, CANCELLED = (
    "queued",
    "running",
    "finished",
    "failed",
    "cancelled",
)
STATES = (QUEUED, RUNNING, FINISHED, FAILED, CANCELLED)
FINAL = (FINISHED, FAILED, CANCELLED)
RESUMABLE = (QUEUED, RUNNING, "interrupted")  # what a restarted service runs again


@dataclass
class JobOptions(JsonConfig):
    """The options of `hsg ingest` a client may send; paths are on the service's machine."""

    input: str = ""
    sae: str | None = None  # the pair's name; None: the service's first pair
    fmt: str | None = None
    reference: str | None = None  # a configured reference name (resolved at submission)
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

    def check(self) -> None:
        """The same limits `hsg ingest` puts on its options."""
        if self.top_k < 1 or self.batch_size < 1 or self.write_batch < 1:
            raise ValueError("top_k, batch_size and write_batch must be at least 1")
        if self.window is not None and self.window < 1:
            raise ValueError("window must be at least 1")
        if self.stride is not None and (self.window is None or self.stride < 1):
            raise ValueError("stride needs a window, and must be at least 1")
        if self.fmt not in (None, "bed", "fasta", "tsv"):
            raise ValueError(f"fmt must be bed, fasta or tsv, got {self.fmt!r}")


@dataclass
class Job:
    id: str
    options: JobOptions
    submitted: str
    status: str = QUEUED
    total: int | None = None  # sequences, known from validation
    done: int = 0  # sequences read by the run (skipped ones included)
    error: str | None = None
    summary: dict | None = None  # the run's IngestSummary, once finished
    upload_dir: str | None = None  # removed when the job ends
    started_at: float | None = None  # monotonic, for the rate
    ended_at: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def rate(self) -> float:
        if self.started_at is None:
            return 0.0
        elapsed = (self.ended_at or time.monotonic()) - self.started_at
        return self.done / elapsed if elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """What `GET /jobs/{id}` answers."""
        return {
            "id": self.id,
            "status": self.status,
            "sae": self.options.sae,
            "submitted": self.submitted,
            "cancel_requested": self.cancel.is_set() and self.status not in FINAL,
            "progress": {
                "done": self.done,
                "total": self.total,
                "sequences_per_second": round(self.rate, 2),
            },
            "counts": _counts(self.summary),
            "summary": self.summary,
            "error": self.error,
            "options": self.options.to_dict(),
        }


def _counts(summary: dict | None) -> dict[str, int] | None:
    if summary is None:
        return None
    keys = ("sequences_read", "sequences_encoded", "sequences_skipped", "activations",
            "annotation_links", "nodes_created", "relationships_created")  # fmt: skip
    return {k: summary[k] for k in keys if k in summary}


class JobQueue:
    """First in, first out; one worker thread runs `run(job)` for one job at a time.

    `run` owns the job's status while it runs (it marks the end state); the queue marks
    jobs cancelled before they start. A job that raises out of `run` is logged and marked
    failed, so one bad job never stops the worker."""

    def __init__(self, run: Callable[[Job], None], on_cancel: Callable[[Job], None] | None = None):
        self._run = run
        self._on_cancel = on_cancel
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self.jobs: dict[str, Job] = {}  # every job known, in submission order
        self.current: Job | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="hsg-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Start no other job; wait up to `timeout` for the current one to return."""
        self._closing = True
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def add(self, job: Job) -> None:
        """Know a job; queue it when it is queued (a past job is only listed)."""
        with self._lock:
            self.jobs[job.id] = job
        if job.status == QUEUED:
            self._queue.put(job)

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def depth(self) -> int:
        return sum(1 for j in list(self.jobs.values()) if j.status == QUEUED)

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job now, a running one at its next batch boundary."""
        job = self.jobs.get(job_id)
        if job is None or job.status in FINAL:
            return job
        with self._lock:
            job.cancel.set()
            if job.status == QUEUED:
                job.status = CANCELLED
                job.ended_at = time.monotonic()
                cancelled_now = True
            else:
                cancelled_now = False
        if cancelled_now and self._on_cancel is not None:
            self._on_cancel(job)
        return job

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None or self._closing:
                return
            with self._lock:
                if job.status != QUEUED:  # cancelled while it waited
                    continue
                job.status = RUNNING
                job.started_at = time.monotonic()
                self.current = job
            try:
                self._run(job)
            except Exception as exc:  # noqa: BLE001 - the worker outlives a bad job
                log.exception("job %s failed", job.id)
                job.status, job.error = FAILED, f"{type(exc).__name__}: {exc}"
            finally:
                job.ended_at = time.monotonic()
                self.current = None
