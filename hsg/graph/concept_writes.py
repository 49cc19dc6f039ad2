"""Reads of the activations concept evaluation needs, and writes of its results.

    (:Feature)-[:DETECTS {f1, precision, recall, threshold, threshold_fraction, select_f1,
                          tp, support, split, sae, run, computed}]->(:Annotation)
    (:Feature)-[:RESEMBLES {pvalue, qvalue, offset, orientation, rank, release, sae, run,
                            computed}]->(:Annotation {id: 'jaspar:<matrix id>'})

A concept is an annotation *name* (all ``enhancer`` elements, every CTCF site). When the name
belongs to one node (a JASPAR matrix, ``g4``) DETECTS points at that node; when it belongs
to many (RefSeq elements are one node per element) it points at one concept node
``concept:<kind>:<name>`` (kind ``concept``), MERGEd here. RESEMBLES points at the node JASPAR
scan hits use (`hsg.regions.motifs`, kind ``jaspar_motif``), so a feature's motif match and
the sequences carrying that motif meet in one node.

Both are *replaced* per run in one transaction, like CENTRALITY: DETECTS of the SAE, and
RESEMBLES of the features a motif run analysed. A failed run leaves the previous results.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import neo4j

CONCEPT_KIND = "concept"

# ------------------------------------------------------------------------------ reads

SAES = """
MATCH (x:SAE) RETURN x.id AS id ORDER BY id
"""

FEATURE_IDS = """
MATCH (f:Feature {sae: $sae}) RETURN f.index AS index, f.id AS id ORDER BY index
"""

ENCODED_SEQUENCES = """
MATCH (s:Sequence)-[:ENCODED_BY]->(:SAE {id: $sae})
RETURN s.id AS id, s.sequence AS sequence, s.chrom AS chrom, s.start AS start, s.end AS end,
       s.strand AS strand
ORDER BY id
"""

ACTIVATIONS = """
UNWIND $ids AS sid
MATCH (s:Sequence {id: sid})-[a:ACTIVATES]->(f:Feature {sae: $sae})
RETURN s.id AS id, a.position AS position, f.index AS feature, a.activation AS activation
"""

ANNOTATIONS = """
UNWIND $ids AS sid
MATCH (s:Sequence {id: sid})-[r:OVERLAPS|HAS_MOTIF]->(a:Annotation)
RETURN s.id AS id, a.id AS annotation, a.kind AS kind, a.name AS name, a.source AS source,
       r.start AS start, r.end AS end
"""


def list_saes(driver: neo4j.Driver, database: str) -> list[str]:
    return [r["id"] for r in driver.execute_query(SAES, database_=database).records]


def feature_ids(driver: neo4j.Driver, database: str, sae: str) -> list[str]:
    """The SAE's feature ids by index (index i at list position i)."""
    records = driver.execute_query(FEATURE_IDS, sae=sae, database_=database).records
    ids = [r["id"] for r in records]
    if [r["index"] for r in records] != list(range(len(ids))):
        raise ValueError(f"SAE {sae!r}: its features are not exactly indices 0..{len(ids) - 1}")
    return ids


def encoded_sequences(driver: neo4j.Driver, database: str, sae: str) -> list[dict[str, Any]]:
    """`{id, sequence, chrom, start, end, strand}` of every sequence the SAE encoded."""
    records = driver.execute_query(ENCODED_SEQUENCES, sae=sae, database_=database).records
    return [dict(r) for r in records]


def _batched(
    driver: neo4j.Driver, database: str, statement: str, ids: Sequence[str], batch: int, **params
) -> Iterator[dict[str, Any]]:
    for i in range(0, len(ids), batch):
        records = driver.execute_query(
            statement, ids=list(ids[i : i + batch]), database_=database, **params
        ).records
        for r in records:
            yield dict(r)


def activation_rows(
    driver: neo4j.Driver, database: str, sae: str, ids: Sequence[str], batch: int = 2000
) -> Iterator[dict[str, Any]]:
    """``{id, position, feature, activation}`` of the SAE's ACTIVATES from these sequences."""
    return _batched(driver, database, ACTIVATIONS, ids, batch, sae=sae)


def annotation_rows(
    driver: neo4j.Driver, database: str, ids: Sequence[str], batch: int = 2000
) -> Iterator[dict[str, Any]]:
    """``{id, annotation, kind, name, source, start, end}`` of these sequences' annotations."""
    return _batched(driver, database, ANNOTATIONS, ids, batch)


# ----------------------------------------------------------------------------- DETECTS

DELETE_DETECTS = """
MATCH (:Feature {sae: $sae})-[r:DETECTS]->(:Annotation)
DELETE r
"""

# Concept nodes (many elements under one name) are MERGEd; existing annotation nodes are
# only MATCHed. A row whose feature is not in the SAE's dictionary writes nothing.
CREATE_DETECTS = """
UNWIND $rows AS row
MATCH (f:Feature {id: row.feature, sae: $sae})
CALL (row) {
  WITH row WHERE row.concept_node
  MERGE (c:Annotation {id: row.annotation_id})
  ON CREATE SET c.kind = $concept_kind, c.name = row.name, c.source = row.kind
  RETURN c AS a
  UNION
  WITH row WHERE NOT row.concept_node
  MATCH (a:Annotation {id: row.annotation_id})
  RETURN a
}
CREATE (f)-[r:DETECTS]->(a)
SET r = row.props, r.sae = $sae, r.run = $run, r.computed = $computed
RETURN count(r) AS created
"""


