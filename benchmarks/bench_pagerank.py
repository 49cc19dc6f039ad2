"""PageRank through Graph Data Science versus networkx, and the targets query, at 1M ACTIVATES.

    HSG_BENCH_HOME=.hsg/analysis-bench HSG_BENCH_BOLT_PORT=37688 HSG_BENCH_HTTP_PORT=37475 \
        python benchmarks/bench_pagerank.py [--sequences 20000] [--tokens 50] [--features 4096]

A synthetic graph of `sequences × tokens` ACTIVATES relationships (one per token position,
as ingest writes them) over `features` features whose popularity is Zipf-skewed, different
for the labels `up` and `down`; every sequence also carries the label `all`. It is written
with GraphWriter into a throw-away server (benchmarks/_server.py), never the user's graph.

Measured in one run, on the label `all` (every relationship):
  * GDS     — what `hsg analyze pagerank` does for one label: Cypher-aggregation projection
              from the stored graph, PageRank, support counts, streaming the feature scores
              back, dropping the projection;
  * networkx — `nx.pagerank` on the same weighted graph (one edge per sequence–feature pair,
              weight = activations) at the same precision, (a) built from rows already in
              Python memory, (b) built from the pairs fetched from Neo4j (the route for a
              graph stored there), (c) as the original study did it: a MultiGraph with one
              edge per activation, networkx's default tolerance;
  * targets — the `differential_centrality` query (up vs down) and the whole
              `compute_targets` call, after `hsg analyze pagerank --label up --label down`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import bench_database  # noqa: E402

from hsg.analysis import AnalysisSession, open_session  # noqa: E402
from hsg.analysis.pagerank import (  # noqa: E402
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


def write(driver, database, acts: np.ndarray, features: int, batch: int) -> float:
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
                SequenceWrite(f"seq{i:06d}", {"length": 6 * len(rows)}, [label, "all"], rows)
            )
        writer.write_batch(items)
    return time.perf_counter() - started


def bench_gds(session: AnalysisSession, config: PageRankConfig) -> tuple[float, dict, dict]:
    """What `compute_label` does, timed by phase: projection; PageRank, support counts and
    streaming the feature scores back; dropping the projection."""
    started = time.perf_counter()
    with project_label(session, SAE, "all", config) as graph:
        projected = time.perf_counter()
        rows, iterations, converged = score_projection(session, graph, config)
        scored = time.perf_counter()
    seconds = time.perf_counter() - started
    scores = {s.feature: s.pagerank_normalized for s in normalized(rows)}
    phases = {
        "projection_s": round(projected - started, 2),
        "pagerank_and_stream_s": round(scored - projected, 2),
        "drop_s": round(seconds - (scored - started), 2),
        "iterations": iterations,
    }
    print(
        f"  GDS:      {seconds:7.2f} s  ({graph.pairs:,} pairs; projection "
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


def bench_networkx(acts: np.ndarray, config: PageRankConfig) -> tuple[float, float, dict]:
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
    print(f"  networkx: {built + ranked:7.2f} s  (build {built:.2f} s, pagerank {ranked:.2f} s)")
    return built, ranked, _normalised_features(ranks)


FETCH_PAIRS = """
MATCH (:Label {name: $label})<-[:HAS_LABEL]-(s:Sequence)
CALL (s) {
  MATCH (s)-[a:ACTIVATES]->(f:Feature {sae: $sae})
  RETURN f, count(a) AS n
}
RETURN s.id AS s, f.id AS f, n
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
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    acts = synthetic(args.sequences, args.tokens, args.features, args.seed)
    print(f"graph: {args.sequences:,} sequences × {args.tokens} tokens = {acts.size:,} ACTIVATES, "
          f"{args.features} features")  # fmt: skip
    config = PageRankConfig()
    results: dict = {"activates": int(acts.size), "features": args.features}
    with bench_database() as (driver, settings):
        results["write_s"] = round(write(driver, settings.database, acts, args.features,
                                         args.batch), 2)  # fmt: skip
        print(f"  written in {results['write_s']:.1f} s")
        with open_session(settings) as session:
            started = time.perf_counter()
            run_pagerank(session, SAE, ["up", "down"], config)
            results["pagerank_up_down_s"] = round(time.perf_counter() - started, 2)
            print(f"  hsg analyze pagerank up+down: {results['pagerank_up_down_s']:.2f} s")
            gds_s, gds_scores, results["gds_phases"] = bench_gds(session, config)
            results["targets"] = bench_targets(session, repeats=5)
            fetched, from_db = bench_networkx_from_db(session, config)
    built, ranked, nx_scores = bench_networkx(acts, config)
    common = sorted(nx_scores)
    rho = spearmanr([gds_scores[k] for k in common], [nx_scores[k] for k in common]).statistic
    results.update(
        gds_s=round(gds_s, 2),
        networkx_s=round(built + ranked, 2),
        networkx_build_s=round(built, 2),
        networkx_pagerank_s=round(ranked, 2),
        speedup=round((built + ranked) / gds_s, 2),
        networkx_from_db_s=round(from_db, 2),
        networkx_fetch_s=round(fetched, 2),
        speedup_from_db=round(from_db / gds_s, 2),
        spearman_gds_vs_networkx=round(float(rho), 6),
    )
    print(
        f"  GDS is {results['speedup']:.1f}× faster than networkx from memory, "
        f"{results['speedup_from_db']:.1f}× faster than networkx fed from Neo4j "
        f"(Spearman ρ of feature scores = {rho:.6f})"
    )
    if not args.no_multigraph:
        results["networkx_multigraph_s"] = round(bench_multigraph(acts, config), 2)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
