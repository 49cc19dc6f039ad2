// description: Per label, over every SAE in the graph: the `limit` features activated by the most of the label's sequences, most sequences first (ties by feature id). Labels whose sequences activate nothing are left out.
// params: limit
MATCH (l:Label)<-[:HAS_LABEL]-(s:Sequence)-[:ACTIVATES]->(f:Feature)
WITH l.name AS label, f.id AS feature, count(DISTINCT s) AS sequences
ORDER BY label ASC, sequences DESC, feature ASC
WITH label, collect({feature: feature, sequences: sequences})[..$limit] AS top
RETURN label, top
ORDER BY label ASC
