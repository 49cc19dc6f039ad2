"""Ingestion throughput: the Neo4j writer alone, end to end, and the original baseline.

    python benchmarks/bench_ingest.py [--data ../shared/data/cisplatin/loci.tsv] [--limit N]
    python benchmarks/bench_ingest.py --before-after [--warm-rounds 2]

All three parts build the same graph from the same windows in one run:
  * writer   — GraphWriter on precomputed activation rows, at several transaction sizes;
  * baseline — the original study's way: a networkx MultiDiGraph with one edge per
               activation, saved as node-link JSON;
  * end to end — `run_ingest` (read TSV → tiny NT v2 → SAE → top-1 → Neo4j), encoder and
               writer overlapping, plus peak RSS at a quarter and at all of the input to
               show memory does not grow with the number of sequences.
It runs against a throw-away server (benchmarks/_server.py), never the user's graph.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from itertools import islice
from pathlib import Path

import networkx as nx
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import bench_database, wipe  # noqa: E402

from hsg.db.schema import apply_schema  # noqa: E402
from hsg.graph.writer import GraphWriter, SequenceWrite  # noqa: E402
from hsg.ingest.pipeline import IngestConfig, run_ingest, sequence_props  # noqa: E402
from hsg.ingest.threads import available_cores  # noqa: E402
from hsg.regions.readers import read_records  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cisplatin" / "loci.tsv"


def synthetic_writes(records, d_sae: int, tokens: int, seed: int = 0) -> list[SequenceWrite]:
    rng = random.Random(seed)
    return [
        SequenceWrite(
            r.id,
            sequence_props(r),
            list(r.labels),
            [[rng.randrange(d_sae), p, "ACGTAC", rng.random(), 0] for p in range(tokens)],
        )
        for r in records
    ]


def bench_writer(driver, settings, writes, d_sae, batch_sizes) -> list[dict]:
    results = []
    for size in batch_sizes:
        wipe(driver, settings.database)
        apply_schema(driver, settings.database)
        writer = GraphWriter(driver, settings.database, "bench/sae", f"bench-{size}")
        writer.register({"id": "bench"}, {"id": "bench/sae", "layer": 1}, d_sae, {"id": f"b{size}"})
        # warm-up on other ids: JIT-compiled query plans and a warm page cache, as in any
        # ingest after its first few batches; these sequences are not counted
        warm = [
            SequenceWrite("warm-" + w.id, w.props, w.labels, w.activations) for w in writes[:2048]
        ]
        for i in range(0, len(warm), size):
            writer.write_batch(warm[i : i + size])
        before = writer.counts()["activates"]
        rels = sum(len(w.activations) for w in writes)
        start = time.perf_counter()
        for i in range(0, len(writes), size):
            writer.write_batch(writes[i : i + size])
        seconds = time.perf_counter() - start
        assert writer.counts()["activates"] - before == rels
        results.append(
            {
                "sequences_per_tx": size,
                "seconds": round(seconds, 3),
                "activates_per_s": round(rels / seconds),
                "sequences_per_s": round(len(writes) / seconds),
            }
        )
        print(
            f"  writer, {size:5d} sequences/tx: {rels / seconds:10,.0f} ACTIVATES/s "
            f"({len(writes) / seconds:,.0f} sequences/s)"
        )
    return results


def bench_networkx(writes, out_dir: Path) -> dict:
    """The original pipeline's graph: MultiDiGraph, one edge per activation, node-link JSON."""
    start = time.perf_counter()
    graph = nx.MultiDiGraph()
    for w in writes:
        graph.add_node(w.id, kind="sequence", labels=w.labels, **w.props)
        for feature, position, token, activation, rank in w.activations:
            graph.add_edge(
                w.id,
                f"feature/{feature}",
                position=position,
                token=token,
                activation=activation,
                rank=rank,
            )
    data = nx.node_link_data(graph, edges="links")
    with open(out_dir / "graph.json", "w") as fh:
        json.dump(data, fh)
    seconds = time.perf_counter() - start
    rels = graph.number_of_edges()
    print(f"  baseline networkx + node-link JSON: {rels / seconds:10,.0f} edges/s")
    return {"seconds": round(seconds, 3), "edges_per_s": round(rels / seconds)}


