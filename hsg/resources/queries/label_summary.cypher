// description: Per label, over every SAE in the graph: the sequences carrying it, their ACTIVATES relationships and the distinct features they activate. What `hsg demo` prints first; `label_composition` gives the same for one SAE.
// params:
MATCH (l:Label)<-[:HAS_LABEL]-(s:Sequence)
OPTIONAL MATCH (s)-[a:ACTIVATES]->(f:Feature)
WITH l, count(DISTINCT s) AS sequences, count(a) AS activations, count(DISTINCT f) AS features
RETURN l.name AS label, sequences, activations, features
ORDER BY label ASC
