"""PageRank through Graph Data Science versus networkx, and the targets query, at 1M ACTIVATES.

    HSG_BENCH_HOME=.hsg/analysis-bench HSG_BENCH_BOLT_PORT=37688 HSG_BENCH_HTTP_PORT=37475 \
        python benchmarks/bench_pagerank.py [--sequences 20000] [--tokens 50] [--features 4096]

A synthetic graph of `sequences × tokens` ACTIVATES relationships (one per token position,
as ingest writes them) over `features` features whose popularity is Zipf-skewed, different
for the labels `up` and `down`; every sequence also carries the label `all`. It is written
with GraphWriter into a throw-away server (benchmarks/_server.py), never the user's graph.

Measured in one run, on the label `all` (every relationship):
  * projection — the label graph as `hsg analyze pagerank` projects it (GDS's native
              projection of the ACTIVATES between the `Label_all` sequences and the `SAE_…`
              features, merged per pair and counted by GDS), against the Cypher aggregation of
              ACTIVATES it replaced and a Cypher projection of HAS_FEATURE, interleaved,
              median of `--repeats`; target ≥ 5× for native over the aggregation;
  * GDS     — what `hsg analyze pagerank` does for one label: the native projection,
              PageRank, support counts, streaming the feature scores back, dropping the
              projection (and the same with the old aggregating projection);
  * networkx — `nx.pagerank` on the same weighted graph (one edge per sequence–feature pair,
              weight = activations) at the same precision, (a) built from rows already in
              Python memory, (b) built from the pairs fetched from Neo4j (the route for a
              graph stored there), (c) as the original study did it: a MultiGraph with one
              edge per activation, networkx's default tolerance;
  * targets — the `differential_centrality` query (up vs down) and the whole
              `compute_targets` call, after `hsg analyze pagerank --label up --label down`.

Target: GDS end to end ≥ 2× networkx including its graph build from rows in memory.

Scale point (≥ 20M ACTIVATES; the graph built by `hsg load --bulk` from a synthetic shard
set, networkx in a child capped at 8 GiB of address space):

    python benchmarks/bench_pagerank.py --sequences 400000 --load bulk --heap 4g \
        --repeats 1 --no-targets --no-from-db --no-multigraph --networkx-memory-gb 8
`--networkx-memory-gb` runs networkx in a child process limited to that much address space,
so that a scale point (≥ 20M ACTIVATES) reports networkx's memory failure instead of
swapping the machine; `--no-targets --no-from-db --no-multigraph` skip the other parts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import bench_config, bench_database  # noqa: E402

from hsg.analysis import AnalysisSession, open_session  # noqa: E402
from hsg.analysis.pagerank import (  # noqa: E402
    PAIRED_SEQUENCES,
    SOURCES,
    PageRankConfig,
    normalized,
    project_label,
    run_pagerank,
    score_projection,
)
from hsg.analysis.targets import TargetsConfig, compute_targets  # noqa: E402
from hsg.graph.writer import GraphWriter, SequenceWrite  # noqa: E402

SAE = "bench/L1/relu-4096-00000000"


def synthetic(sequences: int, tokens: int, features: int, seed: int) -> np.ndarray:
    """Feature index per (sequence, token): Zipf(1.1) popularity, permuted differently for
    the two halves so that the labels have different central features."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, features + 1) ** 1.1
    weights /= weights.sum()
    up_order = rng.permutation(features)
    down_order = up_order.copy()
    down_order[:200] = rng.permutation(down_order[:200])  # the head differs
    out = np.empty((sequences, tokens), dtype=np.int64)
    half = sequences // 2
    out[:half] = up_order[rng.choice(features, size=(half, tokens), p=weights)]
    out[half:] = down_order[rng.choice(features, size=(sequences - half, tokens), p=weights)]
    return out