class PeakRSS:
    """Samples this process's RSS on a thread (ru_maxrss never goes down between phases)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, proc.memory_info().rss)
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def bench_end_to_end(driver, settings, data: Path, limit: int, work: Path) -> list[dict]:
    from hsg.models.encoder import load_encoder
    from hsg.models.tiny import make_tiny
    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder

    make_tiny(work / "model", "v2", seed=0)
    encoder = load_encoder(work / "model", device="cpu")
    torch.manual_seed(0)
    cfg = SAEConfig(d_in=encoder.hidden_size, d_sae=256, model_id=encoder.model_id, layer=1)
    sae = SparseAutoencoder(cfg)
    results = []
    for n in (max(1, limit // 4), limit):
        wipe(driver, settings.database)
        apply_schema(driver, settings.database)
        icfg = IngestConfig(
            input=str(data),
            model=str(work / "model"),
            sae="bench",
            top_k=1,
            batch_size=128,
            write_batch=1024,
        )
        with PeakRSS() as rss:
            summary = run_ingest(
                icfg,
                islice(read_records(data), n),
                encoder,
                sae,
                driver=driver,
                database=settings.database,
            )
        row = {
            "sequences": summary.sequences_read,
            "seconds": round(summary.seconds, 2),
            "sequences_per_s": round(summary.sequences_per_second, 1),
            "relationships_per_s": round(summary.relationships_per_second),
            "activates": summary.counts_after["activates"],
            "peak_rss_mb": round(rss.peak / 2**20),
        }
        results.append(row)
        print(
            f"  end to end, {n:6d} sequences: {row['sequences_per_s']:8,.0f} sequences/s, "
            f"{row['relationships_per_s']:8,} relationships/s, peak RSS {row['peak_rss_mb']} MB"
        )
    return results


def _bench_pair(work: Path):
    from hsg.models.encoder import load_encoder
    from hsg.models.tiny import make_tiny
    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder

    if not (work / "model").exists():
        make_tiny(work / "model", "v2", seed=0)
    encoder = load_encoder(work / "model", device="cpu")
    torch.manual_seed(0)
    cfg = SAEConfig(d_in=encoder.hidden_size, d_sae=256, model_id=encoder.model_id, layer=1)
    return encoder, SparseAutoencoder(cfg)


def _ingest_once(driver, settings, data, limit, work, encoder, sae, mode: str) -> dict:
    """One `run_ingest` of the first `limit` windows in `mode`:
    "before" — torch on every core and one "already encoded?" query per batch, as before
    issue #17; "after" — the defaults now (threads from hsg.ingest.threads, one query)."""
    icfg = IngestConfig(
        input=str(data), model=str(work / "model"), sae="bench", top_k=1, batch_size=128,
        write_batch=1024, threads=available_cores() if mode == "before" else None,
    )  # fmt: skip
    snapshot = GraphWriter.encoded_snapshot
    if mode == "before":
        GraphWriter.encoded_snapshot = lambda self, limit=0: None  # per-batch queries
    try:
        summary = run_ingest(icfg, islice(read_records(data), limit), encoder, sae,
                             driver=driver, database=settings.database)  # fmt: skip
    finally:
        GraphWriter.encoded_snapshot = snapshot
    return {
        "mode": mode,
        "seconds": round(summary.seconds, 2),
        "encoded": summary.sequences_encoded,
        "threads": summary.encoder_threads,
        "sequences_per_s": round(summary.sequences_per_second, 1),
        "relationships_per_s": round(summary.relationships_per_second),
        "activates_per_s": round(summary.activations / summary.seconds),
    }


def bench_before_after(data: Path, limit: int, work: Path, warm_rounds: int) -> dict:
    """`run_ingest` before and after issue #17's changes, in one run, interleaved: cold (the
    first ingest after the server starts, each mode on its own fresh start), then warm
    (alternating, the database emptied before each), then a re-run over a full graph (all
    already stored: what resuming costs)."""
    from _server import BENCH_BOLT, BENCH_HOME, BENCH_HTTP

    from hsg.db import server
    from hsg.db.connection import open_driver
    from hsg.db.settings import ConnectionSettings

    cfg = server.ServerConfig(home=BENCH_HOME, bolt_port=BENCH_BOLT, http_port=BENCH_HTTP,
                              heap="2g", pagecache="1g")  # fmt: skip
    encoder, sae = _bench_pair(work)

    def fresh(restart: bool):
        if restart:
            server.stop(cfg, log=lambda m: None)
            server.start(cfg, log=lambda m: None)
        settings = ConnectionSettings.from_env(uri=cfg.bolt_uri, home=cfg.home, user="neo4j")
        driver = open_driver(settings)
        wipe(driver, settings.database)
        apply_schema(driver, settings.database)
        return driver, settings

    try:
        return _before_after_rounds(fresh, data, limit, work, encoder, sae, warm_rounds)
    finally:
        server.stop(cfg, log=lambda m: None)  # the cold rounds started it


