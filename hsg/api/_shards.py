"""Past one machine: encoding into activation shards with Ray, and loading shards into Neo4j.

    summary = api.encode_to_shards("loci.tsv", "models/nt", "sae/L6", "shards/")  # Ray
    with api.connect() as graph:
        api.load_shards("shards/", connection=graph, threads=4)          # online
    api.load_shards("shards/", mode="bulk", overwrite=True)              # neo4j-admin import

Both loads produce the graph `hsg ingest` produces from the same input (docs/scale-out.md).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsg.api._load import (
    Connection,
    PathLike,
    connect,
    connection_for,
    iter_regions,
    load_encoder,
    load_sae,
)

if TYPE_CHECKING:
    from hsg.db.server import ServerConfig
    from hsg.graph.shard_load import LoadSummary
    from hsg.ingest.ray_engine import ShardSummary

Progress = Callable[[str, int, "int | None"], None]


def encode_to_shards(
    source: PathLike,
    model: PathLike,
    sae: PathLike,
    shards: PathLike,
    *,
    address: str | None = None,
    actors: int | None = None,
    shard_size: int = 2048,
    num_cpus: int | None = None,
    cpus_per_actor: int = 1,
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
    window: int | None = None,
    stride: int | None = None,
    allow_model_mismatch: bool = False,
    progress: Progress | None = None,
) -> ShardSummary:
    """Encode a regions file into activation shards in the folder ``shards`` with Ray Data.

    The options are `ingest`'s. ``address`` names a running Ray cluster; without it a local
    Ray sized to this machine is started (and stopped). ``actors`` encoder actors (default
    one per GPU, else one per ``cpus_per_actor`` CPUs) each hold the model and the SAE.
    Re-running the same call resumes: complete shards are kept. Model and SAE must be paths
    (every actor loads its own copy). The input is read once, one shard at a time; for BED
    input the Ray tasks look the bases up in ``reference``, which every worker must be able
    to read at the same path (docs/scale-out.md)."""
    from hsg.ingest.encode import model_properties, sae_properties
    from hsg.ingest.pipeline import IngestConfig, _hsg_version
    from hsg.ingest.ray_engine import RayOptions
    from hsg.ingest.ray_engine import encode_to_shards as _encode
    from hsg.sae.compat import check_compatible
    from hsg.shards.manifest import Manifest

    if top_k < 1 or batch_size < 1 or shard_size < 1:
        raise ValueError("top_k, batch_size and shard_size must be at least 1")
    if not all(isinstance(p, (str, Path)) for p in (source, model, sae)):
        raise ValueError("encode_to_shards takes a regions file, a model and an SAE as paths")
    sae_obj = load_sae(sae, "cpu")
    encoder = load_encoder(model, device="cpu")
    compat = check_compatible(encoder, sae_obj, layer, allow_model_mismatch=allow_model_mismatch)
    cfg = IngestConfig(
        input=str(source),
        model=str(model),
        sae=str(sae),
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
        window=window,
        stride=stride,
    )
    records = _regions(source, fmt, reference, label, label_column, window, stride)
    manifest = Manifest(
        model=model_properties(encoder),
        sae=sae_properties(sae_obj, compat.layer),
        parameters=cfg.to_dict(),
        shard_size=shard_size,
        shards=0,
        sequences=0,
        hsg_version=_hsg_version(),
    )
    options = RayOptions(address=address, actors=actors, shard_size=shard_size,
                         num_cpus=num_cpus, cpus_per_actor=cpus_per_actor)  # fmt: skip
    return _encode(
        cfg,
        records,
        str(Path(model).resolve()) if Path(model).exists() else str(model),
        str(Path(sae).resolve()),
        shards,
        manifest,
        encoder.tokenizer,
        encoder.model_id,
        options=options,
        progress=progress,
    )


ingest_ray = encode_to_shards


def _regions(source, fmt, reference, label, label_column, window, stride):
    """The input for the Ray engine: BED regions whose bases the Ray tasks look up in the
    reference, or (FASTA, TSV: the sequences are in the file) the records as read."""
    from hsg.ingest.shard_plan import LookupInput
    from hsg.regions.lookup import lookup_rows
    from hsg.regions.readers import detect_format, read_bed_regions
    from hsg.regions.records import InputError

    try:
        bed = Path(source).is_file() and detect_format(source, fmt) == "bed"
    except InputError:
        bed = False  # iter_regions reports it, as for `ingest`
    if not bed:
        return iter_regions(source, fmt=fmt, reference=reference, label=label,
                            label_column=label_column, window=window, stride=stride)  # fmt: skip
    column = label_column
    if isinstance(column, str) and column.isdigit():
        column = int(column)
    regions = read_bed_regions(source, reference, label=label, label_column=column)
    rows = lookup_rows(regions.regions, window, stride)
    return LookupInput(  # absolute: Ray workers need not share this working directory
        rows, reference=str(regions.reference.resolve()), index=str(regions.index.resolve())
    )


def _run_node(shard_set, mode: str) -> dict[str, Any]:
    import json

    from hsg.db.runs import process_marker
    from hsg.ingest.pipeline import _hsg_version, new_run_id

    m = shard_set.manifest
    return {
        "id": new_run_id(),
        "started": datetime.now(timezone.utc).isoformat(),
        "input": str(m.parameters.get("input")),
        "input_sha256": m.input_sha256,
        "parameters": json.dumps(m.parameters, sort_keys=True),
        "hsg_version": _hsg_version(),
        "status": "running",
        "shards": str(Path(shard_set.directory).resolve()),
        "load_mode": mode,
        **process_marker(),
    }


def load_shards(
    shards: PathLike,
    *,
    connection: Connection | None = None,
    mode: str = "online",
    threads: int = 2,
    write_batch: int = 256,
    overwrite: bool = False,
    server: ServerConfig | None = None,
    database: str | None = None,
    work_dir: PathLike | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> LoadSummary:
    """Write a shard set into Neo4j; the whole set is validated before the first write.

    ``mode="online"``: into the running database of ``connection`` (default: from the
    environment), ``threads`` writers on disjoint shards; resumable and idempotent.
    ``mode="bulk"``: `neo4j-admin database import full` into the database of the local
    server ``server`` (default: `ServerConfig.from_env()`), which is stopped for the import
    and started again; an existing database with nodes is replaced only with ``overwrite``.
    The schema is applied afterwards. CSV files go to ``work_dir`` (default: a temporary
    folder beside the shards, removed afterwards). After a bulk load, open a new connection:
    a driver used before it holds bookmarks of the replaced store."""
    from hsg.shards.reader import ShardSet

    if mode not in ("online", "bulk"):
        raise ValueError(f"mode must be 'online' or 'bulk', not {mode!r}")
    if threads < 1 or write_batch < 1:
        raise ValueError("threads and write_batch must be at least 1")
    shard_set = ShardSet(shards)
    total = shard_set.manifest.sequences
    shard_set.validate(progress=(lambda n: progress("validating", n, None)) if progress else None)
    report = (lambda n: progress("loading", n, total)) if progress else None
    if mode == "online":
        from hsg.graph.shard_load import load_online

        own = connection is None
        conn = connect() if own else connection
        try:
            return load_online(
                shard_set, conn.driver, conn.database, _run_node(shard_set, "online"),
                threads=threads, write_batch=write_batch, progress=report,
            )  # fmt: skip
        finally:
            if own:
                conn.close()
    return _load_bulk(shard_set, connection, overwrite, server, database, work_dir, report, log)


def _load_bulk(shard_set, connection, overwrite, server_cfg, database, work_dir, progress, log):
    import shutil
    import time

    from hsg.db import server as srv
    from hsg.db.admin_import import import_full, store_exists
    from hsg.db.errors import DatabaseError
    from hsg.graph.bulk import finish_import, graph_counts, node_count, write_import_files
    from hsg.graph.shard_load import LoadSummary

    log = log or (lambda _msg: None)
    cfg = server_cfg or srv.ServerConfig.from_env()
    own = connection is None
    conn = connection
    started = time.perf_counter()
    try:
        database = database or (conn.database if conn is not None else "neo4j")
        if srv.running_pid(cfg) is not None:
            conn = conn or connect(home=cfg.home, bolt_port=cfg.bolt_port, database=database)
            before = node_count(conn.driver, database)
            if before and not overwrite:
                raise DatabaseError(
                    f"database {database!r} of {cfg.home} holds {before} nodes: the bulk "
                    "importer replaces a database whole. Pass --overwrite to replace it, or "
                    "use --online to add the shards to it. Nothing was changed."
                )
        elif store_exists(cfg, database) and not overwrite:
            raise DatabaseError(
                f"the server of {cfg.home} is not running, so hsg cannot tell whether "
                f"database {database!r} is empty: start it (`hsg db start`) or pass "
                "--overwrite. Nothing was changed."
            )
        if conn is not None and own:
            conn.close()
            conn = None
        run = _run_node(shard_set, "bulk")
        m = shard_set.manifest
        tmp = Path(tempfile.mkdtemp(prefix=".bulk-", dir=work_dir or shard_set.directory))
        try:
            summary = LoadSummary(run_id=run["id"], mode="bulk", threads=1)
            totals = {k: 0 for k in ("sequences", "encoded", "activations")}
            for i in range(m.shards):
                marker = shard_set.marker(i) or {}
                for key in totals:
                    totals[key] += int(marker.get(key, 0))
            run.update(
                status="finished",
                sequences_read=totals["sequences"],
                sequences_encoded=totals["encoded"],
                sequences_skipped=0,
                activations=totals["activations"],
            )
            log("writing the importer's CSV files …")
            files = write_import_files(shard_set, tmp, run, progress=progress)
            result = import_full(
                cfg, database, files.nodes, files.relationships,
                overwrite=store_exists(cfg, database), log=log,
            )  # fmt: skip
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        # a fresh driver: an earlier one holds bookmarks of the replaced store, which the
        # new store (with fewer transactions) would wait for until it times out
        conn = (
            connection_for(connection.settings)
            if connection is not None
            else connect(home=cfg.home, bolt_port=cfg.bolt_port, database=database)
        )
        own = True
        finish_import(conn.driver, database)
        summary.seconds = time.perf_counter() - started
        summary.shards = m.shards
        summary.sequences = totals["sequences"]
        summary.sequences_encoded = totals["encoded"]
        summary.activations = totals["activations"]
        summary.nodes_created = result.nodes or sum(
            v for k, v in files.counts.items() if k in files.nodes
        )
        summary.relationships_created = result.relationships or sum(
            v for k, v in files.counts.items() if k in files.relationships
        )
        summary.counts_after = graph_counts(conn.driver, database)
        summary.import_seconds = result.seconds
        return summary
    finally:
        if own and conn is not None:
            conn.close()