def write(
    driver, database, acts: np.ndarray, features: int, batch: int, subsets: tuple[int, ...] = ()
) -> float:
    """Every sequence gets `up` or `down` and `all`, and `first<n>` for each n in `subsets`
    with i < n: nested labels of growing size for the scaling comparison."""
    writer = GraphWriter(driver, database, SAE, "bench")
    writer.register({"id": "bench"}, {"id": SAE, "layer": 1, "d_sae": features}, features,
                    {"id": "bench"})  # fmt: skip
    half = len(acts) // 2
    started = time.perf_counter()
    for start in range(0, len(acts), batch):
        items = []
        for i in range(start, min(start + batch, len(acts))):
            rows = [[int(f), p, "ACGTAC", 1.0, 0] for p, f in enumerate(acts[i])]
            label = "up" if i < half else "down"
            items.append(
                SequenceWrite(
                    f"seq{i:06d}",
                    {"length": 6 * len(rows)},
                    [label, "all", *(f"first{n}" for n in subsets if i < n)],
                    rows,
                )
            )
        writer.write_batch(items)
    return time.perf_counter() - started


def write_bulk(
    settings, cfg, acts: np.ndarray, features: int, subsets: tuple[int, ...], work: Path
) -> float:
    """The same graph as `write`, as a shard set (hsg.shards) loaded by `hsg load --bulk`
    (neo4j-admin import): the only way to build a ≥ 20M-ACTIVATES graph here in minutes.
    Timed: CSV generation + import + restart + schema (shard writing is not)."""
    from hsg import api
    from hsg.shards.manifest import Manifest, write_manifest
    from hsg.shards.writer import write_shard

    per_shard = 25_000
    n = len(acts)
    manifest = Manifest(
        model={"id": "bench", "name": "bench"},
        sae={"id": SAE, "layer": 1, "d_sae": features},
        parameters={"input": "synthetic", "top_k": acts.shape[1]},
        shard_size=per_shard,
        shards=(n + per_shard - 1) // per_shard,
        sequences=n,
    )
    directory = work / "shards"
    write_manifest(directory, manifest)
    half = n // 2
    tokens = acts.shape[1]
    for index, start in enumerate(range(0, n, per_shard)):
        stop = min(start + per_shard, n)
        ids = [f"seq{i:06d}" for i in range(start, stop)]
        sequences = [
            {"id": sid, "length": 6 * tokens, "encoded": True,
             "labels": ["up" if i < half else "down", "all",
                        *(f"first{k}" for k in subsets if i < k)]}
            for i, sid in zip(range(start, stop), ids, strict=True)
        ]  # fmt: skip
        block = acts[start:stop]
        activations = {
            "sequence_id": np.repeat(np.array(ids, dtype=object), tokens).tolist(),
            "position": np.tile(np.arange(tokens, dtype=np.int32), stop - start),
            "token": ["ACGTAC"] * block.size,
            "feature": block.ravel().astype(np.int32),
            "activation": np.ones(block.size, dtype=np.float32),
            "rank": np.zeros(block.size, dtype=np.int16),
        }
        write_shard(directory, index, manifest.fingerprint, sequences, activations, [])
    started = time.perf_counter()
    with api.connection_for(settings) as graph:
        summary = api.load_shards(directory, mode="bulk", server=cfg, connection=graph,
                                  overwrite=True, work_dir=work)  # fmt: skip
    seconds = time.perf_counter() - started
    print(f"  bulk load: {summary.relationships_created:,} relationships in {seconds:.1f} s "
          f"(importer {summary.import_seconds:.1f} s)")  # fmt: skip
    return seconds


