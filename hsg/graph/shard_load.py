"""`hsg load --online`: activation shards into a running database through `GraphWriter`.

The same statements `hsg ingest` sends (one transaction per `write_batch` sequences, the
ENCODED_BY guard, HAS_FEATURE aggregated by the server), from several threads. Thread t
loads the shards i with i % threads == t: a sequence id lives in exactly one shard (repeats
of it only add labels, which MERGE), so the threads write disjoint sequences and never wait
on one another's activation writes. Sequences already encoded by the SAE are sent as labels
only, so a load killed half-way resumes, and loading a set twice changes nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import neo4j

from hsg.graph.shard_rows import sequence_writes
from hsg.graph.writer import GraphWriter, WriteStats
from hsg.shards.reader import ShardSet


@dataclass
class LoadSummary:
    run_id: str
    mode: str
    shards: int = 0
    sequences: int = 0
    sequences_encoded: int = 0
    sequences_skipped: int = 0
    activations: int = 0
    nodes_created: int = 0
    relationships_created: int = 0
    threads: int = 1
    seconds: float = 0.0
    import_seconds: float = 0.0  # bulk: the importer alone
    counts_before: dict[str, int] = field(default_factory=dict)
    counts_after: dict[str, int] = field(default_factory=dict)

    @property
    def relationships_per_second(self) -> float:
        return self.relationships_created / self.seconds if self.seconds else 0.0


def register_run(writer: GraphWriter, shard_set: ShardSet, run: dict) -> None:
    """Model, SAE, feature dictionary and run node from the manifest, as `run_ingest` does."""
    m = shard_set.manifest
    writer.register(model=m.model, sae=m.sae, d_sae=int(m.sae["d_sae"]), run=run)


def load_online(
    shard_set: ShardSet,
    driver: neo4j.Driver,
    database: str,
    run: dict,
    threads: int = 2,
    write_batch: int = 256,
    progress: Callable[[int], None] | None = None,
) -> LoadSummary:
    """Write every shard of a validated set; `run` is the IngestRun node's properties."""
    manifest = shard_set.manifest
    summary = LoadSummary(run_id=run["id"], mode="online", threads=threads)
    writer = GraphWriter(driver, database, manifest.sae["id"], run["id"])
    started = time.perf_counter()
    summary.counts_before = writer.counts()
    register_run(writer, shard_set, run)
    stats = WriteStats()
    lock = threading.Lock()
    failed = threading.Event()
    errors: list[BaseException] = []
    planned = [0]

    def work(part: int) -> None:
        try:
            for index in range(part, manifest.shards, threads):
                if failed.is_set():
                    return
                shard = shard_set.read(index)
                writes = sequence_writes(shard.sequences, shard.activations, shard.annotations)
                for start in range(0, len(writes), write_batch):
                    chunk = writes[start : start + write_batch]
                    todo = [w.id for w in chunk if w.activations is not None]
                    done = writer.encoded_ids(todo) if todo else set()
                    for w in chunk:
                        if w.id in done:
                            w.activations = None  # stored by an earlier load: labels only
                    result = writer.write_batch(chunk)
                    with lock:
                        stats.merge(result)
                        planned[0] += len(todo) - len(done)
                        summary.sequences_skipped += len(done)
                    if progress is not None:
                        progress(len(chunk))
                with lock:
                    summary.shards += 1
                    summary.sequences += shard.sequences.num_rows
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failed.set()
            with lock:
                errors.append(exc)

    pool = [
        threading.Thread(target=work, args=(t,), name=f"hsg-load-{t}", daemon=True)
        for t in range(max(1, threads))
    ]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    summary.seconds = time.perf_counter() - started
    if errors:
        _finish(writer, summary, status="failed", error=errors[0])
        raise errors[0]
    summary.nodes_created = stats.nodes_created
    summary.relationships_created = stats.relationships_created
    summary.sequences_encoded = stats.sequences_encoded
    summary.sequences_skipped += planned[0] - stats.sequences_encoded
    summary.activations = stats.activations
    summary.counts_after = writer.counts()
    _finish(writer, summary, status="finished")
    return summary


def _finish(
    writer: GraphWriter, summary: LoadSummary, status: str, error: BaseException | None = None
) -> None:
    from datetime import datetime, timezone

    props = {
        "status": status,
        "finished": datetime.now(timezone.utc).isoformat(),
        "sequences_read": summary.sequences,
        "sequences_encoded": summary.sequences_encoded,
        "sequences_skipped": summary.sequences_skipped,
        "activations": summary.activations,
        "seconds": round(summary.seconds, 3),
    }
    if error is not None:
        props["error"] = f"{type(error).__name__}: {error}"[:2000]
        try:
            writer.finish(props)
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
        return
    writer.finish(props)