def _before_after_rounds(fresh, data, limit, work, encoder, sae, warm_rounds) -> dict:
    rows: dict[str, list[dict]] = {"cold": [], "warm": [], "rerun": []}
    for mode in ("before", "after"):
        driver, settings = fresh(restart=True)
        rows["cold"].append(_ingest_once(driver, settings, data, limit, work, encoder, sae, mode))
        driver.close()
    driver, settings = fresh(restart=False)
    for i in range(warm_rounds):
        for mode in ("before", "after") if i % 2 == 0 else ("after", "before"):
            wipe(driver, settings.database)
            apply_schema(driver, settings.database)
            rows["warm"].append(_ingest_once(driver, settings, data, limit, work, encoder, sae,
                                             mode))  # fmt: skip
    for mode in ("before", "after"):  # the graph is full: every window already stored
        rows["rerun"].append(_ingest_once(driver, settings, data, limit, work, encoder, sae, mode))
    driver.close()
    out: dict = {"rows": rows}
    for phase, phase_rows in rows.items():
        med = {}
        for mode in ("before", "after"):
            mine = [r for r in phase_rows if r["mode"] == mode]
            med[mode] = {k: statistics.median(r[k] for r in mine)
                         for k in ("seconds", "sequences_per_s", "relationships_per_s",
                                   "activates_per_s")}  # fmt: skip
            med[mode]["threads"] = mine[0]["threads"]
        med["speedup"] = round(med["before"]["seconds"] / med["after"]["seconds"], 2)
        out[phase] = med
        print(
            f"  {phase:5s}: before {med['before']['sequences_per_s']:7,.0f} seq/s "
            f"{med['before']['relationships_per_s']:8,.0f} rel/s "
            f"({med['before']['threads']} threads), after "
            f"{med['after']['sequences_per_s']:7,.0f} seq/s "
            f"{med['after']['relationships_per_s']:8,.0f} rel/s "
            f"({med['after']['threads']} threads): {med['speedup']:.2f}×"
        )
    return out


def writer_variants() -> dict[str, tuple[str, bool]]:
    """The writer as it is and without each of the two things issue #17 added to every
    transaction: (WRITE_ACTIVATIONS text, whether the dictionary is proved first)."""
    from hsg.graph import statements as q

    with_pairs = q.WRITE_ACTIVATIONS
    without = "\n".join(line for line in with_pairs.splitlines() if "peak" not in line)
    assert without != with_pairs and "HAS_FEATURE" not in without
    return {
        "as_is": (with_pairs, True),
        "no_has_feature": (without, True),
        "no_proof": (with_pairs, False),
        "neither": (without, False),
    }


