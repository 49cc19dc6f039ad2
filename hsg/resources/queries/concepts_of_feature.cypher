// description: The annotation concepts one feature detects (from `hsg concepts`), best test-split F1 first, with precision, recall, the activation threshold (chosen on the select split) and the concept's support in test tokens.
// params: feature, limit
MATCH (f:Feature {id: $feature})-[d:DETECTS]->(a:Annotation)
RETURN a.name AS concept, a.id AS annotation, a.kind AS kind, d.f1 AS f1,
       d.precision AS precision, d.recall AS recall, d.threshold AS threshold,
       d.support AS support
ORDER BY f1 DESC, concept ASC
LIMIT $limit
