"""Topology of each label's sequence–feature graph, computed in Graph Data Science.

Per label, on the same projection as PageRank (undirected, one relationship per
(sequence, feature) pair):

* counts: sequences, features, distinct pairs, ACTIVATES relationships;
* density = pairs / (sequences × features). The graph is bipartite — a relationship only
  ever joins a sequence to a feature — so sequences × features is the number of possible
  relationships. The general formula 2E / (N (N − 1)) counts sequence–sequence and
  feature–feature pairs as possible too, and counting ACTIVATES relationships (one per
  token position) instead of distinct pairs counts a pair once per position; either
  misstates the density, the second can push it above 1 (the original study reported a
  density ten times too high). `activations_per_pair` makes the multigraph's factor visible;
* weakly connected components (`gds.wcc`) and the k-core decomposition (`gds.kcore`):
  degeneracy and the number of nodes per core value;
* the fragmentation curve: the features with the highest PageRank are removed
  progressively (`gds.graph.filter` with a score threshold passed as a parameter) and the
  number of components and the density are recorded against the fraction removed. Sequences
  stay in the graph, so a sequence that lost all of its features counts as a component:
  that is the fragmentation. Features tied with the last removed one are removed with it,
  so `removed` can exceed the nominal share; both are recorded.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from hsg.analysis import AnalysisError, AnalysisSession
from hsg.analysis.pagerank import (
    PageRankConfig,
    ProjectedGraph,
    check_labels,
    project_label,
    resolve_sae,
    score_projection,
)

DENSITY_FORMULA = (
    "distinct (sequence, feature) pairs / (sequences x features): the possible "
    "relationships of a bipartite graph; not 2E/(N(N-1)) over all nodes, and not counting "
    "ACTIVATES relationships (one per token position)"
)

# Features with a PageRank below the threshold survive; every sequence does.
FRAGMENT_FILTER = "n:Sequence OR n.pagerank < $threshold"

SAE_FEATURES = "MATCH (x:SAE {id: $sae}) RETURN COUNT { (x)<-[:IN_SAE]-(:Feature) } AS n"

COMPONENTS = """
CALL gds.wcc.stream($graph) YIELD componentId
WITH componentId, count(*) AS size
RETURN size ORDER BY size DESC
"""

KCORE = """
CALL gds.kcore.stream($graph) YIELD coreValue
RETURN coreValue AS k, count(*) AS nodes ORDER BY k
"""

WCC_STATS = """
CALL gds.wcc.stats($graph) YIELD componentCount, componentDistribution
RETURN componentCount AS components, componentDistribution.max AS largest
"""


@dataclass(frozen=True)
class TopologyConfig:
    """The PageRank that orders features for removal, and the removal schedule.

    The projection is always undirected: k-core needs it, and components are weak anyway."""

    pagerank: PageRankConfig = field(default_factory=PageRankConfig)
    max_fraction: float = 0.5
    steps: int = 10

    def __post_init__(self) -> None:
        if self.pagerank.orientation != "undirected":
            raise ValueError("topology runs on the undirected projection")
        if not 0.0 < self.max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in (0, 1], got {self.max_fraction}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    def fractions(self) -> list[float]:
        return [round(self.max_fraction * i / self.steps, 6) for i in range(self.steps + 1)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "pagerank": self.pagerank.to_dict(),
            "max_fraction": self.max_fraction,
            "steps": self.steps,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TopologyConfig:
        names = {f.name for f in fields(cls)} - {"pagerank"}
        return cls(
            pagerank=PageRankConfig.from_dict(data.get("pagerank", {})),
            **{k: v for k, v in data.items() if k in names},
        )


@dataclass(frozen=True)
class FragmentationPoint:
    fraction: float  # nominal share of features removed
    removed: int  # features actually removed (ties with the cut go too)
    features: int
    pairs: int
    components: int
    largest_component: int
    density: float


@dataclass
class LabelTopology:
    label: str
    sequences: int
    features: int
    pairs: int
    activations: int
    density: float
    density_all_features: float  # denominator: every feature of the SAE, dead ones included
    activations_per_pair: float
    components: int
    largest_component: int
    component_sizes: list[int]  # the ten largest
    degeneracy: int
    kcore: dict[str, int]  # core value -> nodes (keys are strings for JSON)
    fragmentation: list[FragmentationPoint]


@dataclass
class TopologyReport:
    sae: str
    config: TopologyConfig
    labels: list[LabelTopology]
    density_formula: str = DENSITY_FORMULA

    def to_dict(self) -> dict[str, Any]:
        return {
            "sae": self.sae,
            "parameters": self.config.to_dict(),
            "density_formula": self.density_formula,
            "labels": [asdict(label) for label in self.labels],
        }


def bipartite_density(pairs: int, sequences: int, features: int) -> float:
    possible = sequences * features
    return pairs / possible if possible else 0.0


def removal_thresholds(scores: list[float], fractions: list[float]) -> list[tuple[float, float]]:
    """(fraction, threshold) for each fraction: features scoring >= threshold go.

    `scores` are the feature scores; the threshold is the score of the last of the
    fraction × n best (rounded half up), infinity when none is removed."""
    ranked = sorted(scores, reverse=True)
    plan = []
    for fraction in fractions:
        k = min(len(ranked), math.floor(fraction * len(ranked) + 0.5))
        plan.append((fraction, ranked[k - 1] if k > 0 else float("inf")))
    return plan


def _fragment(
    session: AnalysisSession, graph: ProjectedGraph, sequences: int, threshold: float
) -> tuple[int, int, int, int]:
    """(features, pairs, components, largest component) of the graph without the features
    scoring >= threshold; the filtered graph lives only inside this call."""
    if threshold == float("inf"):
        stats = session.records(WCC_STATS, graph=graph.name)[0]
        return graph.node_count - sequences, graph.pairs, stats["components"], stats["largest"]
    name = f"hsg-{uuid.uuid4().hex}"
    try:
        _, result = session.gds.graph.filter(
            graph.handle, name, FRAGMENT_FILTER, "*", parameters={"threshold": threshold}
        )
        stats = session.records(WCC_STATS, graph=name)[0]
        return (
            result.node_count - sequences,
            result.relationship_count // 2,
            stats["components"],
            stats["largest"],
        )
    finally:
        session.gds.graph.drop(name, fail_if_missing=False)


def label_topology(
    session: AnalysisSession, sae: str, label: str, config: TopologyConfig, sae_features: int
) -> LabelTopology:
    with project_label(session, sae, label, config.pagerank) as graph:
        rows, _, _ = score_projection(session, graph, config.pagerank)
        features = len(rows)
        sequences = graph.node_count - features
        activations = sum(r["activations"] for r in rows)
        sizes = [r["size"] for r in session.records(COMPONENTS, graph=graph.name)]
        kcore = {str(r["k"]): r["nodes"] for r in session.records(KCORE, graph=graph.name)}
        curve = []
        for fraction, threshold in removal_thresholds(
            [r["pagerank"] for r in rows], config.fractions()
        ):
            left, pairs, components, largest = _fragment(session, graph, sequences, threshold)
            curve.append(
                FragmentationPoint(
                    fraction=fraction,
                    removed=features - left,
                    features=left,
                    pairs=pairs,
                    components=components,
                    largest_component=largest,
                    density=bipartite_density(pairs, sequences, left),
                )
            )
    return LabelTopology(
        label=label,
        sequences=sequences,
        features=features,
        pairs=graph.pairs,
        activations=activations,
        density=bipartite_density(graph.pairs, sequences, features),
        density_all_features=bipartite_density(graph.pairs, sequences, sae_features),
        activations_per_pair=activations / graph.pairs if graph.pairs else 0.0,
        components=len(sizes),
        largest_component=sizes[0] if sizes else 0,
        component_sizes=sizes[:10],
        degeneracy=max((int(k) for k in kcore), default=0),
        kcore=kcore,
        fragmentation=curve,
    )


def run_topology(
    session: AnalysisSession,
    sae: str | None,
    labels: list[str],
    config: TopologyConfig,
    progress: Callable[[str], None] | None = None,
) -> TopologyReport:
    say = progress or (lambda _msg: None)
    sae_id = resolve_sae(session, sae)
    check_labels(session, sae_id, labels)
    rows = session.records(SAE_FEATURES, sae=sae_id)
    if not rows:
        raise AnalysisError(f"no SAE with id {sae_id!r}")
    report = TopologyReport(sae=sae_id, config=config, labels=[])
    for i, label in enumerate(labels, 1):
        say(f"[{i}/{len(labels)}] {label}: components, k-core, fragmentation …")
        result = label_topology(session, sae_id, label, config, rows[0]["n"])
        say(
            f"[{i}/{len(labels)}] {label}: {result.sequences} sequences, {result.features} "
            f"features, density {result.density:.4g}, {result.components} components, "
            f"degeneracy {result.degeneracy}"
        )
        report.labels.append(result)
    return report