def bench_projections(
    session: AnalysisSession, config: PageRankConfig, repeats: int, quiet: bool = False
) -> dict:
    """Projection alone (dropped untimed), the three ways interleaved; medians in seconds.
    The first one after a bulk import reads a cold page cache: `--warmup` rounds run the
    same projections untimed first."""
    times: dict[str, list[float]] = {source: [] for source in SOURCES}
    pairs = {}
    for _ in range(repeats):
        for source in SOURCES:
            started = time.perf_counter()
            # as compute_label projects: the native graph unfiltered (isolated nodes kept)
            with project_label(
                session, SAE, "all", config, source=source, exact=source != "native"
            ) as graph:
                times[source].append(time.perf_counter() - started)
                pairs[source] = graph.pairs
    assert len(set(pairs.values())) == 1, pairs
    out = {k: round(statistics.median(v), 3) for k, v in times.items()}
    out["speedup_native"] = round(out["activates"] / out["native"], 2)
    out["speedup_has_feature"] = round(out["activates"] / out["has_feature"], 2)
    if quiet:
        return out
    print(
        f"  projection ({pairs['native']:,} pairs, median of {repeats}): Cypher aggregation of "
        f"ACTIVATES {out['activates']:.2f} s; native by node label {out['native']:.2f} s "
        f"({out['speedup_native']:.1f}×, target ≥ 5×); Cypher over HAS_FEATURE "
        f"{out['has_feature']:.2f} s ({out['speedup_has_feature']:.1f}×)"
    )
    return out


def bench_gds(
    session: AnalysisSession,
    config: PageRankConfig,
    source: str = "native",
    label: str = "all",
    quiet: bool = False,
) -> tuple[float, dict, dict]:
    """What `compute_label` does, timed by phase: projection; PageRank, support counts and
    streaming the feature scores back; dropping the projection."""
    started = time.perf_counter()
    with project_label(session, SAE, label, config, source=source, exact=False) as graph:
        projected = time.perf_counter()
        rows, iterations, converged = score_projection(session, graph, config)
        session.records(PAIRED_SEQUENCES, graph=graph.name)
        scored = time.perf_counter()
    seconds = time.perf_counter() - started
    scores = {s.feature: s.pagerank_normalized for s in normalized(rows)}
    phases = {
        "projection_s": round(projected - started, 2),
        "pagerank_and_stream_s": round(scored - projected, 2),
        "drop_s": round(seconds - (scored - started), 2),
        "iterations": iterations,
    }
    phases["pairs"] = graph.pairs
    if quiet:
        return seconds, scores, phases
    print(
        f"  GDS ({source}): {seconds:7.2f} s  ({graph.pairs:,} pairs; projection "
        f"{phases['projection_s']:.2f} s, PageRank + support + stream "
        f"{phases['pagerank_and_stream_s']:.2f} s; {iterations} iterations, "
        f"converged={converged})"
    )
    return seconds, scores, phases


def _nx_pagerank(graph: nx.Graph, config: PageRankConfig) -> dict:
    """networkx at the precision GDS stops at. GDS stops when no node's unnormalised score
    (mean 1) moves by `tolerance`, i.e. no normalised score by tolerance / N, so the
    normalised vector's L1 change is at most `tolerance`; networkx stops when that L1 change
    is below N × tol, hence tol = tolerance / N."""
    n = graph.number_of_nodes()
    return nx.pagerank(
        graph,
        alpha=config.damping,
        weight="weight",
        max_iter=10 * config.max_iterations,  # stops at convergence; never fail first
        tol=config.tolerance / n,
    )


def _normalised_features(ranks: dict) -> dict:
    features = {k: v for k, v in ranks.items() if k.startswith(SAE)}
    total = sum(features.values())
    return {k: v / total for k, v in features.items()}


