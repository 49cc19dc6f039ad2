"""`hsg ingest --engine ray`: encoding on a Ray cluster (or a local Ray), into activation shards.

The driver streams the input once and writes it, shard by shard, to small Parquet plan files
(`hsg.ingest.shard_plan`): it holds one shard of rows at a time plus the ids seen so far
(repeated ids are merged exactly as `run_ingest` merges them: a repeat carries its labels
only). For BED input it only parses the lines; the bases are fetched from the indexed
reference by the Ray tasks (`hsg.regions.lookup`). Ray Data then validates every shard in
parallel tasks — bases (BED), tokenization (too long …) — and reports the problem the
sequential reader would have reported, before the manifest or any shard is written; then
`map_batches` over an actor pool whose actors each hold the encoder and the SAE (one GPU per
actor when the cluster has GPUs) encodes and writes whole shards (`hsg.shards.writer`).

Shards already complete in the folder are not sent to the pool again, so re-running the same
command after a kill finishes the set; a folder made with another model, SAE, input or
parameters is refused (its manifest differs) before anything is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hsg.config import JsonConfig
from hsg.graph.shard_rows import annotation_row, sequence_row
from hsg.ingest.encode import encode_batch
from hsg.ingest.pipeline import IngestConfig, file_sha256, sequence_props
from hsg.ingest.shard_plan import (
    FirstProblem,
    LookupInput,
    Plan,
    ShardRecords,
    check_shard,
    lookup_repeats,
    new_plan_directory,
    read_rows,
    record_rows,
)
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


class ShardEncoder:
    """A Ray actor: the encoder, the SAE and the annotation sources, loaded once.

    Called with batches of shards ({"shard", "path": its plan file}); encodes and annotates
    every record of each shard, writes the shard, and returns one summary row per shard."""

    def __init__(
        self,
        model: str,
        sae: str,
        device: str,
        cfg: dict,
        out: str,
        fingerprint: str,
        reference: str | None = None,
        index: str | None = None,
    ):
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
        self.records = ShardRecords(reference, index)  # BED: the reference, opened once

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        from hsg.regions.sources import annotate_all

        result: dict[str, list] = {"shard": [], "sequences": [], "encoded": [],
                                   "activations": [], "annotation_links": []}  # fmt: skip
        for shard, path in zip(batch["shard"], batch["path"], strict=True):
            rows = read_rows(str(path))
            seq_rows, ann_rows = [], []
            acts: dict[str, list] = {k: [] for k in
                                     ("sequence_id", "position", "token", "feature",
                                      "activation", "rank")}  # fmt: skip
            records = [self.records.record(r) for r in rows]
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


def _validate_batch(batch: dict[str, Any], **kwargs) -> dict[str, list]:
    """A Ray Data task: `check_shard` on each shard of the batch (its plan file)."""
    out: dict[str, list] = {k: [] for k in ("shard", "n", "kind", "key", "message")}
    for shard, path in zip(batch["shard"], batch["path"], strict=True):
        answer = check_shard(int(shard), str(path), **kwargs)
        for key in out:
            out[key].append(answer[key])
    return out


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
    records: Iterable[SequenceRecord] | LookupInput,
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

    `records`: the input's records, or (BED) a `LookupInput` whose bases the Ray tasks fetch.
    `manifest` carries model, SAE and parameters (its shard counts are filled in here);
    `tokenizer` is the encoder's, for the parallel validation. Resumes a killed run."""
    import ray  # noqa: F401 - without Ray, fail before the input is read

    options = options or RayOptions()
    out = Path(out)
    started = time.perf_counter()
    lookup = records if isinstance(records, LookupInput) else None
    created = not out.exists()
    plan_dir = new_plan_directory(out)
    try:
        plan, pending = _plan(records, lookup, plan_dir, options.shard_size, progress)
        if pending is None:
            manifest = _settle_manifest(cfg, manifest, plan, out, options)
        return _run(cfg, plan, pending, lookup, model, sae, out, manifest, tokenizer, model_id,
                    options, progress, started)  # fmt: skip
    finally:
        shutil.rmtree(plan_dir, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty: a refused first run leaves no folder


def _plan(records, lookup, plan_dir, shard_size, progress) -> tuple[Plan, InputError | None]:
    """The input read once into plan files; with the driver's own `InputError` (BED only:
    a looked-up row before it may hold the problem the reader would have met first)."""
    plan = Plan(plan_dir, shard_size)
    rows = lookup_repeats(lookup.rows) if lookup is not None else record_rows(records)
    pending = None
    try:
        for row in rows:
            shard = plan.add(row)
            if shard is not None and progress is not None:
                progress("reading", shard.rows, None)
    except InputError as exc:
        if lookup is None:
            raise  # the reader read every earlier row: nothing can come before it
        pending = exc
    last = plan.flush()
    if last is not None and progress is not None:
        progress("reading", last.rows, None)
    return plan, pending


def _settle_manifest(cfg, manifest: Manifest, plan: Plan, out: Path, options) -> Manifest:
    """The manifest of this run, or the folder's when it describes the same set;
    `ShardError` (nothing written) when the folder holds another set."""
    manifest.shard_size = options.shard_size
    manifest.shards = len(plan.shards)
    manifest.sequences = plan.rows
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
        return existing
    return manifest


def _run(cfg, plan, pending, lookup, model, sae, out, manifest, tokenizer, model_id, options,
         progress, started) -> ShardSummary:  # fmt: skip
    import ray
    import ray.data

    if pending is not None and not plan.shards:
        raise pending
    reference = lookup.reference if lookup is not None else None
    index = lookup.index if lookup is not None else None
    summary = ShardSummary(directory=str(out), shards=len(plan.shards), duplicates=plan.duplicates)
    started_ray = start_ray(options)
    try:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        items = [{"shard": s.index, "path": s.path} for s in plan.shards]
        # shards complete from an earlier run of this same set passed validation then
        done = set()
        if pending is None and (out / MANIFEST).exists():
            earlier = ShardSet(out)
            done = {s.index for s in plan.shards if earlier.is_complete(s.index)}
        problems = FirstProblem(plan.shards, done)
        to_check = [item for item in items if item["shard"] not in done]
        if to_check:
            total = sum(s.rows for s in plan.shards if s.index not in done)
            validation = ray.data.from_items(to_check).map_batches(
                _validate_batch,
                batch_size=1,
                fn_kwargs={
                    "tokenizer": tokenizer,
                    "model_id": model_id,
                    "source": cfg.input,
                    "reference": reference,
                    "index": index,
                },  # fmt: skip
            )
            try:
                for row in validation.iter_rows():
                    problems.add(row)
                    if progress is not None:
                        progress("validating", int(row["n"]), total)
                    if problems.settled:
                        break
            except Exception as exc:  # noqa: BLE001 - Ray wraps the task's own error
                user = _user_error(exc)
                if user is not None:
                    raise user from None
                raise
        error = problems.error(pending)
        if error is not None:
            raise error
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
                    reference,
                    index,
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
