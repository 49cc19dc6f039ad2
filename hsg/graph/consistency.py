"""Read-only checks that a graph is what the writer promises (`hsg db check`).

Each check counts the offenders of one invariant and names a few; all of them must be zero
on a graph written only by hsg with its schema applied. Label and property names below are
constants of this module (never user input), so they are part of the query text; the
node-label prefixes travel as parameters like everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import neo4j

from hsg.graph.node_labels import LABEL_PREFIX, SAE_PREFIX

# (label, key property) of every node kind the writer MERGEs
KEYS: tuple[tuple[str, str], ...] = (
    ("Sequence", "id"),
    ("Feature", "id"),
    ("Label", "name"),
    ("Annotation", "id"),
    ("SAE", "id"),
    ("Model", "id"),
    ("IngestRun", "id"),
)

_DUPLICATES = """
MATCH (n:{label}) WHERE n.{key} IS NOT NULL
WITH n.{key} AS key, count(*) AS copies WHERE copies > 1
RETURN count(key) AS count, collect(toString(key))[..5] AS examples
"""

CHECKS: dict[str, tuple[str, str]] = {
    "feature_index_duplicates": (
        "two Feature nodes share one (SAE, index): activations by index are ambiguous",
        """
        MATCH (f:Feature) WHERE f.sae IS NOT NULL
        WITH f.sae AS sae, f.index AS index, count(*) AS copies WHERE copies > 1
        RETURN count(*) AS count, collect(sae + '/' + toString(index))[..5] AS examples
        """,
    ),
    "incomplete_dictionaries": (
        "an SAE whose Feature nodes are not exactly its d_sae latents",
        """
        MATCH (x:SAE)
        WITH x, COUNT { (:Feature)-[:IN_SAE]->(x) } AS n
        WHERE x.d_sae IS NOT NULL AND n <> x.d_sae
        RETURN count(x) AS count,
               collect(x.id + ' (' + toString(n) + ' of ' + toString(x.d_sae) + ')')[..5]
               AS examples
        """,
    ),
    "features_outside_an_sae": (
        "a Feature with no IN_SAE relationship to the SAE it names",
        """
        MATCH (f:Feature) WHERE NOT EXISTS { (f)-[:IN_SAE]->(:SAE {id: f.sae}) }
        RETURN count(f) AS count, collect(f.id)[..5] AS examples
        """,
    ),
    "sequences_encoded_twice": (
        "a Sequence with more than one ENCODED_BY mark for one SAE (doubled activations)",
        """
        MATCH (s:Sequence)-[e:ENCODED_BY]->(x:SAE)
        WITH s, x, count(e) AS marks WHERE marks > 1
        RETURN count(*) AS count, collect(s.id + ' @ ' + x.id)[..5] AS examples
        """,
    ),
    "activations_outside_their_sae": (
        "an ACTIVATES to a feature of an SAE the sequence is not ENCODED_BY",
        """
        MATCH (s:Sequence)-[:ACTIVATES]->(f:Feature)
        WHERE NOT EXISTS { (s)-[:ENCODED_BY]->(:SAE {id: f.sae}) }
        RETURN count(*) AS count, collect(DISTINCT s.id + ' -> ' + f.id)[..5] AS examples
        """,
    ),
    "incomplete_sequences": (
        "a Sequence whose activations for an SAE differ from what its ENCODED_BY announces",
        """
        MATCH (s:Sequence)-[e:ENCODED_BY]->(x:SAE)
        WHERE COUNT { (s)-[:ACTIVATES]->(:Feature {sae: x.id}) } <> e.activations
        RETURN count(*) AS count, collect(s.id + ' @ ' + x.id)[..5] AS examples
        """,
    ),
    "has_feature_disagrees": (
        "a (sequence, feature) pair whose HAS_FEATURE {count, sum, max} is missing, doubled or "
        "differs from its ACTIVATES (graphs ingested before HAS_FEATURE: run `hsg db init`)",
        """
        MATCH (s:Sequence) WHERE EXISTS { (s)-[:ACTIVATES]->() }
        CALL (s) {
          MATCH (s)-[a:ACTIVATES]->(f:Feature)
          WITH f, count(a) AS n, sum(a.activation) AS total, max(a.activation) AS peak
          CALL (s, f) { OPTIONAL MATCH (s)-[h:HAS_FEATURE]->(f) RETURN collect(h) AS hs }
          WITH f, n, total, peak, hs
          WHERE size(hs) <> 1
             OR coalesce(hs[0].count <> n OR hs[0].max <> peak
                         OR abs(hs[0].sum - total) > 1e-9 * (1.0 + abs(total)), true)
          RETURN f
        }
        RETURN count(*) AS count, collect(s.id + ' -> ' + f.id)[..5] AS examples
        """,
    ),
    "has_feature_without_activations": (
        "a HAS_FEATURE for a (sequence, feature) pair that has no ACTIVATES",
        """
        MATCH (s:Sequence)-[:HAS_FEATURE]->(f:Feature)
        WHERE NOT EXISTS { (s)-[:ACTIVATES]->(f) }
        RETURN count(*) AS count, collect(s.id + ' -> ' + f.id)[..5] AS examples
        """,
    ),
    "node_labels_disagree": (
        "a Sequence whose Label_<name> node labels differ from its HAS_LABEL, or a Feature "
        "without its SAE_<id> label (run `hsg db init`)",
        """
        CALL () {
          MATCH (s:Sequence)
          WHERE EXISTS { (s)-[:HAS_LABEL]->(l:Label)
                         WHERE NOT ($label_prefix + l.name) IN labels(s) }
             OR any(t IN labels(s) WHERE t STARTS WITH $label_prefix AND NOT EXISTS {
                  (s)-[:HAS_LABEL]->(:Label {name: substring(t, size($label_prefix))}) })
          RETURN s.id AS id
          UNION ALL
          MATCH (f:Feature) WHERE f.sae IS NOT NULL AND NOT ($sae_prefix + f.sae) IN labels(f)
          RETURN f.id AS id
        }
        RETURN count(id) AS count, collect(id)[..5] AS examples
        """,
    ),
    "runs_left_running": (
        "an IngestRun still marked running (killed, or running now)",
        """
        MATCH (r:IngestRun {status: 'running'})
        RETURN count(r) AS count, collect(r.id + ' (' + coalesce(r.input, '?') + ')')[..5]
               AS examples
        """,
    ),
}


@dataclass
class Finding:
    name: str
    description: str
    count: int
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.count == 0


def check_graph(driver: neo4j.Driver, database: str) -> list[Finding]:
    """Every check, in order; duplicates of each node key first."""
    findings = []
    for label, key in KEYS:
        text = _DUPLICATES.format(label=label, key=key)
        findings.append(
            _run(
                driver,
                database,
                f"duplicate_{label.lower()}_{key}",
                f"two {label} nodes share one {key}",
                text,
            )  # fmt: skip
        )
    for name, (description, text) in CHECKS.items():
        findings.append(_run(driver, database, name, description, text))
    return findings


def _run(driver: neo4j.Driver, database: str, name: str, description: str, text: str) -> Finding:
    row = driver.execute_query(
        text,
        label_prefix=LABEL_PREFIX,
        sae_prefix=SAE_PREFIX,
        database_=database,
        routing_=neo4j.RoutingControl.READ,
    )
    record = row.records[0]
    return Finding(name, description, int(record["count"]), list(record["examples"]))
