"""Every Cypher statement the ingest writer sends, in one place.

The other writes live beside it in `hsg.graph`: analysis results (CENTRALITY, CORRELATES)
in `analysis_writes`, emptying a database in `maintenance`. Nothing outside `hsg.graph`
writes to the graph.

All of them take parameters; nothing user-supplied is ever spliced into query text. Rows
arrive in batches and are expanded server-side with UNWIND, so one round trip writes
thousands of relationships.

Graph model (see ../shared/DESIGN.md):

    (:Sequence {id, chrom, start, end, strand, length, gc, sequence})
    (:Sequence)-[:HAS_LABEL]->(:Label {name})     -- mirrored by the node label Label_<name>
    (:Sequence)-[:ACTIVATES {position, token, activation, rank}]->(:Feature {id, sae, index})
    (:Sequence)-[:HAS_FEATURE {count, sum, max}]->(:Feature)  -- one per pair, see below
    (:Sequence)-[:OVERLAPS {start, end}]->(:Annotation {id, kind, name, source})
    (:Sequence)-[:HAS_MOTIF {start, end, strand, score}]->(:Annotation)
    (:Sequence)-[:ENCODED_BY {run, activations}]->(:SAE)     -- the per-sequence commit mark
    (:Feature)-[:IN_SAE]->(:SAE)-[:READS {layer}]->(:Model {id: checkpoint hash, name, …})
    (:Feature)  also labelled SAE_<sae id>; see node_labels (GDS's native projection)
    (:IngestRun {id, …parameters})-[:USED]->(:SAE)

`ENCODED_BY` is written in the same transaction as the sequence's activations: a sequence
has all of its activations for an SAE, or none and no mark. That makes re-runs idempotent
and killed runs resumable.
"""

# A Model node is keyed by its checkpoint hash (`id`), not by its name: two checkpoints in
# directories of the same name are two models, and one checkpoint loaded from two paths is
# one. The caller's map carries `id` (= checkpoint_hash) and `name` (the model's own id, e.g.
# its directory name), plus descriptive properties (version, num_layers …).
MERGE_MODEL = """
MERGE (m:Model {id: $model.id})
SET m += $model
"""

MERGE_SAE = """
MATCH (m:Model {id: $model_hash})
MERGE (x:SAE {id: $sae.id})
SET x += $sae
MERGE (x)-[r:READS]->(m)
SET r.layer = $sae.layer
"""

# Features are created up front for the whole dictionary: writes then only MATCH them,
# and a feature that never fires is still visible (with degree 0) to analyses.
MERGE_FEATURES = """
MATCH (x:SAE {id: $sae_id})
UNWIND $indices AS i
MERGE (f:Feature {id: $sae_id + '/' + toString(i)})
ON CREATE SET f.sae = $sae_id, f.index = i
SET f:$($sae_label)
MERGE (f)-[:IN_SAE]->(x)
"""

CREATE_RUN = """
MATCH (x:SAE {id: $sae_id})
MERGE (r:IngestRun {id: $run.id})
SET r += $run
MERGE (r)-[:USED]->(x)
"""

FINISH_RUN = """
MATCH (r:IngestRun {id: $run_id})
SET r += $summary
"""

ENCODED_IDS = """
UNWIND $ids AS id
MATCH (s:Sequence {id: id})-[:ENCODED_BY]->(:SAE {id: $sae_id})
RETURN s.id AS id
"""

# Every sequence this SAE has encoded, read once when a run starts (see
# GraphWriter.encoded_snapshot); LIMIT lets the caller fall back to ENCODED_IDS per batch.
ALL_ENCODED_IDS = """
MATCH (:SAE {id: $sae_id})<-[:ENCODED_BY]-(s:Sequence)
RETURN s.id AS id
LIMIT $limit
"""

MERGE_SEQUENCES = """
UNWIND $rows AS row
MERGE (s:Sequence {id: row.id})
ON CREATE SET s += row.props
WITH s, row
UNWIND row.labels AS name
MERGE (l:Label {name: name})
MERGE (s)-[:HAS_LABEL]->(l)
SET s:$($label_prefix + name)
"""

