"""Loading the same ≥ 1M ACTIVATES three ways: the transactional writer, `hsg load --online`
with N threads, and `hsg load --bulk` (neo4j-admin database import full); plus what the Ray
engine costs over the plain pipeline on the same input.

    python benchmarks/bench_load.py [--windows 7500] [--top-k 8] [--threads 1 2 4]

Input: the first WINDOWS cisplatin windows (../shared/data/cisplatin/loci.tsv), the tiny NT
model and an untrained SAE (d_sae 256), top-k 8: ~17 tokens × 8 = ~136 ACTIVATES per window.

1. Ray overhead: `api.ingest(dry_run=True)` (encode + annotate, no database) against
   `api.encode_to_shards` (local Ray, num_cpus = this machine's) on the same input.
2. Baseline: `hsg ingest` end to end into an empty database (transactional writer, encoding
   overlapped), and the same writer alone (`load --online --threads 1`, shards already made).
3. `load --online --threads N` for each N, each into an emptied database.
4. `load --bulk`: CSV generation + importer + server restart + schema, into the same server.

relationships/s = relationships created / wall seconds of that load; ratios are against the
transactional writer alone (threads 1) measured in the same run. The throw-away server lives
in .hsg/bench-load-neo4j on its own ports (never a user graph; never the test server).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
LOCI = ROOT / ".." / "shared" / "data" / "cisplatin" / "loci.tsv"
HOME = Path(os.environ.get("HSG_BENCH_LOAD_HOME", ROOT / ".hsg" / "bench-load-neo4j"))
BOLT = int(os.environ.get("HSG_BENCH_LOAD_BOLT_PORT", "27697"))
HTTP = int(os.environ.get("HSG_BENCH_LOAD_HTTP_PORT", "27484"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=7500)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--heap", default="2g")
    parser.add_argument("--pagecache", default="1g")
    parser.add_argument(
        "--work",
        type=Path,
        help="reuse the input, model, SAE and shards of an earlier run's folder (skips step 1)",
    )
    args = parser.parse_args()

    from hsg import api
    from hsg.db import server
    from hsg.db.schema import apply_schema
    from hsg.db.settings import ConnectionSettings, read_password_file
    from hsg.graph.maintenance import wipe
    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder

    reuse = args.work is not None and (args.work / "shards" / "manifest.json").exists()
    work = args.work if reuse else Path(tempfile.mkdtemp(prefix="bench-load-"))
    regions, model, sae = work / "loci.tsv", work / "model", work / "sae"
    opts = {"label_column": "label", "top_k": args.top_k, "g4": False}
    print(f"input: {args.windows} windows, top-k {args.top_k}, {os.cpu_count()} CPUs "
          "(machine shared with other work: numbers are noisy)")  # fmt: skip
    if not reuse:
        lines = LOCI.read_text().splitlines()[: args.windows + 1]
        regions.write_text("\n".join(lines) + "\n")
        api.make_tiny_model(model, "v2", seed=0)
        encoder = api.load_encoder(model, device="cpu")
        torch.manual_seed(0)
        SparseAutoencoder(
            SAEConfig(d_in=encoder.hidden_size, d_sae=256, layer=1, model_id=encoder.model_id,
                      encoder_checkpoint_hash=encoder.checkpoint_hash)
        ).save(sae)  # fmt: skip

        # 1. Ray overhead over the plain pipeline, encoding only
        t = time.perf_counter()
        dry = api.ingest(regions, model, sae, dry_run=True, **opts)
        plain = time.perf_counter() - t
        t = time.perf_counter()
        shards = api.encode_to_shards(regions, model, sae, work / "shards", **opts)
        ray_s = time.perf_counter() - t
        print(f"encode: plain pipeline (dry run) {plain:.1f} s, {dry.activations} activations; "
              f"Ray engine {ray_s:.1f} s ({shards.actors} actors, {shards.shards} shards, "
              f"Ray start included) -> Ray/plain {ray_s / plain:.2f}x")  # fmt: skip
    print(f"work folder: {work}")

    cfg = server.ServerConfig(home=HOME, bolt_port=BOLT, http_port=HTTP, heap=args.heap,
                              pagecache=args.pagecache)  # fmt: skip
    server.start(cfg, log=lambda _m: None)
    settings = ConnectionSettings(cfg.bolt_uri, "neo4j", read_password_file(cfg.home))

    class Results(list):  # each measurement printed as it is made: a long run shows progress
        def append(self, item) -> None:
            super().append(item)
            name, rels, sec = item
            print(f"  {name}: {rels} relationships in {sec:.1f} s ({rels / sec:.0f}/s)",
                  flush=True)  # fmt: skip

    results = Results()
    try:
        with api.connection_for(settings) as graph:

            def empty() -> None:
                wipe(graph.driver, "neo4j")
                apply_schema(graph.driver, "neo4j")

            empty()
            t = time.perf_counter()
            s = api.ingest(regions, model, sae, connection=graph, **opts)
            results.append(("hsg ingest (encode + transactional writer)",
                            s.relationships_created, time.perf_counter() - t))  # fmt: skip
            activates = s.counts_after.get("activates")
            for n in args.threads:
                empty()
                t = time.perf_counter()
                s = api.load_shards(work / "shards", connection=graph, threads=n)
                name = "transactional writer alone (load --online --threads 1)" if n == 1 else (
                    f"load --online --threads {n}")  # fmt: skip
                results.append((name, s.relationships_created, time.perf_counter() - t))
            t = time.perf_counter()
            s = api.load_shards(work / "shards", mode="bulk", server=cfg, connection=graph,
                                overwrite=True, work_dir=work)  # fmt: skip
            total = time.perf_counter() - t
            results.append(("load --bulk (CSV + import + restart + schema)",
                            s.relationships_created, total))  # fmt: skip
            results.append(("  of which neo4j-admin import alone", s.relationships_created,
                            s.import_seconds))  # fmt: skip
    finally:
        server.stop(cfg)
    print(f"ACTIVATES: {activates}")

    def size(folder: Path) -> int:
        return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())

    store = size(HOME / "data" / "databases" / "neo4j")
    rels = results[-1][1]
    print(f"disk: store after --bulk {store / 1e6:.0f} MB ({store / rels:.0f} B per relationship);"
          f" shards {size(work / 'shards') / 1e6:.0f} MB"
          f" ({size(work / 'shards') / activates:.1f} B per activation)")  # fmt: skip
    base = next(rate for name, rels, sec in results if "alone" in name
                for rate in [rels / sec])  # fmt: skip
    print(f"{'load':58s} {'relationships':>13s} {'seconds':>8s} {'rel/s':>9s} {'ratio':>6s}")
    for name, rels, sec in results:
        rate = rels / sec
        print(f"{name:58s} {rels:13d} {sec:8.1f} {rate:9.0f} {rate / base:6.2f}")


if __name__ == "__main__":
    sys.exit(main())
