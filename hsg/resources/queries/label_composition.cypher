// description: Per label: sequences carrying it, how many are encoded by the SAE, how many activate at least one of its features, their ACTIVATES relationships and the distinct features they activate.
// params: sae
MATCH (l:Label)
CALL (l) {
  MATCH (l)<-[:HAS_LABEL]-(s:Sequence)
  RETURN count(s) AS sequences,
         count(CASE WHEN EXISTS { (s)-[:ENCODED_BY]->(:SAE {id: $sae}) } THEN 1 END) AS encoded
}
CALL (l) {
  MATCH (l)<-[:HAS_LABEL]-(s:Sequence)-[a:ACTIVATES]->(f:Feature {sae: $sae})
  RETURN count(DISTINCT s) AS active_sequences, count(a) AS activations,
         count(DISTINCT f) AS features
}
RETURN l.name AS label, sequences, encoded, active_sequences, activations, features
ORDER BY label ASC