def replace_detects(
    driver: neo4j.Driver,
    database: str,
    sae: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    run: str,
    batch: int = 2000,
) -> int:
    """Replace every DETECTS of `sae` by `rows` in one transaction; returns those created.

    A row is ``{feature, annotation_id, name, kind, concept_node: bool, props: {…}}``.
    """
    from hsg.db.schema import ensure_schema

    ensure_schema(driver, database)  # concept nodes are MERGEd: their key must be unique
    computed = datetime.now(timezone.utc).isoformat()
    rows = [dict(r) for r in rows]

    def work(tx: neo4j.ManagedTransaction) -> int:
        tx.run(DELETE_DETECTS, sae=sae).consume()
        created = 0
        for i in range(0, len(rows), batch):
            record = tx.run(
                CREATE_DETECTS,
                rows=rows[i : i + batch],
                sae=sae,
                run=run,
                computed=computed,
                concept_kind=CONCEPT_KIND,
            ).single(strict=True)
            created += record["created"]
        return created

    with driver.session(database=database) as session:
        return session.execute_write(work)


# --------------------------------------------------------------------------- RESEMBLES

DELETE_RESEMBLES = """
UNWIND $features AS fid
MATCH (:Feature {id: fid, sae: $sae})-[r:RESEMBLES]->(:Annotation)
DELETE r
"""

# The feature's own motif (consensus, PWM as JSON, seqlets used) is kept on the Feature for
# the atlas; rows with a match create one RESEMBLES each.
SET_FEATURE_MOTIFS = """
UNWIND $motifs AS m
MATCH (f:Feature {id: m.feature, sae: $sae})
SET f.motif_consensus = m.consensus, f.motif_pwm = m.pwm, f.motif_seqlets = m.seqlets
"""

CREATE_RESEMBLES = """
UNWIND $rows AS row
MATCH (f:Feature {id: row.feature, sae: $sae})
MERGE (a:Annotation {id: row.annotation_id})
ON CREATE SET a.kind = $motif_kind, a.name = row.name, a.source = $release
CREATE (f)-[r:RESEMBLES]->(a)
SET r = row.props, r.sae = $sae, r.run = $run, r.release = $release, r.computed = $computed
RETURN count(r) AS created
"""


def replace_resembles(
    driver: neo4j.Driver,
    database: str,
    sae: str,
    features: Sequence[str],
    motifs: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    *,
    run: str,
    release: str,
    motif_kind: str,
    batch: int = 2000,
) -> int:
    """Replace the RESEMBLES of `features` in one transaction; returns those created.

    `motifs` are ``{feature, consensus, pwm (JSON text), seqlets}`` per analysed feature;
    `rows` are ``{feature, annotation_id, name, props: {pvalue, qvalue, offset, orientation,
    rank}}``.
    """
    from hsg.db.schema import ensure_schema

    ensure_schema(driver, database)
    computed = datetime.now(timezone.utc).isoformat()
    rows = [dict(r) for r in rows]

    def work(tx: neo4j.ManagedTransaction) -> int:
        tx.run(DELETE_RESEMBLES, features=list(features), sae=sae).consume()
        tx.run(SET_FEATURE_MOTIFS, motifs=[dict(m) for m in motifs], sae=sae).consume()
        created = 0
        for i in range(0, len(rows), batch):
            record = tx.run(
                CREATE_RESEMBLES,
                rows=rows[i : i + batch],
                sae=sae,
                run=run,
                release=release,
                computed=computed,
                motif_kind=motif_kind,
            ).single(strict=True)
            created += record["created"]
        return created

    with driver.session(database=database) as session:
        return session.execute_write(work)


# ------------------------------------------------------------------------------- atlas

ATLAS_FEATURES = """
MATCH (f:Feature {sae: $sae})
WHERE EXISTS { (f)-[:DETECTS|RESEMBLES|CENTRALITY]->() } OR f.motif_consensus IS NOT NULL
OPTIONAL MATCH (f)-[c:CENTRALITY]->(l:Label)
WITH f, collect({label: l.name, pagerank: c.pagerank_normalized, support: c.support}) AS central
OPTIONAL MATCH (f)-[d:DETECTS]->(a:Annotation)
WITH f, central, d, a ORDER BY d.f1 DESC
WITH f, central, collect({concept: a.name, annotation: a.id, f1: d.f1, precision: d.precision,
                          recall: d.recall, threshold: d.threshold, support: d.support}) AS detects
OPTIONAL MATCH (f)-[m:RESEMBLES]->(j:Annotation)
WITH f, central, detects, m, j ORDER BY m.pvalue ASC
RETURN f.id AS feature, f.index AS index, f.motif_consensus AS consensus, f.motif_pwm AS pwm,
       central, detects,
       collect({motif: j.id, name: j.name, pvalue: m.pvalue, qvalue: m.qvalue,
                orientation: m.orientation}) AS resembles
ORDER BY index
"""

TOP_ACTIVATIONS = """
UNWIND $features AS fid
MATCH (f:Feature {id: fid})
CALL (f) {
  MATCH (s:Sequence)-[a:ACTIVATES]->(f)
  RETURN s, a ORDER BY a.activation DESC, s.id ASC LIMIT $limit
}
RETURN f.id AS feature, s.id AS id, s.sequence AS sequence, a.position AS position,
       a.activation AS activation
"""


def atlas_features(driver: neo4j.Driver, database: str, sae: str) -> list[dict[str, Any]]:
    """Every feature with a concept, a motif or a centrality, with those results."""
    records = driver.execute_query(ATLAS_FEATURES, sae=sae, database_=database).records
    return [dict(r) for r in records]


def top_activations(
    driver: neo4j.Driver, database: str, features: Sequence[str], limit: int
) -> list[dict[str, Any]]:
    """The `limit` strongest token activations of each feature, with the sequence text."""
    records = driver.execute_query(
        TOP_ACTIVATIONS, features=list(features), limit=limit, database_=database
    ).records
    return [dict(r) for r in records]
