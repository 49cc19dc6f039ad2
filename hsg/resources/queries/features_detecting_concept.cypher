// description: The features that detect one annotation concept (its name, e.g. enhancer or CTCF, or its annotation id), best test-split F1 first, from `hsg concepts`: precision, recall, F1 at the activation threshold chosen on the select split, and the concept's test-split support in tokens.
// params: concept, limit
MATCH (f:Feature)-[d:DETECTS]->(a:Annotation)
WHERE a.name = $concept OR a.id = $concept
RETURN f.id AS feature, f.index AS index, a.name AS concept, a.id AS annotation,
       d.f1 AS f1, d.precision AS precision, d.recall AS recall, d.threshold AS threshold,
       d.support AS support, d.sae AS sae
ORDER BY f1 DESC, feature ASC
LIMIT $limit
