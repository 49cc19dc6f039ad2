"""`hsg ingest --engine ray`: encoding on a Ray cluster (or a local Ray), into activation shards.

The driver reads the input once (readers are sequential: BED + reference, FASTA, TSV), gives
every record its place in a shard of `shard_size` records and merges repeated ids exactly as
`run_ingest` does (a repeat carries its labels only). Ray Data then validates the shards in
parallel tasks (every sequence tokenized: too long, bad bases …) before any shard is written,
and runs `map_batches` over an actor pool whose actors each hold the encoder and the SAE (one
GPU per actor when the cluster has GPUs) and write whole shards (`hsg.shards.writer`).

Shards already complete in the folder are not sent to the pool again, so re-running the same
command after a kill finishes the set; a folder made with another model, SAE, input or
parameters is refused (its manifest differs) before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hsg.config import JsonConfig
from hsg.graph.shard_rows import annotation_row, sequence_row
from hsg.ingest.encode import encode_batch
from hsg.ingest.pipeline import IngestConfig, SeenIds, file_sha256, sequence_props
from hsg.iterutils import batched
from hsg.regions.records import InputError, SequenceRecord
from hsg.shards.errors import ShardError
from hsg.shards.manifest import MANIFEST, Manifest, read_manifest, write_manifest
from hsg.shards.reader import ShardSet
from hsg.shards.writer import write_shard


@dataclass
class RayOptions(JsonConfig):
    """How the Ray engine runs; none of these change the shards it writes."""

    address: str | None = None  # a running cluster ("auto", "ray://host:10001"); None: local
    actors: int | None = None  # encoder actors; default: one per GPU, else CPUs / cpus_per_actor
    cpus_per_actor: int = 1
    shard_size: int = 2048  # input records per shard (the unit of resumption)
    num_cpus: int | None = None  # a local Ray's CPUs (default: all of this machine's)


@dataclass
class ShardSummary:
    directory: str
    shards: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    sequences: int = 0
    encoded: int = 0
    activations: int = 0
    annotation_links: int = 0
    duplicates: int = 0
    actors: int = 0
    gpus_per_actor: float = 0.0
    seconds: float = 0.0

    @property
    def sequences_per_second(self) -> float:
        return self.sequences / self.seconds if self.seconds else 0.0


def _record_dict(record: SequenceRecord, repeat: bool) -> dict[str, Any]:
    return {"id": record.id, "chrom": record.chrom, "start": record.start, "end": record.end,
            "strand": record.strand, "sequence": record.sequence, "labels": list(record.labels),
            "where": record.where, "repeat": repeat}  # fmt: skip


def _record(data: dict[str, Any]) -> SequenceRecord:
    return SequenceRecord(
        id=data["id"], chrom=data["chrom"], start=data["start"], end=data["end"],
        strand=data["strand"], sequence=data["sequence"], labels=tuple(data["labels"]),
        where=data["where"],
    )  # fmt: skip


def plan_shards(
    records: Iterable[SequenceRecord], shard_size: int
) -> tuple[list[list[dict[str, Any]]], int]:
    """Records cut into shards of `shard_size`, repeats marked; (shards, repeated ids)."""
    seen = SeenIds()
    shards: list[list[dict[str, Any]]] = []
    duplicates = 0
    for chunk in batched(records, shard_size):
        rows = []
        for record in chunk:
            first = seen.add(record)  # one id, two sequences: InputError naming both rows
            duplicates += not first
            rows.append(_record_dict(record, repeat=not first))
        shards.append(rows)
    return shards, duplicates


class ShardEncoder:
    """A Ray actor: the encoder, the SAE and the annotation sources, loaded once.

    Called with batches of shard rows ({"shard", "records"}); encodes and annotates every
    record of each shard, writes the shard, and returns one summary row per shard."""

    def __init__(self, model: str, sae: str, device: str, cfg: dict, out: str, fingerprint: str):
        import torch

        from hsg.models.encoder import load_encoder
        from hsg.regions.sources import build_sources
        from hsg.sae.model import SparseAutoencoder

        if device == "cpu":
            torch.set_num_threads(max(1, int(cfg.pop("_threads", 1))))
        cfg.pop("_threads", None)
        self.cfg = IngestConfig.from_dict(cfg)
        self.sae = SparseAutoencoder.load(sae, device=device).eval()
        self.encoder = load_encoder(model, device=device)
        self.layer = self.cfg.layer if self.cfg.layer is not None else self.sae.cfg.layer
        self.sources = build_sources(
            annotations=self.cfg.annotations, g4=self.cfg.g4, jaspar=self.cfg.jaspar,
            jaspar_pvalue=self.cfg.jaspar_pvalue,
        )  # fmt: skip
        self.out = out
        self.fingerprint = fingerprint

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        from hsg.regions.sources import annotate_all

        result: dict[str, list] = {"shard": [], "sequences": [], "encoded": [],
                                   "activations": [], "annotation_links": []}  # fmt: skip
        for shard, payload in zip(batch["shard"], batch["records"], strict=True):
            rows = json.loads(payload)
            seq_rows, ann_rows = [], []
            acts: dict[str, list] = {k: [] for k in
                                     ("sequence_id", "position", "token", "feature",
                                      "activation", "rank")}  # fmt: skip
            records = [_record(r) for r in rows]
            firsts = [rec for rec, row in zip(records, rows, strict=True) if not row["repeat"]]
            for rec, row in zip(records, rows, strict=True):
                seq_rows.append(sequence_row(rec, sequence_props(rec), not row["repeat"]))
            for chunk in batched(firsts, self.cfg.batch_size):
                encoded = encode_batch(
                    self.encoder, self.sae, chunk, self.layer, self.cfg.top_k,
                    self.cfg.min_activation,
                )  # fmt: skip
                for rec, act_rows in zip(chunk, encoded, strict=True):
                    for feature, position, token, activation, rank in act_rows:
                        acts["sequence_id"].append(rec.id)
                        acts["position"].append(position)
                        acts["token"].append(token)
                        acts["feature"].append(feature)
                        acts["activation"].append(activation)
                        acts["rank"].append(rank)
                for rec, hits in zip(chunk, annotate_all(self.sources, chunk), strict=True):
                    ann_rows.extend(annotation_row(rec.id, hit) for hit in hits)
            marker = write_shard(self.out, int(shard), self.fingerprint, seq_rows, acts, ann_rows)
            result["shard"].append(int(shard))
            for key in ("sequences", "encoded", "activations", "annotation_links"):
                result[key].append(marker[key])
        return result


def _validate_batch(batch: dict[str, Any], tokenizer, model_id: str, source: str):
    """A Ray Data task: every sequence of these shards tokenizes (fits the model).

    A problem comes back as data (the `error` column), not as an exception: Ray wraps task
    exceptions in its own, and the driver raises the user's `InputError` itself."""
    from hsg.models.errors import SequenceTooLongError

    n = 0
    for payload in batch["records"]:
        rows = json.loads(payload)
        n += len(rows)
        for row in rows:
            try:
                tokenizer.encode(row["sequence"], name=row["id"])
            except SequenceTooLongError as exc:
                most = 6 * (tokenizer.max_tokens - 1)
                return {"n": [n], "error": [
                    f"{source}: sequence {row['id']!r} is too long for {model_id} ({exc}); "
                    f"tile it into windows with --window SIZE [--stride S], SIZE at most "
                    f"about {most} bases for this model"
                ]}  # fmt: skip
    return {"n": [n], "error": [""]}


