"""PageRank of SAE features per label, computed by Graph Data Science, stored as CENTRALITY.

For each label, the sequences carrying it and the features of one SAE they activate are
projected into GDS as a bipartite graph with **one relationship per (sequence, feature)
pair**, by GDS's native projection, which selects the label's sequences and the SAE's
features by the node labels `Label_<name>` and `SAE_<id>` the writer adds for it
(`hsg.graph.node_labels`) and reads the store directly: the pair's parallel ACTIVATES merged
and counted by GDS (no property is read), or for the `activation` weight the pair's
HAS_FEATURE {count, sum, max} that the writer stores beside its ACTIVATES. Its `weight` is

* `count` (default): the number of ACTIVATES relationships of the pair, i.e. of token
  positions at which the feature fired. PageRank on this weighted simple graph equals
  PageRank on the ACTIVATES multigraph, because a random walker picks among parallel edges in
  proportion to their number;
* `none`: 1 per pair (presence only);
* `activation`: the sum of the pair's activation values (SAE latents are non-negative).

`undirected` orientation (default) lets the walk alternate between sequences and features,
so a feature is central when it is activated by sequences that activate central features.
In `natural` orientation (sequence → feature) every feature is a dangling node and PageRank
reduces to a damped weighted in-degree; GDS drops the dangling mass rather than spreading it
as networkx does, so only the undirected scores are comparable to `networkx.pagerank`.

Scores are written back as

    (:Feature)-[:CENTRALITY {sae, label, pagerank, pagerank_normalized, support, activations,
                              damping, weight, orientation, max_iterations, tolerance,
                              iterations, converged, computed, run}]->(:Label)

so Browser queries read them with fixed property names whatever the label is called.
`pagerank_normalized` divides each feature's score by the sum over the label's features,
so that labels with graphs of different sizes compare; `support` is the number of the
label's sequences activating the feature and `activations` the number of ACTIVATES rows.
Only features the label activates get a relationship. Re-running replaces the scores of
the SAE and labels given, all labels in one transaction, so a reader never sees a mixture
of old and new scores, and a failed run leaves the old ones.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from hsg.analysis import AnalysisError, AnalysisSession
from hsg.config import JsonConfig
from hsg.graph.analysis_writes import LabelCentrality, replace_centrality
from hsg.graph.node_labels import LABEL_PREFIX, phenotype_node_label, sae_node_label

WEIGHTS = ("count", "none", "activation")
ORIENTATIONS = ("undirected", "natural")

LIST_SAES = "MATCH (x:SAE) RETURN x.id AS id ORDER BY id"

# Per requested label: does it exist, how many sequences carry it, how many of those
# activate at least one feature of the SAE (an empty projection cannot run PageRank).
LABEL_CHECK = """
UNWIND $labels AS name
OPTIONAL MATCH (l:Label {name: name})
CALL (l) {
  OPTIONAL MATCH (l)<-[:HAS_LABEL]-(s:Sequence)
  RETURN count(s) AS sequences,
         count(CASE WHEN EXISTS { (s)-[:ACTIVATES]->(:Feature {sae: $sae}) } THEN 1 END)
           AS active,
         count(CASE WHEN EXISTS { (s)-[:ACTIVATES]->(:Feature {sae: $sae}) }
                     AND NOT EXISTS { (s)-[:HAS_FEATURE]->(:Feature {sae: $sae}) } THEN 1 END)
           AS unaggregated,
         count(CASE WHEN NOT ($label_prefix + l.name) IN labels(s) THEN 1 END) AS untagged
}
RETURN name, l IS NOT NULL AS found, sequences, active, unaggregated, untagged
"""

# Features of the SAE without the SAE_<id> node label the native projection selects by.
UNTAGGED_FEATURES = """
MATCH (f:Feature {sae: $sae}) WHERE NOT $sae_label IN labels(f) RETURN count(f) AS n
"""

KNOWN_LABELS = "MATCH (l:Label) RETURN l.name AS name ORDER BY name"

# The label graph as a GDS Cypher projection over HAS_FEATURE: one row per (sequence, feature)
# pair, already aggregated by the writer (`count` token positions, `sum` of activations), so
# the projection only reads relationships; nothing is grouped at analysis time. The
# relationship type stays ACTIVATES in the projection (it is what the pairs summarise).
PROJECT_LABEL = """
MATCH (:Label {name: $label})<-[:HAS_LABEL]-(s:Sequence)-[h:HAS_FEATURE]->(f:Feature)
WHERE f.sae = $sae
RETURN gds.graph.project($graph, s, f, {
  sourceNodeLabels: 'Sequence',
  targetNodeLabels: 'Feature',
  relationshipType: 'ACTIVATES',
  relationshipProperties: {
    weight: CASE $weight
      WHEN 'count' THEN toFloat(h.count)
      WHEN 'activation' THEN toFloat(h.sum)
      ELSE 1.0 END,
    activations: toFloat(h.count)
  }
}, {undirectedRelationshipTypes: $undirected})
"""

# The projection before HAS_FEATURE existed: ACTIVATES rows aggregated per (sequence,
# feature) pair at analysis time, per sequence. It is no longer used to compute scores; the
# tests and benchmarks/bench_pagerank.py compare PROJECT_LABEL against it (same graph, same
# scores, and how much faster).
_AGGREGATING = """
MATCH (:Label {name: $label})<-[:HAS_LABEL]-(s:Sequence)
CALL (s) {
  MATCH (s)-[a:ACTIVATES]->(f:Feature {sae: $sae})
  RETURN f, count(a) AS n, TOTAL AS total
}
RETURN gds.graph.project($graph, s, f, {
  sourceNodeLabels: 'Sequence',
  targetNodeLabels: 'Feature',
  relationshipType: 'ACTIVATES',
  relationshipProperties: {
    weight: CASE $weight
      WHEN 'count' THEN toFloat(n)
      WHEN 'activation' THEN toFloat(total)
      ELSE 1.0 END,
    activations: toFloat(n)
  }
}, {undirectedRelationshipTypes: $undirected})
"""
PROJECT_LABEL_FROM_ACTIVATES = {
    "count": _AGGREGATING.replace("TOTAL", "0.0"),
    "none": _AGGREGATING.replace("TOTAL", "0.0"),
    "activation": _AGGREGATING.replace("TOTAL", "sum(a.activation)"),
}

# Feature rows of a projection after `score_projection` mutated pagerank/support/activations;
# features without a pair (a native projection holds every feature of the SAE) are left out.
FEATURE_SCORES = """
CALL gds.graph.nodeProperty.stream($graph, 'support', ['Feature'])
YIELD nodeId, propertyValue AS support
WITH nodeId, support WHERE support > 0
WITH nodeId, support, gds.util.asNode(nodeId) AS f
RETURN f.id AS feature, f.index AS index,
       gds.util.nodeProperty($graph, nodeId, 'pagerank') AS pagerank,
       toInteger(support) AS support,
       toInteger(gds.util.nodeProperty($graph, nodeId, 'activations')) AS activations
