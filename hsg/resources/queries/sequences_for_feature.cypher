// description: The sequences that activate one feature, most activations first, with the token positions (in order), tokens and activation values of each.
// params: feature, limit
MATCH (f:Feature {id: $feature})<-[a:ACTIVATES]-(s:Sequence)
WITH s, a
ORDER BY a.position
WITH s, count(a) AS activations, max(a.activation) AS max_activation,
     collect(a.position) AS positions, collect(a.token) AS tokens,
     collect(a.activation) AS values
RETURN s.id AS sequence,
       COLLECT { MATCH (s)-[:HAS_LABEL]->(l:Label) RETURN l.name ORDER BY l.name } AS labels,
       activations, max_activation, positions, tokens, values
ORDER BY activations DESC, max_activation DESC, sequence ASC
LIMIT $limit