def _user_error(exc: BaseException) -> BaseException | None:
    """The InputError (or ValueError) a Ray task raised, unwrapped from Ray's exceptions."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (InputError, ShardError)) and type(exc).__module__.startswith("hsg"):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
    return None


def start_ray(options: RayOptions) -> bool:
    """Connect to `options.address`, or start a local Ray sized to this machine; True when
    this call started it (and so should shut it down). An already initialised Ray is used."""
    import ray

    if ray.is_initialized():
        return False
    # the library reports through callbacks: Ray's own INFO lines stay out of the terminal
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if options.address:
        ray.init(address=options.address, **quiet)
    else:
        ray.init(num_cpus=options.num_cpus or os.cpu_count() or 1, include_dashboard=False, **quiet)
    return True


def encode_to_shards(
    cfg: IngestConfig,
    records: Iterable[SequenceRecord],
    model: str,
    sae: str,
    out: str | Path,
    manifest: Manifest,
    tokenizer,
    model_id: str,
    options: RayOptions | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> ShardSummary:
    """Encode `records` with the Ray actor pool into the shard folder `out`.

    `manifest` carries model, SAE and parameters (its shard counts are filled in here);
    `tokenizer` is the encoder's, for the parallel validation. Resumes a killed run."""
    import ray
    import ray.data

    options = options or RayOptions()
    out = Path(out)
    started = time.perf_counter()
    shards, duplicates = plan_shards(records, options.shard_size)
    manifest.shard_size = options.shard_size
    manifest.shards = len(shards)
    manifest.sequences = sum(len(s) for s in shards)
    manifest.input_sha256 = file_sha256(cfg.input) if Path(cfg.input).is_file() else None
    manifest.created = datetime.now(timezone.utc).isoformat()
    if (out / MANIFEST).exists():
        existing = read_manifest(out)
        diffs = existing.differences(manifest)
        if diffs:
            raise ShardError(
                f"{out} holds shards made from other inputs or parameters; nothing was "
                "written. Use another folder, or delete this one. Differences (folder vs "
                "this run):\n  " + "\n  ".join(diffs)
            )
        manifest = existing
    summary = ShardSummary(directory=str(out), shards=len(shards), duplicates=duplicates)
    started_ray = start_ray(options)
    try:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        items = [{"shard": i, "records": json.dumps(rows)} for i, rows in enumerate(shards)]
        # shards complete from an earlier run of this same set passed validation then
        if (out / MANIFEST).exists():
            earlier = ShardSet(out)
            items_to_check = [i for i in items if not earlier.is_complete(i["shard"])]
        else:
            items_to_check = items
        if items_to_check:
            validation = ray.data.from_items(items_to_check).map_batches(
                _validate_batch,
                batch_size=1,
                fn_kwargs={"tokenizer": tokenizer, "model_id": model_id, "source": cfg.input},
            )
            try:
                for row in validation.iter_rows():
                    if row["error"]:
                        raise InputError(row["error"])
                    if progress is not None:
                        progress("validating", int(row["n"]), None)
            except Exception as exc:  # noqa: BLE001 - Ray wraps the task's own error
                user = _user_error(exc)
                if user is not None:
                    raise user from None
                raise
        if not (out / MANIFEST).exists():
            write_manifest(out, manifest)
        shard_set = ShardSet(out)
        todo = [item for item in items if not shard_set.is_complete(item["shard"])]
        summary.shards_skipped = len(items) - len(todo)
        gpus = ray.cluster_resources().get("GPU", 0)
        cpus = ray.cluster_resources().get("CPU", 1)
        if gpus >= 1:
            actors = options.actors or int(gpus)
            per_actor: dict[str, Any] = {"num_gpus": 1, "num_cpus": options.cpus_per_actor}
            device = "cuda"
        else:
            actors = options.actors or max(1, int(cpus // max(1, options.cpus_per_actor)))
            per_actor = {"num_cpus": options.cpus_per_actor}
            device = "cpu"
        actors = max(1, min(actors, len(todo) or 1))
        summary.actors = actors
        summary.gpus_per_actor = float(per_actor.get("num_gpus", 0))
        if todo:
            cfg_dict = cfg.to_dict()
            cfg_dict["_threads"] = options.cpus_per_actor
            encoded = ray.data.from_items(todo).map_batches(
                ShardEncoder,
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=actors),
                fn_constructor_args=(
                    model,
                    sae,
                    device,
                    cfg_dict,
                    str(out),
                    manifest.fingerprint,
                ),  # fmt: skip
                **per_actor,
            )
            try:
                for row in encoded.iter_rows():
                    summary.shards_written += 1
                    if progress is not None:
                        progress("encoding", int(row["sequences"]), manifest.sequences)
            except Exception as exc:  # noqa: BLE001 - Ray wraps the actor's own error
                user = _user_error(exc)
                if user is not None:
                    raise user from None
                raise
    finally:
        if started_ray:
            ray.shutdown()
    for i in range(len(items)):  # the whole set's totals, resumed shards included
        marker = shard_set.marker(i) or {}
        for key in ("sequences", "encoded", "activations", "annotation_links"):
            setattr(summary, key, getattr(summary, key) + int(marker.get(key, 0)))
    summary.seconds = time.perf_counter() - started
    return summary