ORDER BY index
"""

# Sequences of a projection with at least one pair (after `score_projection`).
PAIRED_SEQUENCES = """
CALL gds.graph.nodeProperty.stream($graph, 'support', ['Sequence'])
YIELD propertyValue WHERE propertyValue > 0
RETURN count(*) AS sequences
"""


@dataclass(frozen=True)
class PageRankConfig(JsonConfig):
    """How PageRank runs; stored on every CENTRALITY relationship it produces.

    `max_iterations` defaults to 100, not GDS's 20: on a bipartite graph the power iteration
    oscillates between the two sides and only the damping makes it converge, so the error
    shrinks by about `damping` per iteration (0.85^100 ≈ 1e-7).
    """

    damping: float = 0.85
    weight: str = "count"
    orientation: str = "undirected"
    max_iterations: int = 100
    tolerance: float = 1e-7

    def __post_init__(self) -> None:
        if not 0.0 < self.damping < 1.0:
            raise ValueError(f"damping must be in (0, 1), got {self.damping}")
        if self.weight not in WEIGHTS:
            raise ValueError(f"weight must be one of {WEIGHTS}, got {self.weight!r}")
        if self.orientation not in ORIENTATIONS:
            raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {self.orientation!r}")
        if self.max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {self.max_iterations}")
        if self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")


@dataclass(frozen=True)
class FeatureScore:
    feature: str
    index: int
    pagerank: float
    pagerank_normalized: float
    support: int
    activations: int


@dataclass
class LabelPageRank:
    """One label's graph and its feature scores (sorted by score, highest first)."""

    label: str
    sequences: int
    features: int
    pairs: int
    activations: int
    iterations: int
    converged: bool
    seconds: float
    scores: list[FeatureScore] = field(default_factory=list)

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        data = asdict(self)
        if top is not None:
            data["scores"] = data["scores"][:top]
        return data