def _limited(memory_gb: float, func, *args):
    """func(*args) in a forked child whose address space is capped; returns its result or
    the text of its failure (MemoryError, a kill) instead of taking the machine down."""
    import multiprocessing as mp

    def child(conn):
        import resource

        limit = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            conn.send(("ok", func(*args)))
        except MemoryError:
            conn.send(("failed", f"MemoryError under a {memory_gb:g} GiB address-space limit"))
        except BaseException as exc:  # noqa: BLE001 - reported, not hidden
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))

    ctx = mp.get_context("fork")
    parent, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=child, args=(sender,))
    started = time.perf_counter()
    proc.start()
    sender.close()
    try:
        state, value = parent.recv()
    except EOFError:  # died without a word: a signal (e.g. SIGSEGV from a failed allocation)
        proc.join()
        code = proc.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        state, value = "failed", f"died ({how}) under a {memory_gb:g} GiB address-space limit"
    proc.join()
    if state == "failed":
        value = f"{value} after {time.perf_counter() - started:.1f} s"
        print(f"  networkx: {value}")
        return None, value
    return value, None


def bench_scaling(
    session: AnalysisSession, acts: np.ndarray, config: PageRankConfig, subsets: tuple[int, ...]
) -> list[dict]:
    """GDS end to end (both projections) against networkx incl. its build, on the nested
    labels `first<n>`: where the in-database path starts to win."""
    out = []
    for n in subsets:
        old_s, _, _ = bench_gds(session, config, "activates", f"first{n}", quiet=True)
        new_s, _, phases = bench_gds(session, config, "native", f"first{n}", quiet=True)
        built, ranked, _ = bench_networkx(acts[:n], config, quiet=True)
        row = {
            "sequences": n,
            "activates": int(acts[:n].size),
            "pairs": phases["pairs"],
            "gds_s": round(new_s, 3),
            "gds_activates_s": round(old_s, 3),
            "networkx_s": round(built + ranked, 3),
            "speedup": round((built + ranked) / new_s, 2),
            "speedup_activates_projection": round((built + ranked) / old_s, 2),
        }
        print(
            f"  scaling {row['activates']:>10,} ACTIVATES: GDS {new_s:6.2f} s (old projection "
            f"{old_s:6.2f} s), networkx {built + ranked:6.2f} s → {row['speedup']:.2f}× "
            f"({row['speedup_activates_projection']:.2f}× before)"
        )
        out.append(row)
    return out


def bench_networkx(
    acts: np.ndarray, config: PageRankConfig, quiet: bool = False
) -> tuple[float, float, dict]:
    """Weighted simple graph from rows in Python memory; returns (build s, pagerank s,
    scores)."""
    frame = pd.DataFrame(
        {"seq": np.repeat(np.arange(len(acts)), acts.shape[1]), "feature": acts.ravel()}
    )
    started = time.perf_counter()
    pairs = frame.groupby(["seq", "feature"]).size()
    graph = nx.Graph()
    graph.add_weighted_edges_from(
        (f"seq{s:06d}", f"{SAE}/{f}", float(n)) for (s, f), n in pairs.items()
    )
    built = time.perf_counter() - started
    started = time.perf_counter()
    ranks = _nx_pagerank(graph, config)
    ranked = time.perf_counter() - started
    if not quiet:
        print(
            f"  networkx: {built + ranked:7.2f} s  (build {built:.2f} s, pagerank {ranked:.2f} s)"
        )
    return built, ranked, _normalised_features(ranks)


# networkx's fastest route from the stored graph: the pairs HAS_FEATURE already aggregates
FETCH_PAIRS = """
MATCH (:Label {name: $label})<-[:HAS_LABEL]-(s:Sequence)-[h:HAS_FEATURE]->(f:Feature)
WHERE f.sae = $sae
RETURN s.id AS s, f.id AS f, h.count AS n
"""


def bench_networkx_from_db(session: AnalysisSession, config: PageRankConfig) -> tuple[float, float]:
    """The networkx route for a graph that lives in Neo4j: fetch the pairs over Bolt first."""
    started = time.perf_counter()
    with session.driver.session(database=session.database) as db:
        rows = db.run(FETCH_PAIRS, label="all", sae=SAE).values()
    fetched = time.perf_counter() - started
    graph = nx.Graph()
    graph.add_weighted_edges_from((s, f, float(n)) for s, f, n in rows)
    _nx_pagerank(graph, config)
    total = time.perf_counter() - started
    print(f"  networkx incl. fetch from Neo4j: {total:7.2f} s  (fetch {fetched:.2f} s)")
    return fetched, total