# Activation rows are [feature index, token position, token, activation, rank]. The SAE's
# features are collected once per batch, ordered by index, so that a row finds its feature
# by list position instead of an index lookup per relationship (about twice as fast). That
# is only correct while the list is exactly the SAE's dictionary, one Feature per index
# 0..d_sae-1: CHECK_DICTIONARY proves it in the same transaction before every write, and
# the writer refuses to write when it does not hold (a duplicate Feature would otherwise
# shift every later activation of the SAE to the wrong feature).
CHECK_DICTIONARY = """
MATCH (x:SAE {id: $sae_id})
CALL (x) {
  MATCH (f:Feature {sae: x.id}) WITH f.index AS i ORDER BY i RETURN collect(i) AS indices
}
RETURN size(indices) AS features,
       size(indices) = $d_sae AND all(k IN range(0, size(indices) - 1) WHERE indices[k] = k)
       AS exact
"""

# The guard (NOT EXISTS) keeps a concurrent or repeated batch from doubling activations; the
# counts returned are of the sequences this transaction marked: a run counts only its own work.
#
# Besides the token-level ACTIVATES, one HAS_FEATURE {count, sum, max} per (sequence, feature)
# pair aggregates them: the number of token positions at which the feature fired, the sum and
# the maximum of its activation there. It is aggregated by the server from the very rows it
# creates ACTIVATES from, in the same statement, so the two can never disagree, and analyses
# that only need the pair (PageRank's projection, support counts) read one relationship per
# pair instead of aggregating the token rows every time. A bulk loader must write both.
WRITE_ACTIVATIONS = """
MATCH (x:SAE {id: $sae_id})
CALL (x) {
  MATCH (f:Feature {sae: x.id}) WITH f ORDER BY f.index RETURN collect(f) AS features
}
UNWIND $rows AS row
MATCH (s:Sequence {id: row.id})
WHERE NOT EXISTS { (s)-[:ENCODED_BY]->(x) }
CREATE (s)-[:ENCODED_BY {run: $run_id, activations: size(row.acts)}]->(x)
WITH s, row, features
CALL (s, row, features) {
  UNWIND row.acts AS a
  WITH s, a, features[a[0]] AS f
  CREATE (s)-[:ACTIVATES {position: a[1], token: a[2], activation: a[3], rank: a[4]}]->(f)
  WITH s, f, count(*) AS n, sum(a[3]) AS total, max(a[3]) AS peak
  CREATE (s)-[:HAS_FEATURE {count: n, sum: total, max: peak}]->(f)
}
RETURN count(s) AS encoded, sum(size(row.acts)) AS activations
"""

MERGE_ANNOTATIONS = """
UNWIND $rows AS row
MERGE (a:Annotation {id: row.id})
ON CREATE SET a += row
"""

# Annotation links are MERGEd on (sequence, annotation, start, end): idempotent on re-runs.
LINK_OVERLAPS = """
UNWIND $rows AS row
MATCH (s:Sequence {id: row.seq})
MATCH (a:Annotation {id: row.ann})
MERGE (s)-[r:OVERLAPS {start: row.props.start, end: row.props.end}]->(a)
SET r += row.props
"""

LINK_MOTIFS = """
UNWIND $rows AS row
MATCH (s:Sequence {id: row.seq})
MATCH (a:Annotation {id: row.ann})
MERGE (s)-[r:HAS_MOTIF {start: row.props.start, end: row.props.end, strand: row.props.strand}]->(a)
SET r += row.props
"""

# How the writer links a sequence to an annotation, by the hit's relationship type
# (`AnnotationHit.relationship`). A new annotation source linking by one of these types
# needs no change here; a new type needs its statement here first.
LINK_STATEMENTS = {
    "OVERLAPS": LINK_OVERLAPS,
    "HAS_MOTIF": LINK_MOTIFS,
}


def link_statement(relationship: str) -> str:
    """The statement that writes `relationship` links; fails clearly on an unknown type."""
    try:
        return LINK_STATEMENTS[relationship]
    except KeyError:
        known = ", ".join(sorted(LINK_STATEMENTS))
        raise ValueError(
            f"no statement writes annotation links of type {relationship!r} (known: {known}); "
            "add one to hsg.graph.statements.LINK_STATEMENTS"
        ) from None