@dataclass
class PageRankRun:
    sae: str
    config: PageRankConfig
    run: str
    computed: str
    labels: list[LabelPageRank]

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        return {
            "sae": self.sae,
            "run": self.run,
            "computed": self.computed,
            "parameters": self.config.to_dict(),
            "labels": [label.to_dict(top) for label in self.labels],
        }


@dataclass(frozen=True)
class ProjectedGraph:
    name: str
    node_count: int
    relationship_count: int
    undirected: bool
    handle: Any = field(default=None, compare=False, repr=False)  # the client's Graph object
    # the relationship property PageRank weighs by ("none" ignores it)
    weight_property: str = "weight"

    @property
    def pairs(self) -> int:
        """Distinct (sequence, feature) pairs: GDS counts an undirected relationship twice."""
        return self.relationship_count // 2 if self.undirected else self.relationship_count


# ------------------------------------------------------------------------ validation
def resolve_sae(session: AnalysisSession, sae: str | None) -> str:
    """The SAE asked for, or the only one in the database."""
    known = [r["id"] for r in session.records(LIST_SAES)]
    if sae is None:
        if len(known) == 1:
            return known[0]
        if not known:
            raise AnalysisError("the database holds no SAE: ingest sequences first (hsg ingest)")
        raise AnalysisError(
            "the database holds several SAEs; choose one with --sae: " + ", ".join(known)
        )
    if sae not in known:
        listing = ", ".join(known) if known else "none: ingest sequences first"
        raise AnalysisError(f"no SAE with id {sae!r} (known: {listing})")
    return sae


def check_labels(session: AnalysisSession, sae: str, labels: list[str]) -> dict[str, int]:
    """Fails, before anything is computed, on a label that is unknown or has no sequence
    activating the SAE; returns each label's number of sequences."""
    if not labels:
        raise AnalysisError("give at least one --label")
    if len(set(labels)) != len(labels):
        raise AnalysisError(f"a label is given twice: {labels}")
    rows = session.records(LABEL_CHECK, labels=list(labels), sae=sae, label_prefix=LABEL_PREFIX)
    problems = []
    untagged = session.records(UNTAGGED_FEATURES, sae=sae, sae_label=sae_node_label(sae))[0]["n"]
    if untagged:
        problems.append(
            f"{untagged} features of SAE {sae!r} lack their {sae_node_label(sae)!r} node label "
            "(written by an older hsg); run `hsg db init` once to add it"
        )
    for row in rows:
        if not row["found"]:
            known = [r["name"] for r in session.records(KNOWN_LABELS)]
            problems.append(f"no label named {row['name']!r} (known: {', '.join(known) or 'none'})")
        elif row["sequences"] == 0:
            problems.append(f"label {row['name']!r} has no sequences")
        elif row["active"] == 0:
            problems.append(
                f"label {row['name']!r} has {row['sequences']} sequences but none activates a "
                f"feature of SAE {sae!r}; ingest them with that SAE first"
            )
        elif row["unaggregated"]:
            problems.append(
                f"label {row['name']!r}: {row['unaggregated']} sequences were ingested before "
                "HAS_FEATURE existed; run `hsg db init` once to backfill it"
            )
        elif row["untagged"]:
            problems.append(
                f"label {row['name']!r}: {row['untagged']} sequences lack the node label "
                f"{phenotype_node_label(row['name'])!r} (written by an older hsg); run "
                "`hsg db init` once to add it"
            )
    if problems:
        raise AnalysisError("; ".join(problems))
    return {row["name"]: row["sequences"] for row in rows}


# ------------------------------------------------------------------------ projection
SOURCES = ("native", "has_feature", "activates")