def bench_multigraph(acts: np.ndarray, config: PageRankConfig) -> float:
    """The original study's way: one MultiGraph edge per activation."""
    started = time.perf_counter()
    graph = nx.MultiGraph()
    for i, row in enumerate(acts):
        seq = f"seq{i:06d}"
        graph.add_edges_from((seq, f"{SAE}/{int(f)}") for f in row)
    nx.pagerank(graph, alpha=config.damping, max_iter=100, tol=1e-6)  # networkx defaults
    seconds = time.perf_counter() - started
    print(f"  networkx MultiGraph (original study): {seconds:7.2f} s")
    return seconds


def bench_targets(session: AnalysisSession, repeats: int) -> dict:
    config = TargetsConfig(up="up", down="down", top=50, min_support=3)
    params = {"sae": SAE, "up": "up", "down": "down", "min_support": 3,
              "pseudo_count": config.pseudo_count, "top": 50}  # fmt: skip
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        rows = session.named("differential_centrality", **params)
        times.append(time.perf_counter() - started)
    started = time.perf_counter()
    report = compute_targets(session, SAE, config)
    full = time.perf_counter() - started
    print(
        f"  targets query: first {times[0] * 1000:.0f} ms, median of {repeats} "
        f"{statistics.median(times) * 1000:.0f} ms ({rows[0]['candidates']} candidates); "
        f"compute_targets {full * 1000:.0f} ms"
    )
    assert len(report.targets) == 50
    return {
        "query_first_ms": round(times[0] * 1000, 1),
        "query_median_ms": round(statistics.median(times) * 1000, 1),
        "compute_targets_ms": round(full * 1000, 1),
        "candidates": rows[0]["candidates"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=20_000)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=500, help="sequences per transaction")
    parser.add_argument("--no-multigraph", action="store_true", help="skip the MultiGraph run")
    parser.add_argument("--no-targets", action="store_true", help="skip the targets query")
    parser.add_argument("--no-from-db", action="store_true",
                        help="skip networkx fed from Neo4j")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="projection repeats")
    parser.add_argument("--networkx-memory-gb", type=float,
                        help="run networkx in a child limited to this address space")  # fmt: skip
    parser.add_argument("--subsets", default="",
                        help="comma-separated sequence counts: nested labels for the scaling "
                             "comparison, e.g. 200,1000,5000")  # fmt: skip
    parser.add_argument("--load", choices=["writer", "bulk"], default="writer",
                        help="build the graph with GraphWriter (as hsg ingest) or with "
                             "`hsg load --bulk` from synthetic shards (≥ 20M)")  # fmt: skip
    parser.add_argument("--existing", action="store_true",
                        help="reuse the graph an earlier run of these arguments left")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=0,
                        help="untimed projection rounds first (warm the page cache)")  # fmt: skip
    parser.add_argument("--projection-only", action="store_true",
                        help="stop after the projection comparison")  # fmt: skip
    parser.add_argument("--heap", default="2g", help="the bench server's heap")
    parser.add_argument("--pagecache", default="1g", help="the bench server's page cache")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    acts = synthetic(args.sequences, args.tokens, args.features, args.seed)
    print(f"graph: {args.sequences:,} sequences × {args.tokens} tokens = {acts.size:,} ACTIVATES, "
          f"{args.features} features")  # fmt: skip
    config = PageRankConfig()
    results: dict = {"activates": int(acts.size), "features": args.features}
    with bench_database(heap=args.heap, pagecache=args.pagecache, keep=args.existing) as (
        driver,
        settings,
    ):
        subsets = tuple(int(n) for n in args.subsets.split(",") if n)
        if args.existing:  # the graph an earlier run of the same arguments wrote
            found = driver.execute_query("MATCH ()-[a:ACTIVATES]->() RETURN count(a) AS n").records[
                0
            ]["n"]
            if found != acts.size:
                sys.exit(f"--existing: the bench database holds {found} ACTIVATES, not "
                         f"{acts.size}; run once without --existing")  # fmt: skip
            seconds = float("nan")
        elif args.load == "bulk":
            with tempfile.TemporaryDirectory(prefix="bench-pagerank-") as work:
                cfg = bench_config(args.heap, args.pagecache)
                seconds = write_bulk(settings, cfg, acts, args.features, subsets, Path(work))
        else:
            seconds = write(driver, settings.database, acts, args.features, args.batch, subsets)
        results["write_s"] = round(seconds, 2)
        results["load"] = args.load
        print(f"  written ({args.load}) in {results['write_s']:.1f} s")
        with open_session(settings) as session:
            if not args.no_targets:
                started = time.perf_counter()
                run_pagerank(session, SAE, ["up", "down"], config)
                results["pagerank_up_down_s"] = round(time.perf_counter() - started, 2)
                print(f"  hsg analyze pagerank up+down: {results['pagerank_up_down_s']:.2f} s")
            if args.warmup:
                bench_projections(session, config, args.warmup, quiet=True)
            results["projection"] = bench_projections(session, config, args.repeats)
            if args.projection_only:
                print(json.dumps(results, indent=2))
                return
            old_s, old_scores, results["gds_activates_phases"] = bench_gds(
                session, config, source="activates"
            )
            gds_s, gds_scores, results["gds_phases"] = bench_gds(session, config)
            if not args.no_targets:
                results["targets"] = bench_targets(session, repeats=5)
            if subsets:
                results["scaling"] = bench_scaling(session, acts, config, subsets)
            if not args.no_from_db:
                fetched, from_db = bench_networkx_from_db(session, config)
                results.update(
                    networkx_from_db_s=round(from_db, 2),
                    networkx_fetch_s=round(fetched, 2),
                    speedup_from_db=round(from_db / gds_s, 2),
                )
    assert max(abs(gds_scores[k] - old_scores[k]) for k in gds_scores) < 1e-9
    results.update(gds_s=round(gds_s, 2), gds_activates_s=round(old_s, 2))
    if args.networkx_memory_gb:
        nx_result, failure = _limited(args.networkx_memory_gb, bench_networkx, acts, config)
    else:
        nx_result, failure = bench_networkx(acts, config), None
    if nx_result is None:
        results["networkx"] = failure
        print(f"  GDS completed in {gds_s:.2f} s; networkx did not: {failure}")
    else:
        built, ranked, nx_scores = nx_result
        common = sorted(nx_scores)
        rho = spearmanr([gds_scores[k] for k in common], [nx_scores[k] for k in common]).statistic
        results.update(
            networkx_s=round(built + ranked, 2),
            networkx_build_s=round(built, 2),
            networkx_pagerank_s=round(ranked, 2),
            speedup=round((built + ranked) / gds_s, 2),
            speedup_activates_projection=round((built + ranked) / old_s, 2),
            spearman_gds_vs_networkx=round(float(rho), 6),
        )
        print(
            f"  GDS end to end is {results['speedup']:.1f}× faster than networkx incl. its "
            f"graph build (target ≥ 2×; {results['speedup_activates_projection']:.1f}× with "
            f"the old aggregating projection)"
            + (
                f", {results['speedup_from_db']:.1f}× faster than networkx fed from Neo4j"
                if "speedup_from_db" in results
                else ""
            )  # fmt: skip
            + f" (Spearman ρ of feature scores = {rho:.6f})"
        )
    if not args.no_multigraph:
        results["networkx_multigraph_s"] = round(bench_multigraph(acts, config), 2)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