def bench_writer_variants(data: Path, limit: int, d_sae: int, rounds: int, size: int) -> dict:
    """What each part of the writer's transaction costs: the writer as it is against the same
    writer without HAS_FEATURE, without the per-transaction dictionary proof, and without
    both (the pre-#17 writer), interleaved in rotating order, the database emptied before
    each, on the shared windows' shape (20 tokens, top-1)."""
    from hsg.graph import statements as q

    variants = writer_variants()
    original_statement, original_check = q.WRITE_ACTIVATIONS, GraphWriter._check_dictionary
    writes = synthetic_writes(islice(read_records(data), limit), d_sae, 20)
    rels = sum(len(w.activations) for w in writes)
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    with bench_database() as (driver, settings):
        for i in range(rounds + 1):  # round 0 warms the server up and is not counted
            order = names[i % len(names) :] + names[: i % len(names)]
            for name in order:
                statement, prove = variants[name]
                wipe(driver, settings.database)
                apply_schema(driver, settings.database)
                q.WRITE_ACTIVATIONS = statement
                if not prove:
                    GraphWriter._check_dictionary = lambda self, tx: None
                try:
                    writer = GraphWriter(driver, settings.database, "bench/sae", "ab")
                    writer.register({"id": "bench"}, {"id": "bench/sae", "layer": 1}, d_sae,
                                    {"id": "ab"})  # fmt: skip
                    start = time.perf_counter()
                    for j in range(0, len(writes), size):
                        writer.write_batch(writes[j : j + size])
                    seconds = time.perf_counter() - start
                finally:
                    q.WRITE_ACTIVATIONS = original_statement
                    GraphWriter._check_dictionary = original_check
                if i:
                    times[name].append(seconds)
                    print(f"  round {i} {name:15s} {rels / seconds:10,.0f} ACTIVATES/s")
    out: dict = {"activates": rels, "rounds": rounds, "sequences_per_tx": size}
    for name in names:
        median = statistics.median(times[name])
        out[name] = {"seconds": round(median, 2), "activates_per_s": round(rels / median)}
    for name in names[1:]:
        out[name]["as_is_time_ratio"] = round(out["as_is"]["seconds"] / out[name]["seconds"], 2)
    print("  medians: " + ", ".join(f"{n} {out[n]['activates_per_s']:,}/s" for n in names))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None, help="Sequences to use (default all).")
    parser.add_argument("--d-sae", type=int, default=256)
    parser.add_argument("--batch-sizes", default="256,1024,4096")
    parser.add_argument("--out", type=Path, default=None, help="Write results as JSON here.")
    parser.add_argument(
        "--before-after",
        action="store_true",
        help="only compare ingest before/after issue #17, cold and warm",
    )
    parser.add_argument("--warm-rounds", type=int, default=2)
    parser.add_argument(
        "--writer-variants",
        action="store_true",
        help="only measure what HAS_FEATURE and the dictionary proof each cost the writer "
        "(rounds: 2 × --warm-rounds; sequences per transaction: the first --batch-sizes)",
    )
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"data not found: {args.data} (pass --data)")
    if args.writer_variants:
        limit = args.limit or sum(1 for _ in read_records(args.data))
        size = int(args.batch_sizes.split(",")[0])
        report = bench_writer_variants(args.data, limit, args.d_sae, 2 * args.warm_rounds, size)
        print(json.dumps(report, indent=2))
        if args.out:
            args.out.write_text(json.dumps(report, indent=2))
        return
    if args.before_after:
        limit = args.limit or sum(1 for _ in read_records(args.data))
        print(f"{limit} windows from {args.data}, {available_cores()} cores")
        with tempfile.TemporaryDirectory() as tmp:
            report = bench_before_after(args.data, limit, Path(tmp), args.warm_rounds)
        report["sequences"], report["cores"] = limit, available_cores()
        if args.out:
            args.out.write_text(json.dumps(report, indent=2))
        print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=2))
        return
    torch.set_num_threads(max(1, (psutil.cpu_count() or 2) - 1))
    limit = args.limit or sum(1 for _ in read_records(args.data))
    report: dict = {"sequences": limit, "machine": {"cpus": psutil.cpu_count()}}
    print(f"{limit} windows from {args.data}")
    with tempfile.TemporaryDirectory() as tmp, bench_database() as (driver, settings):
        work = Path(tmp)
        # end to end first, while nothing else is held in memory, so peak RSS is the pipeline's
        report["end_to_end"] = bench_end_to_end(driver, settings, args.data, limit, work)
        tokens = 20  # a 100 bp window: 16 six-mers + 4 single-nucleotide tail tokens
        writes = synthetic_writes(islice(read_records(args.data), limit), args.d_sae, tokens)
        report["baseline"] = bench_networkx(writes, work)
        sizes = [int(s) for s in args.batch_sizes.split(",")]
        report["writer"] = bench_writer(driver, settings, writes, args.d_sae, sizes)
        best = max(report["writer"], key=lambda r: r["activates_per_s"])
        ratio = best["activates_per_s"] / report["baseline"]["edges_per_s"]
        report["writer_vs_baseline"] = round(ratio, 2)
        print(
            f"  best writer / networkx baseline: {ratio:.2f}x "
            f"(at {best['sequences_per_tx']} sequences per transaction)"
        )
    report["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