@contextmanager
def project_label(
    session: AnalysisSession,
    sae: str,
    label: str,
    config: PageRankConfig,
    source: str = "native",
    exact: bool = True,
) -> Iterator[ProjectedGraph]:
    """A projection of one label's graph under a unique name, dropped on the way out —
    also when the block raises, so failed runs leave no graphs in the GDS catalog.

    `source` "native" (what scores are computed from) is GDS's native projection of the
    pairs between the label's sequences (node label `Label_<name>`) and the SAE's features
    (`SAE_<id>`), see `hsg.graph.node_labels`: ACTIVATES merged per pair by GDS with their
    count, or HAS_FEATURE for the `activation` weight (its stored sums). It also holds the
    nodes without any such pair, which change no PageRank score; `exact` (what topology
    needs: components, node counts) filters them out in memory, which PageRank skips.
    "has_feature" projects the pairs with a Cypher projection and "activates" by
    aggregating ACTIVATES: the references the tests and the benchmark compare with."""
    name = f"hsg-{uuid.uuid4().hex}"
    undirected = config.orientation == "undirected"
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    failed = False
    names = [name]
    try:
        if source == "native":
            graph = _project_native(session, sae, label, config, name, names, exact)
        else:
            query = (
                PROJECT_LABEL
                if source == "has_feature"
                else PROJECT_LABEL_FROM_ACTIVATES[config.weight]
            )
            handle, result = session.gds.graph.project.cypher(
                query,
                graph=name,
                label=label,
                sae=sae,
                weight=config.weight,
                undirected=["ACTIVATES"] if undirected else [],
            )
            graph = ProjectedGraph(
                name, result.node_count, result.relationship_count, undirected, handle
            )
        yield graph
    except BaseException:
        failed = True
        raise
    finally:
        try:
            for each in names:
                session.gds.graph.drop(each, fail_if_missing=False)
        except Exception:
            if not failed:  # never hide the error that got us here
                raise


def _project_native(
    session: AnalysisSession,
    sae: str,
    label: str,
    config: PageRankConfig,
    name: str,
    names: list[str],
    exact: bool,
) -> ProjectedGraph:
    """Native projection of the label's sequences and the SAE's features; with `exact`,
    then the subgraph of the nodes with at least one pair."""
    gds = session.gds
    undirected = config.orientation == "undirected"
    orientation = "UNDIRECTED" if undirected else "NATURAL"
    if config.weight == "activation":
        # the activation sums are stored on HAS_FEATURE: two property reads per pair
        relationships = {
            "HAS_FEATURE": {
                "type": "HAS_FEATURE",
                "orientation": orientation,
                "properties": {
                    "activations": {"property": "count"},
                    "weight": {"property": "sum"},
                },
            }
        }
        weight_property = "weight"
    else:
        # a pair's count is the number of its parallel ACTIVATES: GDS counts them while it
        # merges them (aggregation SINGLE), reading no property store at all — about twice
        # as fast as reading HAS_FEATURE.count (bench_pagerank.py), with the same weights
        relationships = {
            "ACTIVATES": {
                "type": "ACTIVATES",
                "orientation": orientation,
                "aggregation": "SINGLE",
                "properties": {"activations": {"property": "*", "aggregation": "COUNT"}},
            }
        }
        weight_property = "activations"
    whole = f"{name}-all" if exact else name
    if exact:
        names.append(whole)
    handle, result = gds.graph.project.native(
        whole,
        {
            "Sequence": {"label": phenotype_node_label(label)},
            "Feature": {"label": sae_node_label(sae)},
        },
        relationships,
        log_progress=False,
    )
    if exact:
        gds.degree.mutate(
            handle, mutate_property="pairs", orientation="UNDIRECTED", log_progress=False
        )
        G = handle
        handle, result = gds.graph.filter(G, name, "n.pairs > 0.0", "*", log_progress=False)
        gds.graph.drop(whole, fail_if_missing=False)
    return ProjectedGraph(
        name,
        int(result.node_count),
        int(result.relationship_count),
        undirected,
        handle,
        weight_property=weight_property,
    )