COUNTS = """
CALL () { MATCH (n:Sequence) RETURN count(n) AS sequences }
CALL () { MATCH (n:Feature) RETURN count(n) AS features }
CALL () { MATCH (n:Label) RETURN count(n) AS labels }
CALL () { MATCH (n:Annotation) RETURN count(n) AS annotations }
CALL () { MATCH ()-[r:ACTIVATES]->() RETURN count(r) AS activates }
CALL () { MATCH ()-[r:HAS_FEATURE]->() RETURN count(r) AS has_feature }
CALL () { MATCH ()-[r:HAS_LABEL]->() RETURN count(r) AS has_label }
CALL () { MATCH ()-[r:OVERLAPS]->() RETURN count(r) AS overlaps }
CALL () { MATCH ()-[r:HAS_MOTIF]->() RETURN count(r) AS has_motif }
CALL () { MATCH ()-[r:ENCODED_BY]->() RETURN count(r) AS encoded_by }
RETURN sequences, features, labels, annotations, activates, has_feature, has_label, overlaps,
       has_motif, encoded_by
"""

# Backfill for graphs ingested before HAS_FEATURE existed (`hsg db init` runs it): the
# encoded sequences of some SAE that have activations but no HAS_FEATURE to its features, a
# batch at a time, then their pairs aggregated from the stored ACTIVATES. Only sequences that
# carry ENCODED_BY are touched; the ingest writer never adds activations to those, and the
# property set and removed first takes the sequence's write lock, so the NOT EXISTS re-checked
# after it sees any concurrent write of the same sequence: a pair is never written twice.
SEQUENCES_WITHOUT_HAS_FEATURE = """
MATCH (s:Sequence)-[e:ENCODED_BY]->(x:SAE)
WHERE EXISTS { (s)-[:ACTIVATES]->(:Feature {sae: x.id}) }
  AND NOT EXISTS { (s)-[:HAS_FEATURE]->(:Feature {sae: x.id}) }
RETURN s.id AS id, x.id AS sae
LIMIT $limit
"""

BACKFILL_HAS_FEATURE = """
UNWIND $rows AS row
MATCH (s:Sequence {id: row.id})-[:ENCODED_BY]->(x:SAE {id: row.sae})
SET s.hsg_backfill = true
REMOVE s.hsg_backfill
WITH s, x
WHERE NOT EXISTS { (s)-[:HAS_FEATURE]->(:Feature {sae: x.id}) }
CALL (s, x) {
  MATCH (s)-[a:ACTIVATES]->(f:Feature {sae: x.id})
  WITH f, count(a) AS n, sum(a.activation) AS total, max(a.activation) AS peak
  CREATE (s)-[:HAS_FEATURE {count: n, sum: total, max: peak}]->(f)
}
RETURN count(s) AS sequences
"""

# Backfill of the node labels that mirror HAS_LABEL and Feature.sae (see node_labels) on
# graphs written before the writer set them. Sequences a batch at a time; SET of a label a
# node already has changes nothing, so a concurrent ingest and an interrupted run are safe.
SEQUENCES_WITHOUT_NODE_LABELS = """
MATCH (s:Sequence)-[:HAS_LABEL]->(l:Label)
WHERE NOT ($label_prefix + l.name) IN labels(s)
RETURN DISTINCT s.id AS id
LIMIT $limit
"""

SET_SEQUENCE_NODE_LABELS = """
UNWIND $ids AS id
MATCH (s:Sequence {id: id})-[:HAS_LABEL]->(l:Label)
SET s:$($label_prefix + l.name)
RETURN count(DISTINCT s) AS sequences
"""

SET_FEATURE_NODE_LABELS = """
MATCH (x:SAE)
CALL (x) {
  MATCH (f:Feature {sae: x.id})
  WHERE NOT ($sae_prefix + x.id) IN labels(f)
  SET f:$($sae_prefix + x.id)
  RETURN count(f) AS n
}
RETURN sum(n) AS features
"""
