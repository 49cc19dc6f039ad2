"""Writes of analysis results: CENTRALITY (PageRank per label) and CORRELATES (track baseline).

The analyses compute in their own layers and hand plain rows down to these functions, so
every write statement stays in `hsg.graph` and this module knows nothing of how the numbers
were made. Both kinds of result are *replaced* per run, in one transaction, so a reader never
sees a mixture of old and new scores and a failed run leaves the old ones.

    (:Feature)-[:CENTRALITY {sae, label, pagerank, pagerank_normalized, support, activations,
                             …run parameters}]->(:Label)
    (:Feature)-[:CORRELATES {pearson, ncc, lag, layer, rank, rank_by, max_lag, tokens,
                             computed}]->(:Annotation {kind: 'track'})

Neither ever creates a Feature: a feature is written once, with its `IN_SAE` link, when its
SAE is registered by an ingest (`statements.MERGE_FEATURES`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import neo4j

# ------------------------------------------------------------------------- centrality

DELETE_CENTRALITY = """
MATCH (l:Label)<-[c:CENTRALITY]-(:Feature)
WHERE l.name IN $labels AND c.sae = $sae
DELETE c
"""

# `sae` and `label` are set last: the replacement above finds old scores by them, so the
# caller's `common` map cannot override them.
CREATE_CENTRALITY = """
MATCH (l:Label {name: $label})
UNWIND $rows AS row
MATCH (f:Feature {id: row.feature})
CREATE (f)-[c:CENTRALITY]->(l)
SET c = $common, c += row.scores, c.sae = $sae, c.label = $label
"""


@dataclass(frozen=True)
class LabelCentrality:
    """One label's scores, as plain rows.

    `common` holds the properties shared by every relationship of the label (run id,
    parameters, iterations …); `rows` are ``{"feature": <feature id>, "scores": {name:
    value}}``, one per feature the label activates.
    """

    label: str
    common: dict[str, Any]
    rows: list[dict[str, Any]]


def replace_centrality(
    tx: neo4j.ManagedTransaction, sae: str, labels: Sequence[LabelCentrality]
) -> int:
    """Replace the CENTRALITY relationships of `sae` for these labels inside `tx`.

    Run it in one transaction for all labels of a run (e.g. ``session.execute_write(lambda
    tx: replace_centrality(tx, sae, labels))``). Returns the relationships created.
    """
    names = [entry.label for entry in labels]
    tx.run(DELETE_CENTRALITY, labels=names, sae=sae).consume()
    created = 0
    for entry in labels:
        summary = tx.run(
            CREATE_CENTRALITY, label=entry.label, rows=entry.rows, common=entry.common, sae=sae
        ).consume()
        created += summary.counters.relationships_created
    return created


# ------------------------------------------------------------------------ correlations

# Re-running replaces the SAE's CORRELATES to these tracks, so a smaller --top or new scores
# never leave stale relationships behind. Features are found by their `sae` property, so
# relationships from stray features (no IN_SAE) written by older versions are removed too.
DELETE_CORRELATES = """
UNWIND $annotation_ids AS aid
MATCH (f:Feature {sae: $sae})-[r:CORRELATES]->(:Annotation {id: aid})
DELETE r
"""

# A row links only a feature that exists in its SAE's dictionary; other rows are counted
# and named (a few), never created: a Feature without IN_SAE would be invisible to every
# per-SAE query.
MERGE_CORRELATES = """
UNWIND $rows AS row
OPTIONAL MATCH (f:Feature {id: row.feature_id})-[:IN_SAE]->(:SAE {id: $sae})
CALL (row, f) {
  WITH row, f
  WHERE f IS NOT NULL
  MERGE (a:Annotation {id: row.annotation_id})
  ON CREATE SET a.kind = $kind, a.name = row.track, a.source = $source
  MERGE (f)-[r:CORRELATES]->(a)
  SET r.pearson = row.pearson, r.ncc = row.ncc, r.lag = row.lag, r.layer = row.layer,
      r.rank = row.rank, r.rank_by = $rank_by, r.max_lag = $max_lag, r.tokens = row.tokens,
      r.computed = $computed
}
RETURN count(f) AS linked, count(*) - count(f) AS missing,
       collect(CASE WHEN f IS NULL THEN row.feature_id END)[..$examples] AS missing_features
"""

MISSING_EXAMPLES = 5


@dataclass
class CorrelationWrite:
    """What `write_correlations` did: relationships written, rows skipped because their
    feature is not in the graph under its SAE (with a few of their feature ids)."""

    written: int = 0
    missing: int = 0
    missing_features: list[str] = field(default_factory=list)


def write_correlations(
    driver: neo4j.Driver,
    database: str,
    rows_by_sae: Mapping[str, Sequence[Mapping[str, Any]]],
    annotation_ids: Sequence[str],
    *,
    kind: str,
    source: str,
    rank_by: str,
    max_lag: int,
    batch: int = 1000,
    computed: str | None = None,
) -> CorrelationWrite:
    """Replace (:Feature)-[:CORRELATES]->(:Annotation) of each SAE; one transaction per SAE.

    `rows_by_sae` maps an SAE id to rows ``{feature_id, annotation_id, track, pearson, ncc,
    lag, layer, rank, tokens}``; `annotation_ids` are every scored track's annotation id (the
    relationships to them are replaced, also those no row links again). Track annotations
    are MERGEd with `kind` and `source`. Rows whose feature does not exist in its SAE are
    skipped and counted.
    """
    from hsg.db.schema import ensure_schema

    ensure_schema(driver, database)  # track Annotations are MERGEd: their key must be unique
    computed = computed or datetime.now(timezone.utc).isoformat()
    result = CorrelationWrite()
    for sae, sae_rows in rows_by_sae.items():
        rows = [dict(row) for row in sae_rows]

        def work(tx: neo4j.ManagedTransaction, sae: str = sae, rows: list = rows) -> tuple:
            tx.run(DELETE_CORRELATES, sae=sae, annotation_ids=list(annotation_ids)).consume()
            linked, missing, examples = 0, 0, []
            for i in range(0, len(rows), batch):
                record = tx.run(
                    MERGE_CORRELATES,
                    rows=rows[i : i + batch],
                    sae=sae,
                    kind=kind,
                    source=source,
                    rank_by=rank_by,
                    max_lag=max_lag,
                    computed=computed,
                    examples=MISSING_EXAMPLES,
                ).single(strict=True)
                linked += record["linked"]
                missing += record["missing"]
                examples += record["missing_features"]
            return linked, missing, examples

        with driver.session(database=database) as session:
            linked, missing, examples = session.execute_write(work)
        result.written += linked
        result.missing += missing
        room = MISSING_EXAMPLES - len(result.missing_features)
        result.missing_features += examples[: max(room, 0)]
    return result