def score_projection(
    session: AnalysisSession, graph: ProjectedGraph, config: PageRankConfig
) -> tuple[list[dict[str, Any]], int, bool]:
    """PageRank, support and activations of every feature of a projection, computed in GDS.

    Support and activations are the feature's degree and weighted degree in the projection
    (one relationship per pair, `activations` = ACTIVATES rows), so they describe exactly
    the graph PageRank saw. Returns (rows of the features with a pair, ordered by index,
    iterations, converged).
    """
    gds = session.gds
    G = graph.handle
    result = gds.page_rank.mutate(
        G,
        mutate_property="pagerank",
        damping_factor=config.damping,
        max_iterations=config.max_iterations,
        tolerance=config.tolerance,
        relationship_weight_property=None if config.weight == "none" else graph.weight_property,
        log_progress=False,
    )
    # a node's pairs, for features and sequences alike: in the natural orientation a
    # feature's relationships point at it and a sequence's away from it
    orientation = "NATURAL" if graph.undirected else "UNDIRECTED"
    gds.degree.mutate(G, mutate_property="support", orientation=orientation, log_progress=False)
    gds.degree.mutate(
        G,
        mutate_property="activations",
        orientation=orientation,
        relationship_weight_property="activations",
        log_progress=False,
    )
    rows = session.records(FEATURE_SCORES, graph=graph.name)
    return rows, int(result.ran_iterations), bool(result.did_converge)


def normalized(rows: list[dict[str, Any]]) -> list[FeatureScore]:
    """Feature scores divided by their sum, highest first (ties by feature index)."""
    total = sum(r["pagerank"] for r in rows)
    scores = [
        FeatureScore(
            feature=r["feature"],
            index=r["index"],
            pagerank=r["pagerank"],
            pagerank_normalized=r["pagerank"] / total if total > 0 else 0.0,
            support=r["support"],
            activations=r["activations"],
        )
        for r in rows
    ]
    scores.sort(key=lambda s: (-s.pagerank_normalized, s.index))
    return scores


def compute_label(
    session: AnalysisSession, sae: str, label: str, config: PageRankConfig
) -> LabelPageRank:
    started = time.perf_counter()
    with project_label(session, sae, label, config, exact=False) as graph:
        rows, iterations, converged = score_projection(session, graph, config)
        sequences = session.records(PAIRED_SEQUENCES, graph=graph.name)[0]["sequences"]
    scores = normalized(rows)
    return LabelPageRank(
        label=label,
        sequences=sequences,
        features=len(scores),
        pairs=graph.pairs,
        activations=sum(s.activations for s in scores),
        iterations=iterations,
        converged=converged,
        seconds=round(time.perf_counter() - started, 3),
        scores=scores,
    )


# ----------------------------------------------------------------------------- write
def centrality_rows(run: PageRankRun) -> list[LabelCentrality]:
    """The run's scores as the plain rows `hsg.graph.analysis_writes` stores."""
    labels = []
    for result in run.labels:
        common = {  # `sae` and `label` are set by the writer
            "run": run.run,
            "computed": run.computed,
            "iterations": result.iterations,
            "converged": result.converged,
            **run.config.to_dict(),
        }
        rows = [
            {
                "feature": s.feature,
                "scores": {
                    "pagerank": s.pagerank,
                    "pagerank_normalized": s.pagerank_normalized,
                    "support": s.support,
                    "activations": s.activations,
                },
            }
            for s in result.scores
        ]
        labels.append(LabelCentrality(result.label, common, rows))
    return labels


def run_pagerank(
    session: AnalysisSession,
    sae: str | None,
    labels: list[str],
    config: PageRankConfig,
    progress: Callable[[str], None] | None = None,
) -> PageRankRun:
    """Validate every label, compute every label, then write all scores at once: a bad label
    or a failure half-way leaves the stored scores as they were."""
    say = progress or (lambda _msg: None)
    sae_id = resolve_sae(session, sae)
    check_labels(session, sae_id, labels)
    run = PageRankRun(
        sae=sae_id,
        config=config,
        run=uuid.uuid4().hex[:12],
        computed=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        labels=[],
    )
    for i, label in enumerate(labels, 1):
        say(f"[{i}/{len(labels)}] {label}: projecting and running PageRank …")
        result = compute_label(session, sae_id, label, config)
        state = "converged" if result.converged else "NOT converged (raise --max-iterations)"
        say(
            f"[{i}/{len(labels)}] {label}: {result.sequences} sequences, {result.features} "
            f"features, {result.pairs} pairs; {result.iterations} iterations, {state}; "
            f"{result.seconds:.2f} s"
        )
        run.labels.append(result)
    rows = centrality_rows(run)
    session.write(lambda tx: replace_centrality(tx, sae_id, rows))
    say(f"wrote CENTRALITY scores for {len(labels)} label(s) of SAE {sae_id}")
    return run
